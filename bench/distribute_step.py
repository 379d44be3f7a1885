"""Benchmark: a distributed training step at 1, 2 and 4 logical CPU devices.

Usage:
  python bench/distribute_step.py [--steps=N] [--repeats=R] [--rounds=K]
      [--batch=B]

For a 784-1000-1000-500-200-10 ReLU MLP at a fixed global batch, times one
training step (`graph_prune.train.strategies.make_train_step`: forward,
backward, gradient all-reduce, Adam, `conditional_mask_update` at
pruning_frequency 10) with MirroredStrategy over 1, 2 and 4 logical CPU
devices and with no strategy, for the pruned model and for the dense one (the
same step without masks). Prints ms/step, the ratio to one device and the
ratio of pruned to dense; writes bench/results/distribute_step.json.

Each device count runs in its own process (logical devices are fixed when
TensorFlow starts, and two MirroredStrategies of different sizes in one
process collide on collective group keys); a process interleaves its dense
and pruned variants, and the device counts are run in turn for --rounds
rounds, so that machine noise hits them alike. The logical devices share the
machine's cores: the ratios measure the cost of the strategy, not a speed-up.
Wall and CPU time (all threads of the process) are both reported; on a shared
machine CPU time is the steadier of the two.

TensorFlow and graph_prune are imported inside the functions: a process must
split the CPU into logical devices before TensorFlow initializes.
"""
# pylint: disable=g-import-not-at-top

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import results_io  # bench/results_io.py, beside this script

_STEPS = flags.DEFINE_integer(
  'steps', 30, 'Timed steps per variant and repeat.'
)
_REPEATS = flags.DEFINE_integer(
  'repeats', 3, 'Interleaved repeats per process.'
)
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Rounds over the device counts.')
_BATCH = flags.DEFINE_integer('batch', 256, 'Global batch size.')
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'distribute_step.json'),
  'JSON output path.',
)
_DEVICES_FLAG = flags.DEFINE_integer(
  'devices', None, 'Internal: time this many devices only, write --times_out.'
)
_TIMES_OUT = flags.DEFINE_string('times_out', None, 'Internal.')

_HIDDEN = [1000, 1000, 500, 200]
_DEVICES = (1, 2, 4)
_SPEC = (
  'target_sparsity=0.9,pruning_frequency=10,sparsity_function_end_step=100000'
)


class _Dense:
  """The unpruned model behind the PrunedModel interface the step uses."""

  def __init__(self, model):
    self._model = model

  def __call__(self, x, training=None):
    return self._model(x, training=bool(training))

  def conditional_mask_update(self, step):
    del step
    import tensorflow as tf

    return tf.constant(False)


def _variant(strategy, pruned_model, x, y):
  """A zero-argument callable running one step, and the step's optimizer."""
  import keras

  import graph_prune
  from graph_prune.train import strategies

  with strategy.scope():
    keras.utils.set_random_seed(0)
    layers = [keras.Input((784,))]
    layers += [keras.layers.Dense(h, activation='relu') for h in _HIDDEN]
    layers.append(keras.layers.Dense(10))
    model = keras.Sequential(layers)
    forward = (
      graph_prune.apply_pruning(model, _SPEC) if pruned_model else _Dense(model)
    )
    optimizer = keras.optimizers.Adam(1e-4)
  loss = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=None
  )
  step = strategies.make_train_step(
    strategy, forward, model.trainable_variables, optimizer, loss, _BATCH.value
  )
  inputs = strategies.distribute_batch(strategy, x, y)
  return lambda: step(*inputs)[0]


def _time(step, n):
  """(wall, CPU) seconds per step; CPU time sums the process's threads and
  suffers less from other processes on a shared machine."""
  step().numpy()
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(n):
    loss = step()
  loss.numpy()
  return ((time.perf_counter() - wall) / n, (time.process_time() - cpu) / n)


