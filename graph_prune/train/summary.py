"""Parameter counts and the final table of a training run.

"Dense-equivalent" counts every weight of the model as if nothing were
pruned; "non-zeros" counts the entries of `weight * mask` (and of every
unpruned variable, biases included) that are not zero.
"""

import dataclasses
from typing import List, Optional, Sequence

import keras
import numpy as np

from graph_prune.export import sizes
from graph_prune.model import pruned_model as pruned_lib
from graph_prune.train import versioned_export


@dataclasses.dataclass(frozen=True)
class WeightRow:
  """One pruned weight: name, shape, entries, non-zeros of weight * mask."""

  name: str
  shape: tuple
  params: int
  nonzeros: int

  @property
  def sparsity(self) -> float:
    return 1.0 - self.nonzeros / max(self.params, 1)


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Parameter counts of a (pruned) model.

  Attributes:
    weights: one row per pruned weight.
    dense_params: every weight of the model, counted dense.
    nonzeros: the non-zero entries the pruned model computes with.
  """

  weights: List[WeightRow]
  dense_params: int
  nonzeros: int

  @property
  def sparsity(self) -> float:
    return 1.0 - self.nonzeros / max(self.dense_params, 1)


def count_params(
  model: keras.Model, pruned: Optional[pruned_lib.PrunedModel] = None
) -> ParamCounts:
  """Counts the dense and non-zero parameters of `model` as `pruned` uses it.

  Args:
    model: the Keras model (all its weights are counted).
    pruned: the `PrunedModel` over it, or None for the dense model.

  Returns:
    A `ParamCounts`.
  """
  values = [np.asarray(v) for v in model.weights]
  dense = sum(v.size for v in values)
  nonzeros = sum(int(np.count_nonzero(v)) for v in values)
  rows = []
  if pruned is not None:
    for name, weight, mask in zip(
      pruned.weight_names, pruned.weights, pruned.masks
    ):
      w = weight.numpy()
      kept = int(np.count_nonzero(w * mask.numpy()))
      nonzeros += kept - int(np.count_nonzero(w))
      rows.append(WeightRow(name, tuple(w.shape), int(w.size), kept))
  return ParamCounts(rows, int(dense), int(nonzeros))


def final_table(
  counts: ParamCounts,
  test_loss: float,
  test_accuracy: float,
  exports: Sequence[versioned_export.Export] = (),
  dense: Optional[versioned_export.Export] = None,
) -> str:
  """The table the training binary prints at the end.

  Args:
    counts: from `count_params`.
    test_loss: mean cross-entropy on the test split.
    test_accuracy: accuracy on the test split.
    exports: the exports written (or found).
    dense: the dense float SavedModel's size (`artifacts.dense_reference`):
      adds its row, each export's share of its gzipped size and each
      export's `test_accuracy`.

  Returns:
    A multi-line string.
  """
  width = max([len(r.name) for r in counts.weights] + [30])
  lines = [
    f'{"weight":<{width}}  {"shape":<14} {"params":>10} '
    f'{"non-zeros":>10} {"sparsity":>9}'
  ]
  for r in counts.weights:
    lines.append(
      f'{r.name:<{width}}  {str(list(r.shape)):<14} '
      f'{r.params:>10d} {r.nonzeros:>10d} {r.sparsity:>9.4f}'
    )
  lines.append(
    f'{"all weights (dense-equivalent)":<{width}}  {"":<14} '
    f'{counts.dense_params:>10d} {counts.nonzeros:>10d} '
    f'{counts.sparsity:>9.4f}'
  )
  lines.append(f'test accuracy {test_accuracy:.4f}, test loss {test_loss:.4f}')
  if exports:
    lines.extend(_export_rows(exports, dense))
  return '\n'.join(lines)


def _export_rows(exports, dense) -> List[str]:
  """The exports' rows; with `dense`, its row first and '% dense', 'test acc'.

  The percentage is of the dense float SavedModel's gzipped size.
  """
  if dense is None:
    rows = [f'{"export":<9} {"raw":>10} {"gzipped":>10}  path']
    for e in exports:
      rows.append(
        f'{e.kind:<9} {sizes.format_bytes(e.raw_bytes):>10} '
        f'{sizes.format_bytes(e.gzip_bytes):>10}  {e.path}'
      )
    return rows
  width = max(len(e.kind) for e in [dense, *exports])
  rows = [
    f'{"export":<{width}} {"raw":>10} {"gzipped":>10} {"% dense":>8} '
    f'{"test acc":>8}  path'
  ]
  for e in [dense, *exports]:
    share = e.gzip_bytes / max(dense.gzip_bytes, 1)
    acc = '-' if e.test_accuracy is None else f'{e.test_accuracy:.4f}'
    rows.append(
      f'{e.kind:<{width}} {sizes.format_bytes(e.raw_bytes):>10} '
      f'{sizes.format_bytes(e.gzip_bytes):>10} {share:>8.1%} {acc:>8}  '
      f'{e.path}'
    )
  return rows
