"""What a sweep measured: its rows, their means, the frontier and the tables.

result = sweep.sweep(config.SweepConfig(seeds=(0,)))
results.write_tables(result, out_dir)
print(results.format_table(result))
"""

import collections
import csv
import dataclasses
import json
import math
import os
from typing import Dict, List, Sequence

import numpy as np

from graph_prune.study import config as config_lib

# A drop of more than this many accuracy points (against the dense model)
# ends the range a method "holds".
DROP_POINTS = 2.0


@dataclasses.dataclass(frozen=True)
class Row:
  """One pruned model's test results.

  Attributes:
    seed: the dense model's seed.
    method: the method's name.
    target_sparsity: the k asked for.
    sparsity: the masks' measured sparsity over the pruned weights.
    nonzeros: non-zero parameters of the whole model (biases and the dense
      output layer included).
    dense_params: the model's parameter count.
    accuracy: test accuracy.
    loss: test cross-entropy.
    seconds: time spent pruning (and retraining) and evaluating.
    macs: multiply-adds per example of the model (stripped).
    shrunk_macs: the same after removing zero units (`graph_prune.shrink`).
    latency_ratio: shrunk / stripped median latency at the config's
      `latency_batch` (NaN when not timed).
    reconstruction_error: one-shot wanda and sparsegpt: the mean over pruned
      weights of `||XW - XW'|| / ||XW||` on the calibration inputs (NaN for
      the other methods).
  """

  seed: int
  method: str
  target_sparsity: float
  sparsity: float
  nonzeros: int
  dense_params: int
  accuracy: float
  loss: float
  seconds: float
  macs: int = 0
  shrunk_macs: int = 0
  latency_ratio: float = float('nan')
  reconstruction_error: float = float('nan')


@dataclasses.dataclass(frozen=True)
class Dense:
  """A trained dense model's test results."""

  seed: int
  accuracy: float
  loss: float
  params: int
  seconds: float


@dataclasses.dataclass
class SweepResult:
  """The rows of every seed and the dense models they start from."""

  config: config_lib.SweepConfig
  dense: List[Dense]
  rows: List[Row]

  def mean_rows(self) -> List[dict]:
    """One dict per (method, target sparsity): means and stds over seeds."""
    groups = collections.OrderedDict()
    for row in self.rows:
      groups.setdefault((row.method, row.target_sparsity), []).append(row)
    out = []
    for (method, target), rows in groups.items():
      entry = {'method': method, 'target_sparsity': target, 'seeds': len(rows)}
      for field in (
        'sparsity',
        'nonzeros',
        'accuracy',
        'loss',
        'seconds',
        'macs',
        'shrunk_macs',
        'latency_ratio',
        'reconstruction_error',
      ):
        values = [getattr(r, field) for r in rows]
        entry[field] = float(np.mean(values))
        if field in ('accuracy', 'loss'):
          entry[f'{field}_std'] = float(np.std(values))
      out.append(entry)
    return out

  @property
  def dense_accuracy(self) -> float:
    return float(np.mean([d.accuracy for d in self.dense]))

  @property
  def dense_loss(self) -> float:
    return float(np.mean([d.loss for d in self.dense]))


def pareto_frontier(entries: Sequence[dict]) -> List[dict]:
  """The entries no other entry beats on both counts.

  An entry is on the frontier when every entry with at most as many non-zeros
  has a lower accuracy (ties in non-zeros keep the more accurate entry).

  Args:
    entries: dicts with 'nonzeros' and 'accuracy' (e.g. `mean_rows()`).

  Returns:
    The frontier, by increasing non-zeros.
  """
  ordered = sorted(entries, key=lambda e: (e['nonzeros'], -e['accuracy']))
  frontier, best = [], -math.inf
  for entry in ordered:
    if entry['accuracy'] > best:
      frontier.append(entry)
      best = entry['accuracy']
  return frontier


