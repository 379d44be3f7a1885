"""Keeping TensorFlow's start-up noise off a binary's terminal.

Importing TensorFlow and initialising its devices print C++ log lines before
any flag is parsed: "All log messages before absl::InitializeLog() ...", the
CPU-instructions notice, "Could not find cuda drivers" and a cuInit error on
machines without a GPU. Some come from absl's C++ logging, which
`TF_CPP_MIN_LOG_LEVEL` does not reach, so `start_up` captures the process's
stderr (file descriptor 2) while TensorFlow starts and writes back every line
that is not one of those known, harmless ones: an import error or any other
message still shows. `hide_known_warnings` does the same for Python warnings
and TensorFlow's Python log lines that say nothing about the user's run.

A user who asks for the logs gets them all: with `--verbosity` (or `-v`) on
the command line, or `TF_CPP_MIN_LOG_LEVEL` set in the environment, nothing
is captured or hidden.
"""

import contextlib
import logging
import os
import re
from typing import Iterator, Mapping, Sequence
import warnings

from graph_prune.export import native_logs

# Lines TensorFlow prints while it starts on a machine like the ones the
# binaries run on; each is harmless.
_START_UP_NOISE = tuple(
  re.compile(pattern)
  for pattern in (
    r'^WARNING: All log messages before absl::InitializeLog\(\) is called '
    r'are written to STDERR$',
    r'cudart_stub\.cc:\d+\] Could not find cuda drivers',
    r'cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized',
    r'^To enable the following instructions: .* rebuild TensorFlow',
    r'cuda_platform\.cc:\d+\] failed call to cuInit',
    r'cuda_executor\.cc:\d+\] .*(CUDA|cuda)',
    r'Unable to register cu(DNN|FFT|BLAS) factory',
    r'computation_placer\.cc:\d+\] computation placer already registered',
    r'TF-TRT Warning: Could not find TensorRT',
  )
)

# Python warnings and TensorFlow log lines that the binaries' own work
# triggers and that need no action from the user.
_KNOWN_WARNINGS = (
  # The tests and strip_masks check TFLite outputs with tf.lite.Interpreter.
  r'\s*Warning: tf\.lite\.Interpreter is deprecated',
)
_KNOWN_TF_LOGS = re.compile(
  # The sweep and the export checks build many small functions on purpose.
  r'triggered tf\.function retracing'
)


def wanted(
  argv: Sequence[str], environ: Mapping[str, str] = os.environ
) -> bool:
  """Whether to keep TensorFlow quiet: not when the user asked for logs."""
  if 'TF_CPP_MIN_LOG_LEVEL' in environ:
    return False
  for arg in argv[1:]:
    if arg == '--':
      break
    if arg in ('-v', '--v') or arg.startswith(('--verbosity', '-v=', '--v=')):
      return False
  return True


def is_noise(line: str) -> bool:
  """Whether `line` is one of TensorFlow's harmless start-up lines."""
  return any(pattern.search(line) for pattern in _START_UP_NOISE)


@contextlib.contextmanager
def start_up(enabled: bool = True) -> Iterator[None]:
  """Captures stderr while TensorFlow starts; writes back what matters.

  Args:
    enabled: False to capture nothing (the user asked for the logs).

  Yields:
    Nothing; start TensorFlow inside the block.
  """
  if not enabled:
    yield
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with native_logs.captured_stderr(lambda line: not is_noise(line)):
    yield


class _DropKnownLogs(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not _KNOWN_TF_LOGS.search(record.getMessage())


def hide_known_warnings() -> None:
  """Hides the Python warnings and TensorFlow logs known to be harmless.

  Only the binaries call this, once at start: it changes the process's
  warning filters and TensorFlow's logger.
  """
  for message in _KNOWN_WARNINGS:
    warnings.filterwarnings('ignore', message=message)
  logging.getLogger('tensorflow').addFilter(_DropKnownLogs())
