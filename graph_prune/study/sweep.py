"""The classic pruning study: one dense model, pruned many ways.

    result = study.sweep(study.SweepConfig(seeds=(0,)))
    study.write_tables(result, out_dir)

For each seed it trains one dense model (the built-in `mlp` by default) and
then, for every target sparsity k and every method:

* one-shot (`oneshot_*`): masks computed once from the trained weights, no
  retraining: `apply_pruning(model, 'target_sparsity=k,...')` and one
  `mask_update` at the end of the schedule;
* gradual (`gradual_*`): a copy of the dense model retrained for
  `retrain_steps` steps while contrib's schedule raises the sparsity from 0 to
  k over the first `schedule_fraction` of them (masked retraining).

A method also names the granularity (`weight`: single weights, `unit`: whole
output units, ranked by L2 norm, `blockHxW`: blocks of H x W weights of each
kernel ranked by their mean |w|, contrib's block sparsity) and the scope of
the threshold (`layer`: one per weight, `global`: one over all weights), e.g.
`oneshot_unit_global` or `gradual_block4x4_layer`. The
output layer stays dense (`do_not_prune=[logits]`): pruning units of the
logits would remove classes. The result holds one row per seed, method and
sparsity, and their mean over seeds.
"""

import collections
import csv
import dataclasses
import json
import math
import os
import re
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from graph_prune import errors
from graph_prune import pruned_model as pruned_lib
from graph_prune.train import datasets
from graph_prune.train import loop as training
from graph_prune.train import models
from graph_prune.train import run_report as report

SPARSITIES = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
KINDS = ('oneshot', 'gradual')
GRANULARITIES = ('weight', 'unit', 'blockHxW')
_BLOCK = re.compile(r'block([1-9][0-9]*)x([1-9][0-9]*)')  # blockHxW
SCOPES = ('layer', 'global')
DEFAULT_METHODS = (
  'oneshot_weight_layer',
  'oneshot_weight_global',
  'oneshot_unit_layer',
  'oneshot_unit_global',
  'gradual_weight_layer',
  'gradual_weight_global',
)
# A drop of more than this many accuracy points (against the dense model)
# ends the range a method "holds".
DROP_POINTS = 2.0

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Method:
  """How a sweep prunes: kind, granularity and threshold scope."""

  kind: str
  granularity: str
  scope: str

  @property
  def name(self) -> str:
    return f'{self.kind}_{self.granularity}_{self.scope}'

  @property
  def block_dims(self) -> Optional[Tuple[int, int]]:
    """(height, width) for a `blockHxW` granularity, else None."""
    match = _BLOCK.fullmatch(self.granularity)
    return (int(match.group(1)), int(match.group(2))) if match else None

  def hparams(
    self, sparsity: float, schedule_steps: int = 1, frequency: int = 1
  ) -> str:
    """The pruning spec reaching `sparsity` at step `schedule_steps`."""
    blocks = self.block_dims
    granularity = (
      f'granularity=weight,block_height={blocks[0]},block_width={blocks[1]}'
      if blocks
      else f'granularity={self.granularity}'
    )
    return (
      f'name=sweep,target_sparsity={float(sparsity)!r},'
      f'{granularity},pruning_scope={self.scope},'
      f'do_not_prune=[{models.OUTPUT_LAYER}],'
      f'begin_pruning_step=0,end_pruning_step={schedule_steps},'
      f'sparsity_function_begin_step=0,'
      f'sparsity_function_end_step={schedule_steps},'
      f'pruning_frequency={frequency}'
    )


