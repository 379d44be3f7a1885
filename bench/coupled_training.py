"""Benchmark: the built-in residual CNN trained with coupled unit pruning.

Usage:
  python bench/coupled_training.py [--train_steps=N] [--rounds=R]
      [--batches=1,256]

Trains `--model=rescnn` on the embedded digits three times with the training
binary's library (`experiment.train`, one seed, its schedule scaled to
`--train_steps`): dense (`target_sparsity=0`); gradual unit pruning of 50%
of every kernel's units on their own (`granularity=unit`); and gradual
coupled pruning of 50% of every coupled group's channels
(`granularity=unit,unit_groups=coupled`). The logits stay dense in both.
Each pruned model is shrunk (`graph_prune.shrink`); the table has test
accuracy, multiply-adds per example (from the shrink report) and the
latency of the shrunk model against the dense one at each batch size:
variants interleaved, the order rotating per round, medians and minima of
rounds, ratios of medians.

Writes bench/results/coupled_training.json.
"""

import os
import tempfile

from absl import app
from absl import flags
import numpy as np
import results_io  # bench/results_io.py, beside this script
import tensorflow as tf
import timing  # bench/timing.py, beside this script

import graph_prune
from graph_prune.train import experiment

_STEPS = flags.DEFINE_integer('train_steps', 1400, 'Training steps per run.')
_ROUNDS = flags.DEFINE_integer('rounds', 9, 'Timing rounds per variant.')
_BATCHES = flags.DEFINE_list('batches', ['1', '256'], 'Batch sizes.')
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'coupled_training.json'),
  'Where to write the JSON.',
)

RUNS = (
  ('dense', 'target_sparsity=0.0'),
  ('unit_layer', 'granularity=unit'),
  ('unit_coupled', 'granularity=unit,unit_groups=coupled'),
)


def _hparams(extra, steps):
  """50% on a schedule over the middle of `steps` (as the binary's default)."""
  if extra.startswith('target_sparsity=0.0'):
    return extra
  begin, end = steps // 7, steps * 5 // 7
  return (
    f'target_sparsity=0.5,begin_pruning_step={begin},'
    f'end_pruning_step={end},sparsity_function_begin_step={begin},'
    f'sparsity_function_end_step={end},pruning_frequency=50,'
    f'do_not_prune=[logits],{extra}'
  )


def _train(extra, steps, tmp):
  config = experiment.TrainConfig(
    model='rescnn',
    hparams=_hparams(extra, steps),
    train_steps=steps,
    seed=0,
    log_every=0,
    checkpoint_every=0,
    model_dir=os.path.join(tmp, extra.replace('=', '_').replace(',', '_')),
  )
  return experiment.train(config, log=lambda line: None)


def main(argv):
  del argv
  steps = _STEPS.value
  results = {'train_steps': steps, 'runs': {}, 'latency': {}}
  fns = {}
  with tempfile.TemporaryDirectory() as tmp:
    for key, extra in RUNS:
      result = _train(extra, steps, tmp)
      row = {'test_accuracy': float(result.test_accuracy)}
      spec = [tf.TensorSpec([None, 8, 8], tf.float32)]
      if key == 'dense':
        fns['dense'] = tf.function(
          lambda x, m=result.model: m(x, training=False), input_signature=spec
        )
      else:
        shrunk = graph_prune.shrink(result.pruned)
        main_report = shrunk.shrink_report.main
        row['macs'] = int(main_report.macs_before)
        row['shrunk_macs'] = int(main_report.macs_after)
        row['macs_ratio'] = row['shrunk_macs'] / row['macs']
        row['groups'] = list(result.pruned.report.unit_groups)
        fns[key] = tf.function(lambda x, f=shrunk: f(x), input_signature=spec)
      results['runs'][key] = row
      print(key, row)
  for batch in [int(b) for b in _BATCHES.value]:
    x = tf.constant(np.random.default_rng(0).random((batch, 8, 8)), tf.float32)
    times = timing.interleaved(fns, x, _ROUNDS.value)
    dense = float(np.median(times['dense']))
    results['latency'][batch] = {
      key: {
        'median_ms': 1e3 * float(np.median(t)),
        'min_ms': 1e3 * float(np.min(t)),
        'ratio': float(np.median(t)) / dense,
      }
      for key, t in times.items()
    }
  dense_accuracy = results['runs']['dense']['test_accuracy']
  print(f'\nrescnn, {steps} steps, 50% of channels (logits dense)')
  header = f'{"run":14} {"acc %":>7} {"MACs ratio":>10}'
  for batch in results['latency']:
    header += f' {"b" + str(batch) + " ms":>10} {"ratio":>6}'
  print(header)
  for key, row in results['runs'].items():
    line = f'{key:14} {100 * row["test_accuracy"]:7.2f}'
    line += f' {row.get("macs_ratio", 1.0):10.3f}'
    for by_key in results['latency'].values():
      t = by_key[key]
      line += f' {t["median_ms"]:10.3f} {t["ratio"]:6.3f}'
    print(line)
  coupled = results['runs']['unit_coupled']['test_accuracy']
  print(f'coupled vs dense accuracy: {100 * (coupled - dense_accuracy):+.2f}')
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
