"""Exports of a trained pruned model: its pruned and its stripped SavedModel.

Both go under `export_dir` in TensorFlow Serving's layout, one numbered
version per training step:

    export_dir/pruned/1500/     tf.saved_model.save(pruned): weights, masks,
                                thresholds; serves weight * mask
    export_dir/stripped/1500/   graph_prune.export_saved_model(pruned): masks
                                folded into the weights, no pruning variables

An existing version directory is never overwritten.
"""

import dataclasses
import os
from typing import Callable, List

import tensorflow as tf

from graph_prune import pruned_model as pruned_lib
from graph_prune.export import sizes
from graph_prune.export import strip


@dataclasses.dataclass(frozen=True)
class Export:
  """One exported SavedModel.

  Attributes:
    kind: 'pruned' or 'stripped'.
    path: its directory.
    raw_bytes: the size of its files.
    gzip_bytes: the size of a `.tar.gz` of it (`graph_prune.export.sizes`).
    written: False when the directory already existed and was left as it was.
  """

  kind: str
  path: str
  raw_bytes: int
  gzip_bytes: int
  written: bool


def export(
  pruned: pruned_lib.PrunedModel,
  export_dir: str,
  version: int,
  log: Callable[[str], None] = print,
) -> List[Export]:
  """Writes the pruned and the stripped SavedModel of `pruned`.

  Args:
    pruned: the trained `PrunedModel`.
    export_dir: the base directory (created if missing).
    version: the version number, e.g. the training step.
    log: called with one line per export (or skip).

  Returns:
    The two exports.

  Raises:
    StripError: the stripped model cannot be made.
  """
  pruned_path = os.path.join(export_dir, 'pruned', str(version))
  stripped_path = os.path.join(export_dir, 'stripped', str(version))
  writers = [
    ('pruned', pruned_path, lambda: tf.saved_model.save(pruned, pruned_path)),
    (
      'stripped',
      stripped_path,
      lambda: strip.export_saved_model(pruned, stripped_path),
    ),
  ]
  results = []
  for kind, path, write in writers:
    written = not os.path.exists(path)
    if written:
      write()
      log(f'exported the {kind} SavedModel to {path}')
    else:
      log(f'{path} exists; left as it is (not overwritten).')
    size = sizes.measure(path)
    results.append(Export(kind, path, size.raw, size.gzipped, written))
  return results
