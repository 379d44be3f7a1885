"""What every export format shares: its steps, what it writes, its reports.

    request = Request('tflite', '/out/m.tflite', 'tflite_path', options)
    report = driver.write(source, [request])['tflite']   # a TFLiteReport

A format is three steps, so that whatever can fail fails before anything
is written and every output is written all or nothing (`driver`):

  check(request)          the options and the path alone, before anything
                          is stripped (a bad --quantize costs no strip);
  prepare(source, opts)   what needs the stripped model but no disk (the
                          2 GB proto limit, freezing into constants);
  write(prepared, staged_path, workspace)
                          writes the output to its staging path and returns
                          the format's report; the driver adds its final
                          `path` and `size` once every output is renamed.
"""

import dataclasses
from typing import Any, Callable, Iterator, Optional, Tuple

from graph_prune import errors


@dataclasses.dataclass(frozen=True)
class Source:
  """The stripped model every format of one export writes.

  Attributes:
    module: the `StrippedModel`.
    signature_keys: its signatures as written (aliases such as `serve`
      included), which a SavedModel is checked on.
    distinct_keys: the same, each function once (aliases left out): what
      TFLite converts and a frozen graph picks from.
    what: what it is, for messages ("SavedModel '/in'", 'the pruned model').
    original: a loaded SavedModel of the pruned model, which the written
      SavedModel is checked against; None for a live model.
    pruned: the live `PrunedModel`, for formats that rebuild from it (the
      `.keras` clone); None for a SavedModel input.
  """

  module: Any
  signature_keys: Tuple[str, ...]
  distinct_keys: Tuple[str, ...]
  what: str
  original: Any = None
  pruned: Any = None


@dataclasses.dataclass(frozen=True)
class Request:
  """One output asked for.

  Attributes:
    format: a key of `table.FORMATS` ('saved_model', 'frozen_graph',
      'tflite', 'keras').
    path: the output's final path.
    name: how the caller names the path, for messages ('output_dir',
      '--tflite', 'path').
    options: the format's own `Options`, or None for its defaults.
  """

  format: str
  path: str
  name: str
  options: Any = None


@dataclasses.dataclass(frozen=True)
class Format:
  """One export format: a row of `table.FORMATS`.

  Attributes:
    name: its key.
    is_file: whether the output is a file (else a directory).
    label: how reports name it ('TFLite').
    options: the type of its options (called with no argument for the
      defaults).
    check: (request) -> None; raises for bad options or paths.
    prepare: (source, options) -> what `write` needs.
    write: (prepared, staged path, `driver.Workspace`) -> its report,
      whose `path` and `size` the driver sets.
    lazy_size: measure the gzipped size only when first read (a SavedModel
      of a large model takes seconds to gzip).
  """

  name: str
  is_file: bool
  label: str
  options: Callable[[], Any]
  check: Callable[[Request], None]
  prepare: Callable[[Source, Any], Any]
  write: Callable[[Any, str, Any], Any]
  lazy_size: bool = False


def no_check(request: Request) -> None:
  """`Format.check` of a format without options."""
  del request


@dataclasses.dataclass(frozen=True)
class ExportReport:
  """One report per format written, in the order they were written.

  Each report has the output's `path` and `size` (`sizes.Size`) and what
  its format adds (the TFLite check, a frozen graph's tensor names).

      written['tflite'].size.gzipped; 'keras' in written
  """

  written: Tuple[Tuple[str, Any], ...] = ()

  def __getitem__(self, name: str):
    if name in self.names:
      return self.get(name)
    raise KeyError(
      f'No {name!r} output was written; written: {list(self.names)}.'
    )

  def __contains__(self, name) -> bool:
    return name in self.names

  def __iter__(self) -> Iterator[Any]:
    return iter(report for _, report in self.written)

  def __len__(self) -> int:
    return len(self.written)

  @property
  def names(self) -> Tuple[str, ...]:
    return tuple(key for key, _ in self.written)

  def get(self, name: str, default: Optional[Any] = None):
    for key, report in self.written:
      if key == name:
        return report
    return default


def require(value, what: str, fmt: str):
  """`value`, or a StripError saying the format needs `what`."""
  if value is None:
    raise errors.StripError(
      f'The {fmt} format needs {what}; export a live PrunedModel '
      '(graph_prune.apply_pruning) to write it.'
    )
  return value
