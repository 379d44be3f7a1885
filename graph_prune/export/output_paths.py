"""Output paths that cannot be written, refused before any work starts.

    output_paths.check('/out/model.tflite', 'tflite_path', is_file=True)

`staging` writes beside an output's final path, creating its parent
folders; a parent that is a file (`--output_dir=FILE/sub`) would fail there
with the system's raw `[Errno 17] File exists`, late and unclear. A file
output that names a directory (`--tflite=DIR`) would first be refused as an
existing output ("pass --overwrite") although overwriting cannot help.
"""

import os

from graph_prune import errors


def check(path: str, name: str, is_file: bool = False) -> None:
  """Raises unless `path` could be created as an output.

  Args:
    path: the output path.
    name: how the caller names it, for the message ('--output_dir',
      'path').
    is_file: the output is a file (so it must not be a directory).

  Raises:
    OutputPathError: a parent of `path` is a file, or `is_file` and `path`
      is a directory.
  """
  if is_file and os.path.isdir(path):
    raise errors.OutputPathError(
      f'{name}={path!r} is a directory, not a file; pass a file path, e.g. '
      f'{os.path.join(path, "model.tflite" if "tflite" in name else "out")!r}.'
    )
  parent = os.path.dirname(os.path.abspath(path))
  while parent and not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  if parent and not os.path.isdir(parent):
    raise errors.OutputPathError(
      f'{name}={path!r} cannot be created: {parent!r} is a file, not a '
      'directory; choose a path under a directory.'
    )
