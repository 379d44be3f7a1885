"""`app.run` for graph_prune's binaries: bad input ends in one line.

A bad flag (absl's validators) or a bad value found later by the library (a
`GraphPruneError`: bad hparams, missing data, a model_dir of another model)
ends the binary with exit status 1 and one line on stderr naming the value and
the fix, instead of absl's two-line parse error or a traceback. Any other
exception is a bug and keeps its traceback.

Logging is at WARNING unless --verbosity is given (e.g. --verbosity=0 shows
graph_prune's per-weight lines and TensorFlow's INFO messages): the binaries
print what a user needs themselves.

The binaries use TensorFlow's BFC allocator on the CPU (unless the
environment sets TF_CPU_ALLOCATOR_USE_BFC): it reuses freed buffers, where the
default allocator maps fresh pages for every large tensor and pays a page fault
per 4 KiB. A mask update of an 8192x8192 weight takes 0.14 s instead of 0.42 s
(bench/mask_update.py, BUILD_NOTES.md). TensorFlow reads the variable when it
first creates the allocator, i.e. at the first op, so setting it before
`main` runs is early enough even though TensorFlow is already imported.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from graph_prune import errors


def _program() -> str:
  if not sys.argv:
    return 'graph_prune'
  path = os.path.abspath(sys.argv[0])
  if os.path.basename(path) == '__main__.py':
    # `python -m graph_prune.train` runs graph_prune/train/__main__.py; the
    # binary keeps the name it had as graph_prune/train.py.
    return os.path.basename(os.path.dirname(path)) + '.py'
  return os.path.basename(path)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = ' '.join(str(e).split())
    sys.exit(f'{_program()}: {message}')


def run(main) -> None:
  """Runs `main(argv)` like `app.run`, with one-line errors for bad input."""

  def guarded(argv):
    os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except errors.GraphPruneError as e:
      sys.exit(f'{_program()}: {" ".join(str(e).split())}')

  app.run(guarded, flags_parser=_parse_flags)