def holds(
  entries: Sequence[dict], dense_accuracy: float, points: float = DROP_POINTS
) -> Dict[str, dict]:
  """Per method: the largest k before accuracy drops by more than `points`.

  Args:
    entries: dicts with 'method', 'target_sparsity', 'accuracy'.
    dense_accuracy: the accuracy the drop is measured from.
    points: the drop, in accuracy points (percent).

  Returns:
    {method: {'holds_to': k or None, 'drops_at': k or None}}: `drops_at` is
    the smallest k whose accuracy is more than `points` below
    `dense_accuracy`, `holds_to` the largest k below it.
  """
  by_method = collections.OrderedDict()
  for e in entries:
    by_method.setdefault(e['method'], []).append(e)
  out = {}
  for method, rows in by_method.items():
    rows = sorted(rows, key=lambda e: e['target_sparsity'])
    drops = [
      e['target_sparsity']
      for e in rows
      if (dense_accuracy - e['accuracy']) * 100 > points
    ]
    drops_at = drops[0] if drops else None
    kept = [
      e['target_sparsity']
      for e in rows
      if drops_at is None or e['target_sparsity'] < drops_at
    ]
    out[method] = {'holds_to': kept[-1] if kept else None, 'drops_at': drops_at}
  return out


def summary(result: SweepResult) -> dict:
  """Everything `write_tables` writes to JSON."""
  means = result.mean_rows()
  return {
    'config': dataclasses.asdict(result.config),
    'dense': [dataclasses.asdict(d) for d in result.dense],
    'dense_accuracy': result.dense_accuracy,
    'dense_loss': result.dense_loss,
    'mean': means,
    'pareto': pareto_frontier(means),
    'holds': holds(means, result.dense_accuracy),
    'rows': [dataclasses.asdict(r) for r in result.rows],
  }


CSV_FIELDS = (
  'method',
  'target_sparsity',
  'sparsity',
  'nonzeros',
  'accuracy',
  'accuracy_std',
  'loss',
  'loss_std',
  'seeds',
  'macs',
  'shrunk_macs',
  'latency_ratio',
  'reconstruction_error',
)


def write_tables(result: SweepResult, out_dir: str) -> List[str]:
  """Writes `sweep.csv` (means over seeds) and `sweep.json` to `out_dir`.

  Returns:
    The two paths.
  """
  os.makedirs(out_dir, exist_ok=True)
  csv_path = os.path.join(out_dir, 'sweep.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
    writer.writeheader()
    for entry in result.mean_rows():
      writer.writerow(
        {
          k: (round(v, 6) if isinstance(v, float) else v)
          for k, v in entry.items()
        }
      )
  json_path = os.path.join(out_dir, 'sweep.json')
  with open(json_path, 'w') as f:
    json.dump(summary(result), f, indent=1)
  return [csv_path, json_path]


def format_table(result: SweepResult) -> str:
  """Accuracy (%) per method (rows) and target sparsity (columns)."""
  means = result.mean_rows()
  targets = sorted({e['target_sparsity'] for e in means})
  methods = list(collections.OrderedDict.fromkeys(e['method'] for e in means))
  width = max([22] + [len(m) + 1 for m in methods])
  cell = {(e['method'], e['target_sparsity']): e['accuracy'] for e in means}
  lines = [
    f'test accuracy (%), mean of {len(result.dense)} seed(s); dense '
    f'{100 * result.dense_accuracy:.2f}'
  ]
  lines.append(
    f'{"method":<{width}}' + ''.join(f'{100 * t:>7g}' for t in targets)
  )
  for method in methods:
    values = [cell.get((method, t)) for t in targets]
    lines.append(
      f'{method:<{width}}'
      + ''.join(
        f'{100 * v:>7.2f}' if v is not None else f'{"-":>7}' for v in values
      )
    )
  lines.append('shrunk multiply-adds (% of stripped) / shrunk latency ratio:')
  for method in methods:
    cells = [
      next(
        (
          f'{100 * e["shrunk_macs"] / max(e["macs"], 1):>6.1f}/'
          f'{e["latency_ratio"]:<5.2f}'
          for e in means
          if (e['method'], e['target_sparsity']) == (method, t)
        ),
        f'{"-":>12}',
      )
      for t in targets
    ]
    lines.append(f'{method:<{width}}' + ' '.join(cells))
  marks = holds(means, result.dense_accuracy)
  lines.append(f'drop of more than {DROP_POINTS:g} points from dense:')
  for method, mark in marks.items():
    lines.append(
      f'  {method:<{width}} holds to {_percent(mark["holds_to"])}, '
      f'drops at {_percent(mark["drops_at"])}'
    )
  return '\n'.join(lines)


def _percent(k) -> str:
  return 'none' if k is None else f'{100 * k:g}%'
