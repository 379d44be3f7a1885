"""TensorFlow Lite's C++ log lines, kept to TF_CPP_MIN_LOG_LEVEL.

    with native_logs.captured() as logs:
      flatbuffer = converter.convert()
    logs.errors()      # the converter's own error lines, for a message

TFLite's converter and interpreter log from C++ straight to the process's
stderr, where `TF_CPP_MIN_LOG_LEVEL` does not reach: "fully_quantize: 0,
inference_type: 6, ..." for every int8 conversion, "INFO: Created TensorFlow
Lite XNNPACK delegate for CPU." for the first interpreter. `captured`
redirects file descriptor 2 to a temporary file around such a step and then
writes back the lines `TF_CPP_MIN_LOG_LEVEL` lets through, as TensorFlow's
own C++ logging would: every line when it is unset or 0 (TensorFlow's
default, so a notebook sees what it always saw), warnings and errors at 1,
errors at 2, nothing at 3. A line without a severity counts as INFO.

The binaries run at 2 unless --verbosity (or the user's own
`TF_CPP_MIN_LOG_LEVEL`) says otherwise (graph_prune/cli/quiet.py), so their
terminal shows only their own lines; `--verbosity=0` shows these too.
"""

import contextlib
import os
import re
import sys
import tempfile
from typing import Callable, Iterator, List, Mapping, Optional

# Severity of a line: absl's prefix ("I1206 12:00:00.1 123 file.cc:1]"),
# TFLite's ("INFO: "), Python's logging ("WARNING:tensorflow:"), an MLIR
# diagnostic ("loc(...): error: ").
_SEVERITIES = (
  (re.compile(r'^([IWEF])\d{4} '), None),
  (re.compile(r'^(INFO|WARNING|ERROR|FATAL)\b'), None),
  (re.compile(r'\berror:'), 'E'),
  (re.compile(r'\b(warning:|\w*Warning:)'), 'W'),
)
_LEVELS = {'I': 0, 'W': 1, 'E': 2, 'F': 3}


def severity(line: str) -> str:
  """'I', 'W', 'E' or 'F': the severity a log line says it has (default I)."""
  for pattern, fixed in _SEVERITIES:
    match = pattern.search(line)
    if match:
      return fixed or match.group(1)[0]
  return 'I'


def min_level(environ: Mapping[str, str] = os.environ) -> int:
  """`TF_CPP_MIN_LOG_LEVEL` as a number (0 when unset or not a number)."""
  try:
    return int(environ.get('TF_CPP_MIN_LOG_LEVEL', '0'))
  except ValueError:
    return 0


class CapturedLines:
  """The lines a `captured` block wrote to stderr."""

  def __init__(self):
    self.lines: List[str] = []

  def errors(self) -> List[str]:
    """The lines of severity ERROR or FATAL."""
    return [line for line in self.lines if _LEVELS[severity(line)] >= 2]


@contextlib.contextmanager
def captured(level: Optional[int] = None) -> Iterator[CapturedLines]:
  """Captures stderr (file descriptor 2); writes back lines of `level` up.

  Args:
    level: the least severity written back (0 INFO, 1 WARNING, 2 ERROR, 3
      FATAL, above: none); default `min_level()`, i.e. TF_CPP_MIN_LOG_LEVEL.

  Yields:
    A `CapturedLines`, filled when the block ends (also when it raises).
  """
  level = min_level() if level is None else level
  with captured_stderr(lambda x: _LEVELS[severity(x)] >= level) as logs:
    yield logs


@contextlib.contextmanager
def captured_stderr(keep: Callable[[str], bool]) -> Iterator[CapturedLines]:
  """Captures file descriptor 2; writes back the lines `keep` accepts.

  The one place that redirects stderr at the file-descriptor level (C++
  log lines never pass through `sys.stderr`); the binaries' quiet start
  (`cli/quiet.py`) uses it too. Standard library only, so it can run
  before TensorFlow is imported.

  Yields:
    A `CapturedLines`, filled when the block ends (also when it raises).
  """
  logs = CapturedLines()
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no stderr to capture
    yield logs
    return
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield logs
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode('utf-8', errors='replace')
      logs.lines = text.splitlines()
      kept = [x for x in logs.lines if keep(x)]
      if kept:
        sys.stderr.write('\n'.join(kept) + '\n')
        sys.stderr.flush()
