"""Benchmark: one-shot pruning (`graph_prune.prune_oneshot`) of the digits MLP.

Usage:
  python bench/oneshot.py [--seeds=0,1,2] [--methods=weight,wanda,sparsegpt]
      [--sparsities=0.5,0.7,0.8,0.9,2:4] [--calibration_samples=N]
      [--keep_dense=logits[,dense_1]]
      [--output=bench/results/oneshot.json]

Issue 25's accuracy goal. For each seed it trains the built-in 64-1000-1000-
500-200-10 ReLU MLP (`models.build('mlp')`) dense on the embedded digits
(1437 train / 360 test images) with the training binary's recipe: Adam at
`TrainConfig().learning_rate`, `TrainConfig().batch_size` examples per step,
`TrainConfig().train_steps` steps (`loop.Run` with no pruning, `loop.fit`,
`loop.Batches` seeded by the seed). Then for every method (`prune_option`
weight, wanda, sparsegpt) and every sparsity (a fraction, or N:M as
`sparsity_m_by_n`) it prunes a copy of the dense model
(`keras.models.clone_model` + `set_weights`: sparsegpt writes the weights)
once with `prune_oneshot`, every hidden kernel, the logits left dense
(`do_not_prune=[logits]`; --keep_dense=logits,dense_1 also keeps the 64-pixel
input layer, as the LLM papers keep the embeddings), the training images as
calibration data (all of them unless --calibration_samples), and measures
its test accuracy; no retraining. It prints the accuracy table (per seed and
the median over seeds), the seconds of each `prune_oneshot` call, the goals
(sparsegpt within 0.5 point of dense at 80% and at 2:4, at least 93% at 90%),
and writes the JSON to --output.
"""

import os
import statistics
import time

from absl import app
from absl import flags
import keras
import results_io  # bench/results_io.py, beside this script

import graph_prune
from graph_prune.train import datasets
from graph_prune.train import experiment
from graph_prune.train import loop
from graph_prune.train import models

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Dense model seeds.')
_METHODS = flags.DEFINE_list(
  'methods', ['weight', 'wanda', 'sparsegpt'], 'prune_option values.'
)
_SPARSITIES = flags.DEFINE_list(
  'sparsities',
  ['0.5', '0.7', '0.8', '0.9', '2:4'],
  'Target sparsities, or N:M for sparsity_m_by_n.',
)
_CALIBRATION_SAMPLES = flags.DEFINE_integer(
  'calibration_samples',
  0,
  'Calibration images (the first ones of the training split); 0: all.',
  lower_bound=0,
)
_KEEP_DENSE = flags.DEFINE_list(
  'keep_dense',
  [models.OUTPUT_LAYER],
  'Layers left dense (do_not_prune); e.g. logits,dense_1 also keeps the '
  '64-pixel input layer, as the LLM papers keep embeddings.',
)
_OUTPUT = flags.DEFINE_string(
  'output',
  os.path.join(os.path.dirname(__file__), 'results', 'oneshot.json'),
  'Where to write the JSON.',
)

# Goals of issue 25 for sparsegpt: (sparsity, kind, value).
GOALS = (
  ('0.8', 'drop', 0.5),
  ('0.9', 'least', 93.0),
  ('2:4', 'drop', 0.5),
)


def train_dense(data: datasets.Dataset, seed: int) -> keras.Model:
  """The dense MLP trained as the training binary trains (no pruning)."""
  config = experiment.TrainConfig(seed=seed)
  model = models.build(
    'mlp', data.x_train.shape[1:], data.num_classes, seed=seed
  )
  run = loop.Run(model, None, keras.optimizers.Adam(config.learning_rate))
  batches = loop.Batches(
    data.x_train, data.y_train, config.batch_size, seed=seed
  )
  loop.fit(run, batches, config.train_steps, log=None)
  return model


def hparams(method: str, sparsity: str) -> str:
  target = (
    f'sparsity_m_by_n={sparsity}'
    if ':' in sparsity
    else f'target_sparsity={sparsity}'
  )
  keep = ','.join(_KEEP_DENSE.value)
  return f'prune_option={method},{target},do_not_prune=[{keep}]'


def prune_copy(dense, method, sparsity, calibration, data):
  """(test accuracy, seconds of prune_oneshot, per-weight report)."""
  model = keras.models.clone_model(dense)
  model.set_weights(dense.get_weights())
  began = time.perf_counter()
  pruned = graph_prune.prune_oneshot(
    model,
    calibration,
    hparams(method, sparsity),
    max_examples=len(calibration),
  )
  seconds = time.perf_counter() - began
  _, accuracy = loop.evaluate(pruned, data.x_test, data.y_test)
  report = [
    dict(name=r.name, sparsity=r.sparsity, error=r.error, rows=r.rows)
    for r in pruned.report.oneshot
  ]
  if not report:  # weight: no reconstruction error, only the masks
    report = [
      dict(name=name, sparsity=float(s))
      for name, s in pruned.sparsity().per_weight.items()
    ]
  return accuracy, seconds, report


