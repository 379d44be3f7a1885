"""Exports of a trained pruned model: its pruned and its stripped SavedModel.

Both go under `export_dir` in TensorFlow Serving's layout, one numbered
version per training step:

    export_dir/pruned/1500/     graph_prune.save_pruned(pruned): weights, masks,
                                thresholds; serves weight * mask
    export_dir/stripped/1500/   graph_prune.export_saved_model(pruned): masks
                                folded into the weights, no pruning variables

An existing complete version directory is never overwritten. Every export is
written to a staging directory beside its version and renamed when complete
(`graph_prune.export.staging`), so a killed run leaves no half-written
version; a version directory that lacks a file `tf.saved_model.save` writes
(left by older graph_prune, or by hand) is recognised as incomplete and
replaced.
"""

import dataclasses
import os
import shutil
from typing import Any, Callable, List, Optional, Sequence

from graph_prune.export import sizes
from graph_prune.export import staging
from graph_prune.export import strip
from graph_prune.export import tflite
from graph_prune.model import pruned_model as pruned_lib
from graph_prune.model import saved_model_conventions as conventions


def _save_pruned(pruned: pruned_lib.PrunedModel, path: str) -> None:
  """`graph_prune.save_pruned(pruned, path)`, staged: all or nothing."""
  with staging.Staging() as stage:
    conventions.save_pruned(pruned, stage.directory(path))
    stage.commit()


def _save_shrunk(
  pruned: pruned_lib.PrunedModel, path: str, log: Callable[[str], None]
) -> None:
  """Writes the shrunk SavedModel; logs a note when it removed nothing.

  Weight pruning rarely zeroes a whole unit, so without granularity=unit
  the shrunk export is the stripped one; the note says so.
  """
  module = strip.strip(pruned, shrink=True)
  with staging.Staging() as stage:
    module.save(stage.directory(path))
    stage.commit()
  if all(
    r.params_after == r.params_before for _, r in module.shrink_report.functions
  ):
    log(
      'note: --shrink removed nothing: no unit of a masked weight is all '
      'zero, so the shrunk export equals the stripped one; prune with '
      'granularity=unit in --hparams to remove whole units.'
    )


def _remove(path: str) -> None:
  """Removes an incomplete export (a directory, or a stray file)."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  else:
    os.remove(path)


@dataclasses.dataclass(frozen=True)
class Export:
  """One exported SavedModel.

  Attributes:
    kind: 'pruned' or 'stripped'.
    path: its directory.
    raw_bytes: the size of its files.
    gzip_bytes: the size of a `.tar.gz` of it (`graph_prune.export.sizes`).
    written: False when the directory already existed and was left as it was.
    test_accuracy: its accuracy on the run's test split, when measured
      (`train/artifacts.py`).
  """

  kind: str
  path: str
  raw_bytes: int
  gzip_bytes: int
  written: bool
  test_accuracy: Optional[float] = None


def export(
  pruned: pruned_lib.PrunedModel,
  export_dir: str,
  version: int,
  log: Callable[[str], None] = print,
  shrink: bool = False,
  tflite_modes: Sequence[str] = (),
  representative_data: Any = None,
) -> List[Export]:
  """Writes the pruned and the stripped SavedModel of `pruned`.

  Args:
    pruned: the trained `PrunedModel`.
    export_dir: the base directory (created if missing).
    version: the version number, e.g. the training step.
    log: called with one line per export (or skip).
    shrink: also write the shrunk SavedModel (zero units removed) to
      `export_dir/shrunk/<version>`.
    tflite_modes: TFLite quantization modes ('none', 'dynamic', 'float16',
      'int8') to write as `export_dir/tflite/<version>/<mode>.tflite`.
    representative_data: inputs for int8 calibration and the TFLite check.

  Returns:
    The two exports (three with `shrink`).

  Raises:
    StripError: the stripped model cannot be made.
  """
  pruned_path = os.path.join(export_dir, 'pruned', str(version))
  stripped_path = os.path.join(export_dir, 'stripped', str(version))
  writers = [
    ('pruned', pruned_path, lambda: _save_pruned(pruned, pruned_path)),
    (
      'stripped',
      stripped_path,
      lambda: strip.export_saved_model(pruned, stripped_path),
    ),
  ]
  if shrink:
    shrunk_path = os.path.join(export_dir, 'shrunk', str(version))
    writers.append(
      (
        'shrunk',
        shrunk_path,
        lambda: _save_shrunk(pruned, shrunk_path, log),
      )
    )
  results = []
  for kind, path, write in writers:
    written = not staging.is_complete_saved_model(path)
    if written:
      if os.path.lexists(path):
        log(f'{path} is an incomplete export (a killed run?); replacing it.')
        _remove(path)
      write()
      log(f'exported the {kind} SavedModel to {path}')
    else:
      log(f'{path} exists; left as it is (not overwritten).')
    size = sizes.measure(path)
    results.append(Export(kind, path, size.raw, size.gzipped, written))
  for mode in tflite_modes:
    path = os.path.join(export_dir, 'tflite', str(version), f'{mode}.tflite')
    written = not os.path.isfile(path)
    if written:
      tflite.export_tflite(
        pruned, path, quantize=mode, representative_data=representative_data
      )
      log(f'exported the {mode} TFLite model to {path}')
    else:
      log(f'{path} exists; left as it is (not overwritten).')
    size = sizes.measure(path)
    results.append(
      Export(f'tflite-{mode}', path, size.raw, size.gzipped, written)
    )
  return results
