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
one); a killed process can leave a hidden `.<name>.tmp-<host>-<pid>-*`
behind, never a half-written output. The host and pid in that name let the
next writer of the same output remove what a dead process of this host left
(`remove_stale`); a live writer's, or another host's, is left alone.
"""

import errno
import glob
import os
import shutil
import socket
import tempfile
from typing import List, Optional, Tuple

from graph_prune import errors


def is_saved_model(path: str) -> bool:
  """Whether `path` is a directory with a SavedModel's graph file."""
  return any(
    os.path.isfile(os.path.join(path, name))
    for name in ('saved_model.pb', 'saved_model.pbtxt')
  )


def is_complete_saved_model(path: str) -> bool:
  """Whether `path` holds every file `tf.saved_model.save` writes.

  `tf.saved_model.save` writes the variables first, then `saved_model.pb`,
  then `fingerprint.pb`: a directory written in place by a process that was
  killed lacks at least the last of them.
  """
  return (
    is_saved_model(path)
    and os.path.isfile(os.path.join(path, 'fingerprint.pb'))
    and os.path.isfile(os.path.join(path, 'variables', 'variables.index'))
  )


_DISK_ERRNOS = {
  errno.ENOSPC: 'no space left on device',
  errno.EDQUOT: 'disk quota exceeded',
  errno.EROFS: 'read-only file system',
  errno.EACCES: 'permission denied',
}


def disk_error_reason(error: BaseException) -> Optional[str]:
  """Why `error` is a failed write to disk (full, read-only...), or None.

  Python's writes raise `OSError` with an errno; TensorFlow's (SavedModel,
  checkpoints) raise an `OpError` whose message holds the system's text.
  """
  if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
    return _DISK_ERRNOS[error.errno]
  message = str(getattr(error, 'message', '')).lower()
  if type(error).__module__.startswith('tensorflow'):
    for reason in _DISK_ERRNOS.values():
      if reason in message:
        return reason
  return None


def _owner_tag() -> str:
  return f'{socket.gethostname()}-{os.getpid()}-'


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def remove_stale(final: str) -> List[str]:
  """Removes the staging paths of `final` that dead processes left.

  Only paths tagged with this host and a pid that no longer runs are
  removed: another host's pids cannot be checked from here.

  Args:
    final: an output path.

  Returns:
    The removed paths.
  """
  parent, name = _split(final)
  host = socket.gethostname()
  removed = []
  for kind in ('tmp', 'old'):
    pattern = os.path.join(glob.escape(parent), f'.{name}.{kind}-*')
    for path in glob.glob(pattern):
      # '<host>-<pid>-<random>'; tempfile's random part has no '-'.
      tag = os.path.basename(path)[len(f'.{name}.{kind}-') :].rsplit('-', 2)
      if len(tag) != 3 or tag[0] != host or not tag[1].isdigit():
        continue  # another host's, or older graph_prune's untagged one
      if _pid_alive(int(tag[1])):
        continue
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        os.remove(path)
      removed.append(path)
  return removed


def check_output(path: str, overwrite: bool, flag: str = 'overwrite') -> None:
  """Raises unless `path` may be written.

  Args:
    path: the final output path (file or directory).
    overwrite: whether an existing output may be replaced.
    flag: how the caller asks for overwriting, for the message.

  Raises:
    OutputExistsError: `path` is a non-empty directory or an existing file
      and `overwrite` is False, or a non-empty directory that holds no
      SavedModel (never replaced).
  """
  if not os.path.lexists(path):
    return
  if os.path.isdir(path) and not os.listdir(path):
    return
  if overwrite:
    if os.path.isdir(path) and not is_saved_model(path):
      # --overwrite replaces an output, never a folder of something else
      # (a typo'd --output_dir=. would otherwise delete a project).
      raise errors.OutputExistsError(
        f'Output directory {path!r} is not empty and holds no SavedModel '
        '(no saved_model.pb), so it is not replaced even with '
        f'{flag}; empty it or choose another path.'
      )
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
    self._finals: List[str] = []  # every final path asked for, for messages
    self._committed = False

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    finals = self._finals
    if not self._committed:
      self.abort()
    reason = disk_error_reason(exc) if exc is not None else None
    if reason and finals:
      # The failing path is a hidden staging one; name what the user asked.
      raise errors.OutputWriteError(
        f'Cannot write {", ".join(repr(f) for f in finals)}: {reason}; '
        'free space or choose a writable path (nothing was written).'
      ) from exc
    return False

  def directory(self, final: str) -> str:
    """Creates and returns an empty temporary directory for `final`."""
    check_output(final, self._overwrite, self._flag)
    self._finals.append(final)
    parent, name = _split(final)
    os.makedirs(parent, exist_ok=True)
    remove_stale(final)
    tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-{_owner_tag()}', dir=parent)
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
    self._finals.append(final)
    parent, name = _split(final)
    os.makedirs(parent, exist_ok=True)
    remove_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.tmp-{_owner_tag()}', dir=parent)
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
    old = tempfile.mkdtemp(prefix=f'.{name}.old-{_owner_tag()}', dir=parent)
    os.rename(final, os.path.join(old, name))
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
  elif os.path.lexists(final) and not os.path.isdir(final):
    os.remove(final)
    os.rename(tmp, final)
  else:
    os.rename(tmp, final)  # replaces an empty directory