def _child(num_devices):
  """Times the variants of one device count.

  Writes {variant: {'wall': [seconds per step], 'cpu': [...]}} to
  --times_out, one entry per repeat.
  """
  from graph_prune.train import strategies

  devices = strategies.configure_cpu_devices(num_devices)  # before any op
  import numpy as np
  import tensorflow as tf

  rng = np.random.RandomState(0)
  x = rng.standard_normal((_BATCH.value, 784)).astype(np.float32)
  y = rng.randint(0, 10, _BATCH.value).astype(np.int32)
  strategies = {
    f'mirrored_{num_devices}': tf.distribute.MirroredStrategy(devices)
  }
  if num_devices == 1:
    strategies['none'] = strategies.make_strategy('default')
  variants = {}
  for name, strategy in strategies.items():
    for kind in ('dense', 'pruned'):
      variants[f'{name}/{kind}'] = _variant(strategy, kind == 'pruned', x, y)
  times = {k: {'wall': [], 'cpu': []} for k in variants}
  for _ in range(_REPEATS.value):
    for key, step in variants.items():
      wall, cpu = _time(step, _STEPS.value)
      times[key]['wall'].append(wall)
      times[key]['cpu'].append(cpu)
  with open(_TIMES_OUT.value, 'w') as f:
    json.dump(times, f)


def main(argv):
  del argv
  if _DEVICES_FLAG.value:
    _child(_DEVICES_FLAG.value)
    return
  times = {}
  load_before = os.getloadavg()[0]
  for _ in range(_ROUNDS.value):
    for n in _DEVICES:
      with tempfile.NamedTemporaryFile(suffix='.json') as out:
        subprocess.run(
          [
            sys.executable,
            __file__,
            f'--devices={n}',
            f'--times_out={out.name}',
            f'--steps={_STEPS.value}',
            f'--repeats={_REPEATS.value}',
            f'--batch={_BATCH.value}',
          ],
          check=True,
          timeout=1800,
          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
        )
        with open(out.name) as f:
          for key, clocks in json.load(f).items():
            for clock, seconds in clocks.items():
              times.setdefault((key, clock), []).extend(seconds)
  median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}

  results = {
    'model': 'mlp_784_' + '_'.join(map(str, _HIDDEN)) + '_10',
    'global_batch': _BATCH.value,
    'steps': _STEPS.value,
    'repeats': _REPEATS.value,
    'rounds': _ROUNDS.value,
    'hparams': _SPEC,
    'cpu_cores': os.cpu_count(),
    'load_average': [load_before, os.getloadavg()[0]],
    'variants': {},
  }
  print(
    f'{"strategy":<12} {"model":<7} {"wall ms":>8} {"x 1 dev":>8} '
    f'{"x dense":>8} {"cpu ms":>8} {"x 1 dev":>8} {"x dense":>8}'
  )
  keys = sorted(
    {k for k, _ in median}, key=lambda k: (k.startswith('mirrored'), k)
  )
  for key in keys:
    name, kind = key.split('/')
    row = {}
    for clock in ('wall', 'cpu'):
      seconds = median[(key, clock)]
      row[f'{clock}_ms_per_step'] = 1e3 * seconds
      row[f'{clock}_ratio_to_1_device'] = (
        seconds / median[(f'mirrored_1/{kind}', clock)]
      )
      row[f'{clock}_ratio_to_dense'] = (
        seconds / median[(f'{name}/dense', clock)]
      )
    results['variants'][key] = row
    print(
      f'{name:<12} {kind:<7}'
      + ''.join(
        f' {row[f"{c}_ms_per_step"]:8.2f} {row[f"{c}_ratio_to_1_device"]:8.3f}'
        f' {row[f"{c}_ratio_to_dense"]:8.3f}'
        for c in ('wall', 'cpu')
      )
    )
  print(
    f'load average {load_before:.1f} before, '
    f'{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores'
  )
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
