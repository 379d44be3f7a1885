"""Writing a stripped model in the formats asked for, all or nothing.

    requests = [Request('saved_model', '/out/model', 'output_dir'),
                Request('tflite', '/out/m.tflite', 'tflite_path')]
    check_requests(requests, overwrite=False)          # before stripping
    written = write(source, requests)                  # an ExportReport
    written['tflite'].size

Every public export (`export_saved_model`, `export_tflite`,
`strip_saved_model` and the strip_masks binary) maps its arguments to
`Request`s of the formats in `table.FORMATS` and calls these two steps:

  check_requests  each format's options, the paths (not inside the input,
                  not inside each other, creatable, not existing unless
                  `overwrite`), before anything is stripped;
  write           each format's `prepare` (what can fail without disk),
                  then inside one `staging.Staging` each format's `write`
                  to its staging path, then one commit: every output
                  appears, or none does (a failure in any format removes
                  what the others staged).
"""

import contextlib
import dataclasses
import os
import tempfile
from typing import Iterable, List, Optional, Sequence, Tuple

from graph_prune import errors
from graph_prune.export import output_paths
from graph_prune.export import sizes
from graph_prune.export import staging
from graph_prune.export.formats import base
from graph_prune.export.formats.table import FORMATS

# How API callers ask for overwriting, for messages (the binary says
# --overwrite).
OVERWRITE_HINT = 'overwrite=True'


class Workspace:
  """What formats written in one run share: the stripped SavedModel on disk.

  A format converted from a SavedModel (TFLite) converts the one the
  SavedModel format staged in this run, or else one saved once to a
  temporary directory, removed when the run ends.
  """

  def __init__(self, source: base.Source, cleanup: contextlib.ExitStack):
    self._source = source
    self._cleanup = cleanup
    self._saved_model: Optional[str] = None

  def saved_model_written(self, path: str) -> None:
    """Records the staged SavedModel of this run."""
    self._saved_model = path

  def saved_model_dir(self) -> str:
    """A SavedModel directory of the source's stripped model."""
    if self._saved_model is None:
      tmp = self._cleanup.enter_context(tempfile.TemporaryDirectory())
      self._saved_model = os.path.join(tmp, 'stripped')
      self._source.module.save(self._saved_model)
    return self._saved_model


def _format(request: base.Request) -> base.Format:
  fmt = FORMATS.get(request.format)
  if fmt is None:
    raise errors.StripError(
      f'Unknown export format {request.format!r}; use one of '
      f'{", ".join(FORMATS)}.'
    )
  return fmt


def _with_defaults(requests: Iterable[base.Request]) -> List[base.Request]:
  """`requests` in writing order, each with its format's options."""
  done = []
  for request in requests:
    fmt = _format(request)
    if request.options is None:
      request = dataclasses.replace(request, options=fmt.options())
    done.append(request)
  order = list(FORMATS)
  return sorted(done, key=lambda r: order.index(r.format))


def check_outputs(
  outputs: Sequence[Tuple[str, str, bool]],
  overwrite: bool,
  flag: str = OVERWRITE_HINT,
) -> None:
  """Refuses output paths that cannot be written.

  Args:
    outputs: (name for messages, path, is a file) of each output.
    overwrite: whether existing outputs may be replaced.
    flag: how the caller asks for overwriting, for messages.

  Raises:
    OutputPathError: a parent is a file, or a file output is a directory.
    OutputExistsError: an output exists and `overwrite` is False.
  """
  for name, path, is_file in outputs:
    output_paths.check(path, name, is_file=is_file)
  for _, path, _ in outputs:
    staging.check_output(path, overwrite, flag)


def check_nesting(paths: Sequence[str], input_path: Optional[str]) -> None:
  """Refuses outputs that would write into or replace the input, or nest.

  Raises:
    StripError: naming the two paths.
  """
  targets = [os.path.realpath(p) for p in paths]
  for i, path in enumerate(paths):
    for j, other in enumerate(paths):
      if i != j and (
        targets[i] == targets[j] or targets[i].startswith(targets[j] + os.sep)
      ):
        raise errors.StripError(
          f'Output {path!r} is the same as or inside output {other!r}; '
          'give each output its own path beside the others.'
        )
  if input_path is None:
    return
  source = os.path.realpath(input_path)
  for path, target in zip(paths, targets):
    if target == source or target.startswith(source + os.sep):
      raise errors.StripError(
        f'Output {path!r} is inside the input SavedModel {input_path!r}; '
        'write it elsewhere (the input is never modified).'
      )
    if source.startswith(target + os.sep):
      raise errors.StripError(
        f'Output {path!r} contains the input SavedModel {input_path!r}; '
        'write it elsewhere (the input is never modified).'
      )


def check_requests(
  requests: Sequence[base.Request],
  overwrite: bool = False,
  flag: str = OVERWRITE_HINT,
  input_path: Optional[str] = None,
) -> None:
  """Everything about `requests` that can be checked before stripping.

  Args:
    requests: the outputs asked for.
    overwrite: whether existing outputs may be replaced.
    flag: how the caller asks for overwriting, for messages.
    input_path: the input SavedModel, which no output may touch.

  Raises:
    StripError: an unknown format, or paths that nest or touch the input;
      each format's own errors for its options (`TFLiteExportError`, ...);
      `OutputPathError`, `OutputExistsError` as `check_outputs`.
  """
  requests = _with_defaults(requests)
  for request in requests:
    _format(request).check(request)
  check_nesting([r.path for r in requests], input_path)
  check_outputs(
    [(r.name, r.path, _format(r).is_file) for r in requests], overwrite, flag
  )


def write(
  source: base.Source,
  requests: Sequence[base.Request],
  overwrite: bool = False,
  flag: str = OVERWRITE_HINT,
) -> base.ExportReport:
  """Writes `source` in every format of `requests`, all or nothing.

  Args:
    source: the stripped model and where it came from.
    requests: the outputs, checked by `check_requests`.
    overwrite: whether existing outputs may be replaced.
    flag: how the caller asks for overwriting, for messages.

  Returns:
    An `ExportReport` with one report per format, each with its final
    `path` and `size`.

  Raises:
    Whatever a format raises; then no output of any format exists.
  """
  requests = _with_defaults(requests)
  prepared = [
    (_format(r), r, _format(r).prepare(source, r.options)) for r in requests
  ]
  written = []
  with contextlib.ExitStack() as cleanup:
    workspace = Workspace(source, cleanup)
    with staging.Staging(overwrite, flag) as stage:
      for fmt, request, ready in prepared:
        staged = (
          stage.file(request.path)
          if fmt.is_file
          else stage.directory(request.path)
        )
        written.append((fmt, request, fmt.write(ready, staged, workspace)))
      stage.commit()
  reports = []
  for fmt, request, report in written:
    size = report.size
    if size is None:
      size = sizes.measure(request.path, lazy=fmt.lazy_size)
    reports.append(
      (fmt.name, dataclasses.replace(report, path=request.path, size=size))
    )
  return base.ExportReport(tuple(reports))