def parse_method(name: str) -> Method:
  """Parses 'KIND_GRANULARITY_SCOPE', e.g. 'gradual_weight_global'.

  Raises:
    errors.SweepConfigError: naming the bad part and the choices.
  """
  parts = name.strip().split('_')
  valid = len(parts) == 3 and (
    parts[0] in KINDS
    and parts[2] in SCOPES
    and (parts[1] in ('weight', 'unit') or _BLOCK.fullmatch(parts[1]))
  )
  if not valid:
    raise errors.SweepConfigError(
      f'Unknown method {name!r}; a method is KIND_GRANULARITY_SCOPE with '
      f'KIND in {KINDS}, GRANULARITY in {GRANULARITIES} (e.g. block4x4), '
      f'SCOPE in {SCOPES}, e.g. gradual_weight_global.'
    )
  return Method(*parts)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The settings of a sweep (the `sparsity_sweep` binary's flags).

  Attributes:
    methods: method names (see `parse_method`).
    sparsities: target sparsities, each in [0, 1).
    seeds: one dense model and one set of rows per seed.
    model: the built-in model.
    data: '' for the embedded digits, an `.npz` or an MNIST IDX folder.
    dense_steps: training steps of the dense model.
    retrain_steps: steps of each gradual (masked) retraining.
    schedule_fraction: the part of `retrain_steps` over which the sparsity
      rises; the rest fine-tunes with fixed masks.
    pruning_frequency: steps between mask updates while retraining.
    batch_size: examples per step.
    learning_rate: Adam's learning rate, for both training and retraining.
  """

  methods: Tuple[str, ...] = DEFAULT_METHODS
  sparsities: Tuple[float, ...] = SPARSITIES
  seeds: Tuple[int, ...] = (0,)
  model: str = 'mlp'
  data: str = ''
  dense_steps: int = 1500
  retrain_steps: int = 600
  schedule_fraction: float = 0.6
  pruning_frequency: int = 20
  batch_size: int = 64
  learning_rate: float = 1e-3

  def __post_init__(self):
    for name in self.methods:
      parse_method(name)
    if not self.methods or not self.sparsities or not self.seeds:
      raise errors.SweepConfigError(
        'methods, sparsities and seeds must each name at least one value.'
      )
    for s in self.sparsities:
      if not 0.0 <= s < 1.0:
        raise errors.SweepConfigError(
          f'Sparsity {s} is outside [0, 1); pass e.g. 0.9 for 90%.'
        )
    models.check_name(self.model)
    for name in (
      'dense_steps',
      'retrain_steps',
      'pruning_frequency',
      'batch_size',
    ):
      if getattr(self, name) < 1:
        raise errors.SweepConfigError(
          f'{name}={getattr(self, name)}; pass a value >= 1.'
        )
    if not 0.0 < self.schedule_fraction <= 1.0:
      raise errors.SweepConfigError(
        f'schedule_fraction={self.schedule_fraction} is outside (0, 1].'
      )

  @property
  def schedule_steps(self) -> int:
    """The step the retraining schedule reaches its target at."""
    steps = max(1, int(round(self.retrain_steps * self.schedule_fraction)))
    # The last update must fall on this step: a multiple of the frequency.
    return max(self.pruning_frequency, steps - steps % self.pruning_frequency)


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

  config: SweepConfig
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
      for field in ('sparsity', 'nonzeros', 'accuracy', 'loss', 'seconds'):
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


def _measure(model, pruned, data, seed, method, target, began):
  loss, accuracy = training.evaluate(pruned, data.x_test, data.y_test)
  counts = report.count_params(model, pruned)
  return Row(
    seed=seed,
    method=method,
    target_sparsity=target,
    sparsity=training.overall_sparsity(pruned),
    nonzeros=counts.nonzeros,
    dense_params=counts.dense_params,
    accuracy=accuracy,
    loss=loss,
    seconds=time.perf_counter() - began,
  )


def one_shot(
  model: keras.Model,
  data: datasets.Dataset,
  method: Method,
  sparsity: float,
  seed: int = 0,
) -> Row:
  """Prunes the trained `model` once to `sparsity`, without retraining.

  The weights are left as they are (only the new masks change), so the same
  model serves every one-shot row.
  """
  began = time.perf_counter()
  pruned = pruned_lib.apply_pruning(model, method.hparams(sparsity))
  pruned.mask_update(1)
  return _measure(model, pruned, data, seed, method.name, sparsity, began)


def gradual(
  config: SweepConfig,
  dense_weights: Sequence[np.ndarray],
  data: datasets.Dataset,
  method: Method,
  sparsity: float,
  seed: int = 0,
) -> Row:
  """Retrains a copy of the dense model while pruning it to `sparsity`."""
  began = time.perf_counter()
  model = models.build(
    config.model, data.x_train.shape[1:], data.num_classes, seed=seed
  )
  model.set_weights(dense_weights)
  pruned = pruned_lib.apply_pruning(
    model,
    method.hparams(sparsity, config.schedule_steps, config.pruning_frequency),
  )
  run = training.Run(model, pruned, keras.optimizers.Adam(config.learning_rate))
  # Other batches than the dense training's: the retraining is new data
  # order, from the same examples.
  batches = training.Batches(
    data.x_train, data.y_train, config.batch_size, seed=seed + 1000
  )
  training.fit(run, batches, config.retrain_steps, log=None)
  return _measure(model, pruned, data, seed, method.name, sparsity, began)


def train_dense(
  config: SweepConfig, data: datasets.Dataset, seed: int
) -> Tuple[keras.Model, Dense]:
  """Trains the dense model of one seed."""
  began = time.perf_counter()
  model = models.build(
    config.model, data.x_train.shape[1:], data.num_classes, seed=seed
  )
  run = training.Run(model, None, keras.optimizers.Adam(config.learning_rate))
  training.fit(
    run,
    training.Batches(data.x_train, data.y_train, config.batch_size, seed=seed),
    config.dense_steps,
    log=None,
  )
  loss, accuracy = training.evaluate(run.forward, data.x_test, data.y_test)
  return model, Dense(
    seed=seed,
    accuracy=accuracy,
    loss=loss,
    params=model.count_params(),
    seconds=time.perf_counter() - began,
  )


def sweep(config: SweepConfig, log: Optional[Log] = print) -> SweepResult:
  """Runs the whole study.

  Args:
    config: the settings.
    log: called with one line per dense model and per row; None is silent.

  Returns:
    A `SweepResult`.

  Raises:
    DataError: the data path is missing or malformed.
  """
  log = log or (lambda line: None)
  data = datasets.load(config.data)
  methods = [parse_method(m) for m in config.methods]
  result = SweepResult(config=config, dense=[], rows=[])
  for seed in config.seeds:
    model, dense = train_dense(config, data, seed)
    result.dense.append(dense)
    log(
      f'seed {seed}: dense {config.model} trained for {config.dense_steps} '
      f'steps in {dense.seconds:.1f} s: test accuracy {dense.accuracy:.4f}, '
      f'loss {dense.loss:.4f}'
    )
    weights = model.get_weights()
    for method in methods:
      for sparsity in config.sparsities:
        if method.kind == 'oneshot':
          row = one_shot(model, data, method, sparsity, seed)
        else:
          row = gradual(config, weights, data, method, sparsity, seed)
        result.rows.append(row)
        log(
          f'seed {seed} {row.method:<22} k={sparsity:<5g} sparsity '
          f'{row.sparsity:.4f} non-zeros {row.nonzeros:>8d} accuracy '
          f'{row.accuracy:.4f} loss {row.loss:.4f} ({row.seconds:.1f} s)'
        )
  return result


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
  cell = {(e['method'], e['target_sparsity']): e['accuracy'] for e in means}
  lines = [
    f'test accuracy (%), mean of {len(result.dense)} seed(s); dense '
    f'{100 * result.dense_accuracy:.2f}'
  ]
  lines.append(f'{"method":<22}' + ''.join(f'{100 * t:>7g}' for t in targets))
  for method in methods:
    values = [cell.get((method, t)) for t in targets]
    lines.append(
      f'{method:<22}'
      + ''.join(
        f'{100 * v:>7.2f}' if v is not None else f'{"-":>7}' for v in values
      )
    )
  marks = holds(means, result.dense_accuracy)
  lines.append(f'drop of more than {DROP_POINTS:g} points from dense:')
  for method, mark in marks.items():
    lines.append(
      f'  {method:<22} holds to {_percent(mark["holds_to"])}, '
      f'drops at {_percent(mark["drops_at"])}'
    )
  return '\n'.join(lines)


def _percent(k) -> str:
  return 'none' if k is None else f'{100 * k:g}%'
