"""Benchmark: latency of dense vs stripped vs shrunk unit-pruned models.

Usage:
  python bench/shrink_speed.py [--rounds=R] [--batches=1,256] [--accuracy]

Cases: the built-in 1000-1000-500-200 ReLU MLP on 8x8 inputs unit-pruned at
50% and 75%, and the built-in CNN unit-pruned at 50% (its depthwise kernel
and the logits are not pruned). Pruning: `apply_pruning` with
`granularity=unit`, masks by `mask_update` at the end of the schedule (the
smallest-L2-norm units of every kernel); the pruned units' biases are then
zeroed as `unit_params=all` would mask them, so a removed unit outputs
exactly relu(0) = 0. Three variants of each, all `tf.function`s with the
same input signature: the dense Keras model, `graph_prune.strip` and
`graph_prune.shrink`. They run interleaved, the order rotating per round,
each round timing a fixed number of calls; the table has the median and
minimum of rounds and the ratio of medians to dense, beside the ratio of
multiply-adds (shrunk / dense, from the shrink report).

--accuracy also trains the MLP on the embedded digits twice with the
training binary's library (experiment.train, its default schedule): dense
(target_sparsity=0) and gradual unit pruning to 50% of units
(granularity=unit, logits not pruned), and reports both test accuracies.

Writes bench/results/shrink_speed.json.
"""

import os
import tempfile
import time

from absl import app
from absl import flags
import keras
import numpy as np
import results_io  # bench/results_io.py, beside this script
import tensorflow as tf

import graph_prune
from graph_prune.train import experiment
from graph_prune.train import models

_ROUNDS = flags.DEFINE_integer('rounds', 9, 'Timing rounds per variant.')
_BATCHES = flags.DEFINE_list('batches', ['1', '256'], 'Batch sizes.')
_ACCURACY = flags.DEFINE_bool(
  'accuracy', False, 'Also train dense and gradual unit-pruned MLPs.'
)
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'shrink_speed.json'),
  'Where to write the JSON.',
)

CASES = (('mlp', 0.5), ('mlp', 0.75), ('cnn', 0.5))


def _prune(name, sparsity):
  model = models.build(name, (8, 8), 10, seed=0)
  spec = (
    f'target_sparsity={sparsity},granularity=unit,begin_pruning_step=0,'
    'end_pruning_step=1,sparsity_function_end_step=1,'
    'do_not_prune=[logits,depthwise]'
  )
  pruned = graph_prune.apply_pruning(model, spec)
  pruned.mask_update(tf.constant(1, tf.int64))
  _zero_pruned_biases(model, pruned)
  return model, pruned


def _zero_pruned_biases(model, pruned):
  """What unit_params=all does: a pruned unit's bias is masked too."""
  dead = {}
  for weight, mask in zip(pruned.weights, pruned.masks):
    flat = mask.numpy().reshape(-1, mask.shape[-1])
    dead[graph_prune_layer(weight)] = ~flat.any(axis=0)
  for layer in model.layers:
    if layer.name in dead and getattr(layer, 'bias', None) is not None:
      bias = layer.bias.numpy()
      bias[dead[layer.name]] = 0
      layer.bias.assign(bias)


def graph_prune_layer(weight):
  return weight.name.split(':')[0].split('/')[-2]


def _time(fns, x, rounds):
  for fn in fns.values():
    fn(x)
  start = time.perf_counter()
  fns['dense'](x).numpy()
  calls = int(max(3, min(300, 0.2 / max(time.perf_counter() - start, 1e-6))))
  times = {k: [] for k in fns}
  keys = list(fns)
  for r in range(rounds):
    order = keys[r % len(keys) :] + keys[: r % len(keys)]
    for key in order:
      start = time.perf_counter()
      for _ in range(calls):
        out = fns[key](x)
      out.numpy()
      times[key].append((time.perf_counter() - start) / calls)
  return times


def _case(name, sparsity, batches, rounds):
  model, pruned = _prune(name, sparsity)
  spec = pruned.__call__.input_signature
  dense = tf.function(lambda x: model(x, training=False), input_signature=spec)
  stripped = graph_prune.strip(pruned)
  shrunk = graph_prune.shrink(pruned)
  result = shrunk.shrink_report.main
  mac_ratio = result.macs_after / result.macs_before
  rows = []
  rng = np.random.RandomState(0)
  for batch in batches:
    x = tf.constant(rng.rand(batch, 8, 8).astype(np.float32))
    fns = {'dense': dense, 'stripped': stripped, 'shrunk': shrunk}
    times = _time(fns, x, rounds)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows.append(
      {
        'model': name,
        'unit_sparsity': sparsity,
        'batch': batch,
        **{f'{k}_median_s': v for k, v in med.items()},
        **{f'{k}_min_s': float(np.min(v)) for k, v in times.items()},
        'stripped_ratio': med['stripped'] / med['dense'],
        'shrunk_ratio': med['shrunk'] / med['dense'],
        'mac_ratio': mac_ratio,
        'macs_before': result.macs_before,
        'macs_after': result.macs_after,
        'params_before': result.params_before,
        'params_after': result.params_after,
      }
    )
  return rows


def _accuracy():
  common = dict(model='mlp', seed=0, log_every=0, checkpoint_every=0)
  spec = experiment.DEFAULT_HPARAMS.replace(
    'target_sparsity=0.9', 'target_sparsity=0.5'
  )
  runs = {
    'dense': 'target_sparsity=0.0',
    'gradual_unit_50': spec + ',granularity=unit,do_not_prune=[logits]',
  }
  accuracy = {}
  for key, hparams in runs.items():
    with tempfile.TemporaryDirectory() as tmp:
      config = experiment.TrainConfig(
        hparams=hparams, model_dir=os.path.join(tmp, 'run'), **common
      )
      result = experiment.train(config, log=lambda line: None)
      accuracy[key] = float(result.test_accuracy)
  return accuracy


def main(argv):
  del argv
  keras.utils.set_random_seed(0)
  batches = [int(b) for b in _BATCHES.value]
  rows = []
  for name, sparsity in CASES:
    rows += _case(name, sparsity, batches, _ROUNDS.value)
  print(
    f'{"model":<5} {"units":>5} {"batch":>5} {"dense ms":>9} '
    f'{"stripped":>9} {"shrunk":>9} {"strip/d":>8} {"shrunk/d":>8} '
    f'{"MACs":>6}'
  )
  for r in rows:
    print(
      f'{r["model"]:<5} {r["unit_sparsity"]:>5.2f} {r["batch"]:>5} '
      f'{r["dense_median_s"] * 1e3:>9.3f} {r["stripped_median_s"] * 1e3:>9.3f} '
      f'{r["shrunk_median_s"] * 1e3:>9.3f} {r["stripped_ratio"]:>8.3f} '
      f'{r["shrunk_ratio"]:>8.3f} {r["mac_ratio"]:>6.3f}'
    )
  results = {'latency': rows}
  if _ACCURACY.value:
    results['accuracy'] = _accuracy()
    print('test accuracy on the digits:', results['accuracy'])
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
