"""The classic pruning study: one dense model, pruned many ways.

    result = sweep.sweep(config.SweepConfig(seeds=(0,)))
    results.write_tables(result, out_dir)

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
sparsity, and their mean over seeds (`graph_prune.study.results`); the
methods and settings are parsed in `graph_prune.study.config`.
"""

import time
from typing import Callable, Optional, Sequence, Tuple

import keras
import numpy as np

from graph_prune import pruned_model as pruned_lib
from graph_prune.study.config import Method
from graph_prune.study.config import parse_method
from graph_prune.study.config import SweepConfig
from graph_prune.study.results import Dense
from graph_prune.study.results import Row
from graph_prune.study.results import SweepResult
from graph_prune.train import datasets
from graph_prune.train import loop
from graph_prune.train import models
from graph_prune.train.summary import count_params

Log = Callable[[str], None]


def _measure(model, pruned, data, seed, method, target, began):
  loss, accuracy = loop.evaluate(pruned, data.x_test, data.y_test)
  counts = count_params(model, pruned)
  return Row(
    seed=seed,
    method=method,
    target_sparsity=target,
    sparsity=loop.overall_sparsity(pruned),
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
  """Prunes the trained `model` once to `sparsity`, without reloop.

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
  run = loop.Run(model, pruned, keras.optimizers.Adam(config.learning_rate))
  # Other batches than the dense training's: the retraining is new data
  # order, from the same examples.
  batches = loop.Batches(
    data.x_train, data.y_train, config.batch_size, seed=seed + 1000
  )
  loop.fit(run, batches, config.retrain_steps, log=None)
  return _measure(model, pruned, data, seed, method.name, sparsity, began)


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
