"""The classic pruning study: one dense model, pruned many ways.

    result = sweep.sweep(config.SweepConfig(seeds=(0,)))
    results.write_tables(result, out_dir)

For each seed it trains one dense model (the built-in `mlp` by default) and
then, for every target sparsity k and every method:

* one-shot (`oneshot_*`): masks computed once from the trained weights, no
  retraining: `prune_oneshot(model, calibration, 'target_sparsity=k,...')`
  with `calibration_samples` training examples (`oneshot_stage`); magnitude
  methods ignore them (one `mask_update` at the end of the schedule),
  `oneshot_wanda_layer` ranks |w| * ||x||, `oneshot_sparsegpt_layer` also
  updates the kept weights;
* gradual (`gradual_*`): a copy of the dense model retrained for
  `retrain_steps` steps while contrib's schedule raises the sparsity from 0 to
  k over the first `schedule_fraction` of them (masked retraining).

A method also names the granularity (`weight`: single weights, `unit`: whole
output units, ranked by L2 norm, `blockHxW`: blocks of H x W weights of each
kernel ranked by their mean |w|, contrib's block sparsity) and the scope of
the threshold (`layer`: one per weight, `global`: one over all weights), e.g.
`oneshot_unit_global` or `gradual_block4x4_layer`; instead of a granularity
it may name another criterion of single weights (`config.CRITERIA`: wanda
and sparsegpt one-shot, e.g. `gradual_first_order_gradient_layer` ranks
|w| * g, g google-research's saliency of the weight's movement). The
output layer stays dense (`do_not_prune=[logits]`): pruning units of the
logits would remove classes. The result holds one row per seed, method and
sparsity, and their mean over seeds (`graph_prune.study.results`); the
methods and settings are parsed in `graph_prune.study.config`.
"""

import time
from typing import Callable, Optional, Sequence, Tuple

import keras
import numpy as np

from graph_prune.config import hparams as hparams_lib
from graph_prune.export import shrink as shrink_lib
from graph_prune.model import pruned_model as pruned_lib
from graph_prune.study.config import Method
from graph_prune.study.config import parse_method
from graph_prune.study.config import SweepConfig
from graph_prune.study.results import Dense
from graph_prune.study.results import Row
from graph_prune.study.results import SweepResult
from graph_prune.train import datasets
from graph_prune.train import eta
from graph_prune.train import loop
from graph_prune.train import models
from graph_prune.train import oneshot_stage
from graph_prune.train.summary import count_params

Log = Callable[[str], None]


def _measure(model, pruned, data, seed, method, target, began, latency_batch):
  loss, accuracy = loop.evaluate(pruned, data.x_test, data.y_test)
  counts = count_params(model, pruned)
  seconds = time.perf_counter() - began
  macs, shrunk_macs, latency_ratio = _shrunk_costs(pruned, latency_batch)
  layers = pruned.report.oneshot
  return Row(
    seed=seed,
    method=method,
    target_sparsity=target,
    sparsity=loop.overall_sparsity(pruned),
    nonzeros=counts.nonzeros,
    dense_params=counts.dense_params,
    accuracy=accuracy,
    loss=loss,
    seconds=seconds,
    macs=macs,
    shrunk_macs=shrunk_macs,
    latency_ratio=latency_ratio,
    reconstruction_error=(
      float(np.mean([r.error for r in layers])) if layers else float('nan')
    ),
  )


def _shrunk_costs(pruned, latency_batch):
  """(multiply-adds, shrunk multiply-adds, shrunk / stripped latency)."""
  module = shrink_lib.shrink(
    pruned, latency_batches=(latency_batch,) if latency_batch else ()
  )
  result = module.shrink_report.main
  latency = module.shrink_report.latency
  ratio = latency[0].ratio if latency else float('nan')
  return result.macs_before, result.macs_after, ratio


def prune_once(
  model: keras.Model,
  data: datasets.Dataset,
  method: Method,
  sparsity: float,
  seed: int = 0,
  calibration_samples: int = 512,
):
  """The `PrunedModel` of a one-shot `method` on the trained `model`.

  `calibration_samples` training examples (drawn with `seed`) are the
  calibration data. Under sparsegpt the model's weights change.
  """
  examples = oneshot_stage.calibration_examples(
    data.x_train, calibration_samples, seed
  )
  hparams = hparams_lib.parse_hparams(method.hparams(sparsity))
  return oneshot_stage.prune(model, examples, hparams)


def one_shot(
  model: keras.Model,
  data: datasets.Dataset,
  method: Method,
  sparsity: float,
  seed: int = 0,
  latency_batch: int = 0,
  calibration_samples: int = 512,
) -> Row:
  """Prunes the trained `model` once to `sparsity`, without retraining.

  The weights are restored afterwards (`prune_once` under sparsegpt writes
  them), so the same model serves every one-shot row.
  """
  began = time.perf_counter()
  weights = model.get_weights()
  try:
    pruned = prune_once(
      model, data, method, sparsity, seed, calibration_samples
    )
    return _measure(
      model, pruned, data, seed, method.name, sparsity, began, latency_batch
    )
  finally:
    model.set_weights(weights)


