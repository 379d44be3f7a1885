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
per 4 KiB, which on a VM with slow page faults made the mask update of a large
weight several times slower (bench/mask_update.py; measured: BUILD_NOTES,
'Measurements behind the code'). TensorFlow reads the variable when it
first creates the allocator, i.e. at the first op, so setting it before
`main` runs is early enough even though TensorFlow is already imported.

The flag helpers keep the binaries' flag code short: `positive_int` defines an
integer flag that must be >= 1, `config_from_flags` builds a config from the
flags named like its fields.
"""

import dataclasses
import os
import sys
from typing import Any, Callable, Optional, Sequence, Tuple, Type

from absl import app
from absl import flags
from absl import logging

from graph_prune import errors

# The flags `positive_int` defines belong to the binary that calls it (and
# are listed by its --help), not to this module.
flags.disclaim_key_flags()


_HELP_FLAGS = frozenset(
  ('-h', '-?', '--help', '--helpshort', '--helpfull', '--helpxml')
)


def _program() -> str:
  if not sys.argv:
    return 'graph_prune'
  path = os.path.abspath(sys.argv[0])
  if os.path.basename(path) == '__main__.py':
    # `python -m graph_prune.train` runs graph_prune/train/__main__.py; the
    # binary keeps the name it had as graph_prune/train.py.
    return os.path.basename(os.path.dirname(path)) + '.py'
  return os.path.basename(path)


_LONGEST_WORD = 200


def _shorten(word: str) -> str:
  # absl's flag errors repeat the flag's whole value: a 10 MB --hparams
  # must not become a 10 MB line (our own messages quote excerpts).
  if len(word) <= _LONGEST_WORD:
    return word
  cut = len(word) - 140
  return f'{word[:120]}...({cut} chars)...{word[-20:]}'


def _one_line(prefix: Optional[str], error: Exception) -> str:
  prefix = f'{_program()}: ' if prefix is None else prefix
  return prefix + ' '.join(_shorten(w) for w in str(error).split())


def run(
  main: Callable[[Sequence[str]], Any],
  prefix: Optional[str] = None,
  also_catch: Tuple[Type[Exception], ...] = (),
  usage: Optional[str] = None,
  key_flags: Sequence[flags.FlagHolder] = (),
) -> None:
  """Runs `main(argv)` like `app.run`, with one-line errors for bad input.

  Args:
    main: the binary's main function.
    prefix: what starts an error line; default the program's name and ': ',
      e.g. 'train.py: '.
    also_catch: exceptions besides `GraphPruneError` that are the input's
      fault (e.g. `OSError` for a binary that reads and writes paths).
    usage: the --help text; default the docstring of `main`'s module.
    key_flags: flags --help lists besides those `main`'s module defines.
  """
  _describe_binary(main, usage, key_flags)
  caught = (errors.GraphPruneError,) + tuple(also_catch)

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      sys.exit(_one_line(prefix, e))
    except SystemExit as e:
      # absl exits with status 1 after printing --help; asking for help is
      # no failure.
      if e.code == 1 and _HELP_FLAGS.intersection(argv[1:]):
        sys.exit(0)
      raise

  def guarded(argv):
    os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except caught as e:
      sys.exit(_one_line(prefix, e))

  app.run(guarded, flags_parser=parse_flags)


def _describe_binary(main, usage, key_flags) -> None:
  """Makes --help show the binary's description and its own flags.

  absl prints the `__main__` module's docstring and the flags of the module
  named by argv[0]; a console script's generated `__main__` has neither, nor
  has `python -m graph_prune.train`'s `__main__.py`. So the docstring of the
  module that defines `main` becomes the usage text, and the flags it defines
  become key flags of argv[0] (--helpfull still lists every flag).
  """
  module = sys.modules.get(main.__module__)
  if usage is None and module is not None:
    usage = module.__doc__
  if usage is not None:
    sys.modules['__main__'].__doc__ = usage
  own = list(flags.FLAGS.get_flags_for_module(main.__module__))
  own += [flags.FLAGS[holder.name] for holder in key_flags]
  program = sys.argv[0] if sys.argv else main.__module__
  for flag in own:
    flags.FLAGS.register_key_flag_for_module(program, flag)


def reject_arguments(argv: Sequence[str], error_type: Type[Exception]) -> None:
  """Raises `error_type` if the command line has positional arguments."""
  if len(argv) > 1:
    raise error_type(
      f'Unexpected arguments {list(argv[1:])}; every setting is a --flag.'
    )


def positive_int(name: str, default: Optional[int], help_text: str):
  """Defines an integer flag that must be >= 1 (None allowed as default)."""
  return flags.DEFINE_integer(name, default, help_text, lower_bound=1)


def config_from_flags(config_class, **values):
  """Builds a dataclass config from the flags named like its fields.

  Args:
    config_class: a dataclass, e.g. `experiment.TrainConfig`.
    **values: fields whose flag needs converting first; they win over the
      flag of the same name. A field with neither keeps its default.

  Returns:
    `config_class(...)`.
  """
  for field in dataclasses.fields(config_class):
    if field.name not in values and field.name in flags.FLAGS:
      values[field.name] = flags.FLAGS[field.name].value
  return config_class(**values)