def _label(sparsity: str) -> str:
  return sparsity if ':' in sparsity else f'{float(sparsity):.0%}'


def _cells(values):
  per_seed = ' / '.join(f'{100 * v:.1f}' for v in values)
  return f'{per_seed} ({100 * statistics.median(values):.1f})'


def print_table(results, seeds) -> None:
  print(
    f'\ntest accuracy %, seeds {" / ".join(map(str, seeds))} (median); '
    f'dense {_cells(results["dense"])}'
  )
  methods = list(results['rows'])
  print('| sparsity | ' + ' | '.join(methods) + ' |')
  print('|---' * (len(methods) + 1) + '|')
  for sparsity in next(iter(results['rows'].values())):
    cells = [_cells(results['rows'][m][sparsity]['accuracy']) for m in methods]
    print(f'| {_label(sparsity)} | ' + ' | '.join(cells) + ' |')
  print('\nseconds per prune_oneshot call, per seed')
  print('| sparsity | ' + ' | '.join(methods) + ' |')
  print('|---' * (len(methods) + 1) + '|')
  for sparsity in next(iter(results['rows'].values())):
    cells = [
      ' / '.join(f'{s:.1f}' for s in results['rows'][m][sparsity]['seconds'])
      for m in methods
    ]
    print(f'| {_label(sparsity)} | ' + ' | '.join(cells) + ' |')


def check_goals(results):
  """One (goal, median value, met) per goal whose row was measured."""
  rows = results['rows'].get('sparsegpt', {})
  dense = 100 * statistics.median(results['dense'])
  checks = []
  for sparsity, kind, value in GOALS:
    if sparsity not in rows:
      continue
    got = 100 * statistics.median(rows[sparsity]['accuracy'])
    if kind == 'drop':
      goal = f'sparsegpt {_label(sparsity)} within {value} of dense'
      checks.append(dict(goal=goal, value=got, met=dense - got <= value))
    else:
      goal = f'sparsegpt {_label(sparsity)} >= {value}%'
      checks.append(dict(goal=goal, value=got, met=got >= value))
  return checks


def main(argv):
  del argv
  seeds = [int(s) for s in _SEEDS.value]
  data = datasets.load_digits()
  calibration = data.x_train
  if _CALIBRATION_SAMPLES.value:
    calibration = calibration[: _CALIBRATION_SAMPLES.value]
  config = experiment.TrainConfig()
  results = dict(
    recipe=dict(
      optimizer='adam',
      learning_rate=config.learning_rate,
      batch_size=config.batch_size,
      train_steps=config.train_steps,
    ),
    calibration_samples=len(calibration),
    keep_dense=list(_KEEP_DENSE.value),
    seeds=seeds,
    dense=[],
    dense_seconds=[],
    rows={
      m: {
        s: dict(accuracy=[], seconds=[], report=[]) for s in _SPARSITIES.value
      }
      for m in _METHODS.value
    },
  )
  for seed in seeds:
    began = time.perf_counter()
    dense = train_dense(data, seed)
    _, accuracy = loop.evaluate(
      lambda x, m=dense: m(x, training=False), data.x_test, data.y_test
    )
    results['dense'].append(accuracy)
    results['dense_seconds'].append(time.perf_counter() - began)
    print(
      f'seed {seed}: dense {100 * accuracy:.2f}% '
      f'({results["dense_seconds"][-1]:.0f} s to train)',
      flush=True,
    )
    for method in _METHODS.value:
      for sparsity in _SPARSITIES.value:
        accuracy, seconds, report = prune_copy(
          dense, method, sparsity, calibration, data
        )
        row = results['rows'][method][sparsity]
        row['accuracy'].append(accuracy)
        row['seconds'].append(seconds)
        row['report'].append(report)
        errors = ' '.join(f'{r["error"]:.3f}' for r in report if 'error' in r)
        print(
          f'  {method:9s} {_label(sparsity):>4s}: {100 * accuracy:6.2f}%  '
          f'prune_oneshot {seconds:5.1f} s'
          + (f'  errors {errors}' if errors else ''),
          flush=True,
        )
  print_table(results, seeds)
  results['goals'] = check_goals(results)
  print()
  for check in results['goals']:
    print(
      f'{check["goal"]}: {check["value"]:.1f}% median, '
      f'{"met" if check["met"] else "MISSED"}'
    )
  results_io.write(_OUTPUT.value, results)


if __name__ == '__main__':
  app.run(main)