def retrain(
  config: SweepConfig,
  dense_weights: Sequence[np.ndarray],
  data: datasets.Dataset,
  method: Method,
  sparsity: float,
  seed: int = 0,
) -> Tuple[keras.Model, pruned_lib.PrunedModel]:
  """A copy of the dense model retrained while pruned to `sparsity`."""
  model = models.build(
    config.model, data.x_train.shape[1:], data.num_classes, seed=seed
  )
  model.set_weights(dense_weights)
  pruned = pruned_lib.apply_pruning(
    model,
    method.hparams(sparsity, config.schedule_steps, config.pruning_frequency),
  )
  run = loop.Run(model, pruned, keras.optimizers.Adam(config.learning_rate))
  # Other batches than the dense training's: the retraining is new data
  # order, from the same examples.
  batches = loop.Batches(
    data.x_train, data.y_train, config.batch_size, seed=seed + 1000
  )
  loop.fit(run, batches, config.retrain_steps, log=None)
  return model, pruned


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
  model, pruned = retrain(config, dense_weights, data, method, sparsity, seed)
  return _measure(
    model,
    pruned,
    data,
    seed,
    method.name,
    sparsity,
    began,
    config.latency_batch,
  )


def train_dense(
  config: SweepConfig, data: datasets.Dataset, seed: int
) -> Tuple[keras.Model, Dense]:
  """Trains the dense model of one seed."""
  began = time.perf_counter()
  model = models.build(
    config.model, data.x_train.shape[1:], data.num_classes, seed=seed
  )
  run = loop.Run(model, None, keras.optimizers.Adam(config.learning_rate))
  loop.fit(
    run,
    loop.Batches(data.x_train, data.y_train, config.batch_size, seed=seed),
    config.dense_steps,
    log=None,
  )
  loss, accuracy = loop.evaluate(run.forward, data.x_test, data.y_test)
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
  work = _Work(config, methods)
  width = max(len(m.name) for m in methods)
  for seed in config.seeds:
    model, dense = train_dense(config, data, seed)
    result.dense.append(dense)
    work.done('dense', config.dense_steps, dense.seconds)
    log(
      f'seed {seed}: dense {config.model} trained for {config.dense_steps} '
      f'steps in {dense.seconds:.1f} s: test accuracy {dense.accuracy:.4f}, '
      f'loss {dense.loss:.4f}  {work.status()}'
    )
    weights = model.get_weights()
    for method in methods:
      for sparsity in config.sparsities:
        if method.kind == 'oneshot':
          row = one_shot(
            model,
            data,
            method,
            sparsity,
            seed,
            config.latency_batch,
            config.calibration_samples,
          )
          work.done('oneshot', 1, row.seconds)
        else:
          row = gradual(config, weights, data, method, sparsity, seed)
          work.done('retrain', config.retrain_steps, row.seconds)
        result.rows.append(row)
        log(
          f'seed {seed} {row.method:<{width}} k={sparsity:<5g} sparsity '
          f'{row.sparsity:.4f} non-zeros {row.nonzeros:>8d} accuracy '
          f'{row.accuracy:.4f} loss {row.loss:.4f} ({row.seconds:.1f} s)  '
          f'{work.status()}'
        )
  return result


class _Work:
  """What a sweep has left to do, and how long it has taken per unit.

  Units are training steps (dense training and gradual retraining) and
  one-shot rows; retraining steps count at the dense training's speed until
  one has been timed.
  """

  def __init__(self, config: SweepConfig, methods: Sequence[Method]):
    gradual = sum(m.kind != 'oneshot' for m in methods)
    rows = len(config.sparsities) * len(config.seeds)
    self.left = {
      'dense': config.dense_steps * len(config.seeds),
      'retrain': config.retrain_steps * gradual * rows,
      'oneshot': (len(methods) - gradual) * rows,
    }
    self.rows = [0, len(methods) * rows]
    self.spent = {kind: [0.0, 0] for kind in self.left}
    self.began = time.perf_counter()

  def done(self, kind: str, units: int, seconds: float) -> None:
    self.left[kind] -= units
    self.spent[kind][0] += seconds
    self.spent[kind][1] += units
    self.rows[0] += kind != 'dense'

  def status(self) -> str:
    rates = {k: t / n for k, (t, n) in self.spent.items() if n}
    rates.setdefault('retrain', rates.get('dense', 0.0))
    elapsed = time.perf_counter() - self.began
    left = eta.work_left(self.left, rates)
    return (
      f'[{self.rows[0]}/{self.rows[1]} rows, '
      f'{eta.format_duration(elapsed)} elapsed, '
      f'~{eta.format_duration(left)} left]'
    )
