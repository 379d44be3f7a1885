"""Exports of a trained pruned model: its pruned and its stripped SavedModel.

Both go under `export_dir` in TensorFlow Serving's layout, one numbered
version per training step:

    export_dir/pruned/1500/     tf.saved_model.save(pruned): weights, masks,
                                thresholds; serves weight * mask
    export_dir/stripped/1500/   graph_prune.strip.strip_saved_model of the
                                pruned one: masks folded into the weights,
                                no pruning variables

The stripped model is made from the pruned SavedModel, not from the live
`PrunedModel`: once the model has been trained (differentiated inside a
`tf.function`), TensorFlow has rewritten the traced call for its gradient,
and `strip.export_saved_model(pruned)` can no longer freeze it, while the
SavedModel's call is traced afresh. An existing version directory is never
overwritten.
"""

import dataclasses
import gzip
import os
from typing import Callable, List, Optional, Tuple

import tensorflow as tf

from graph_prune import pruned as pruned_lib


@dataclasses.dataclass(frozen=True)
class Export:
  """One exported SavedModel.

  Attributes:
    kind: 'pruned' or 'stripped'.
    path: its directory.
    raw_bytes: the size of its files.
    gzip_bytes: the size of a `.tar.gz` of it (`graph_prune.sizes`; without
      that module, of its files gzipped one by one).
    written: False when the directory already existed and was left as it was.
  """
  kind: str
  path: str
  raw_bytes: int
  gzip_bytes: int
  written: bool


def directory_size(path: str) -> Tuple[int, int]:
  """(raw, gzipped) bytes of the files under `path`."""
  try:
    from graph_prune import sizes  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    if e.name != 'graph_prune.sizes':
      raise
    sizes = None
  if sizes is not None:
    size = sizes.measure(path)
    return size.raw, size.gzipped
  raw = zipped = 0
  for root, _, files in os.walk(path):
    for name in sorted(files):
      with open(os.path.join(root, name), 'rb') as f:
        data = f.read()
      raw += len(data)
      zipped += len(gzip.compress(data, compresslevel=9, mtime=0))
  return raw, zipped


def _stripper() -> Optional[Callable[[str, str], None]]:
  """`strip_saved_model(pruned_dir, stripped_dir)`, if graph_prune has it."""
  try:
    from graph_prune import strip  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    if e.name != 'graph_prune.strip':
      raise  # strip.py is there but broken: not a reason to skip quietly.
    return None
  return getattr(strip, 'strip_saved_model', None)


def export(pruned: pruned_lib.PrunedModel, export_dir: str, version: int,
           log: Callable[[str], None] = print) -> List[Export]:
  """Writes the pruned and the stripped SavedModel of `pruned`.

  Args:
    pruned: the trained `PrunedModel`.
    export_dir: the base directory (created if missing).
    version: the version number, e.g. the training step.
    log: called with one line per export (or skip).

  Returns:
    The exports that exist after the call (the stripped one is left out when
    `graph_prune.strip` is not available).

  Raises:
    StripError: the stripped model cannot be made (from graph_prune.strip).
  """
  pruned_path = os.path.join(export_dir, 'pruned', str(version))
  stripped_path = os.path.join(export_dir, 'stripped', str(version))
  strip_saved_model = _stripper()
  writers = [('pruned', pruned_path,
              lambda: tf.saved_model.save(pruned, pruned_path))]
  if strip_saved_model is None:
    log('stripped export skipped: graph_prune.strip is not available.')
  else:
    writers.append(('stripped', stripped_path,
                    lambda: strip_saved_model(pruned_path, stripped_path)))
  results = []
  for kind, path, write in writers:
    written = not os.path.exists(path)
    if written:
      write()
      log(f'exported the {kind} SavedModel to {path}')
    else:
      log(f'{path} exists; left as it is (not overwritten).')
    raw, zipped = directory_size(path)
    results.append(Export(kind, path, raw, zipped, written))
  return results
