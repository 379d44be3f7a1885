"""Writing outputs all or nothing: to temporary paths beside them, renamed last.

    with staging.Staging(overwrite=False) as stage:
      tmp_dir = stage.directory('/out/model')     # '/out/.model.tmp-xxxx'
      tf.saved_model.save(module, tmp_dir)
      tmp_file = stage.file('/out/model.tflite')
      ...
      stage.commit()      # renames every temporary path to its final path

If anything raises before `commit` (or `commit` itself fails), every
temporary path is removed and no final path is created or changed. The
temporary paths sit beside their final paths (same file system, so the
rename is atomic for files and for a directory replacing an absent or empty
one); a killed process can leave a hidden `.<name>.tmp-*` behind, never a
half-written output.
"""

import os
import shutil
import tempfile
from typing import List, Tuple

from graph_prune import errors


def check_output(path: str, overwrite: bool, flag: str = 'overwrite') -> None:
  """Raises unless `path` may be written.

  Args:
    path: the final output path (file or directory).
    overwrite: whether an existing output may be replaced.
    flag: how the caller asks for overwriting, for the message.

  Raises:
    OutputExistsError: `path` is a non-empty directory or an existing file
      and `overwrite` is False.
  """
  if overwrite or not os.path.lexists(path):
    return
  if os.path.isdir(path) and not os.listdir(path):
    return
  kind = 'directory' if os.path.isdir(path) else 'file'
  raise errors.OutputExistsError(
    f'Output {kind} {path!r} already exists and is not empty; pass '
    f'{flag} to replace it, or choose another path.'
  )


class Staging:
  """Temporary outputs that become final together in `commit`."""

  def __init__(self, overwrite: bool = False, flag: str = 'overwrite'):
    self._overwrite = overwrite
    self._flag = flag
    self._pending: List[Tuple[str, str, bool]] = []  # (tmp, final, is_dir)
    self._committed = False

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if not self._committed:
      self.abort()
    return False

  def directory(self, final: str) -> str:
    """Creates and returns an empty temporary directory for `final`."""
    check_output(final, self._overwrite, self._flag)
    parent, name = _split(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
    self._pending.append((tmp, final, True))
    return tmp

  def file(self, final: str) -> str:
    """Returns a temporary file path (created empty) for `final`."""
    check_output(final, self._overwrite, self._flag)
    if os.path.isdir(final):
      raise errors.OutputExistsError(
        f'Output file {final!r} is a directory; choose a file path.'
      )
    parent, name = _split(final)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.tmp-', dir=parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600)
    self._pending.append((tmp, final, False))
    return tmp

  def commit(self) -> None:
    """Renames every temporary path to its final path."""
    try:
      for _, final, _ in self._pending:
        check_output(final, self._overwrite, self._flag)
      for tmp, final, is_dir in self._pending:
        if is_dir:
          _replace_directory(tmp, final)
        else:
          os.replace(tmp, final)
      self._committed = True
    finally:
      if not self._committed:
        self.abort()

  def abort(self) -> None:
    """Removes every temporary path that is left."""
    for tmp, _, is_dir in self._pending:
      if is_dir:
        shutil.rmtree(tmp, ignore_errors=True)
      elif os.path.lexists(tmp):
        os.remove(tmp)
    self._pending = []


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _split(final: str) -> Tuple[str, str]:
  final = os.path.abspath(final)
  return os.path.dirname(final), os.path.basename(final)


def _replace_directory(tmp: str, final: str) -> None:
  if os.path.isdir(final) and os.listdir(final):
    parent, name = _split(final)
    old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
    os.rename(final, os.path.join(old, name))
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
  elif os.path.lexists(final) and not os.path.isdir(final):
    os.remove(final)
    os.rename(tmp, final)
  else:
    os.rename(tmp, final)  # replaces an empty directory
