"""Benchmark: latency of dense vs stripped vs shrunk unit-pruned models.

Usage:
  python bench/shrink_speed.py [--rounds=R] [--batches=1,256] [--accuracy]
      [--cases=mlp_50,mlp_75,cnn_50,rescnn_50,resnet50,mobilenet_v2]
      [--app_batches=1,32] [--app_size=128]

Cases: the built-in 1000-1000-500-200 ReLU MLP on 8x8 inputs unit-pruned at
50% and 75%, and the built-in CNN unit-pruned at 50% (its depthwise kernel
and the logits are not pruned); Keras ResNet50 and MobileNetV2
(weights=None, --app_size inputs, logits) with 50% of every channel group's
channels zeroed (`keras_channels.zero_groups`: the groups of coupled layers
from the shrink report of the unzeroed model, every other conv alone; the
channels of lowest group L2 norm; kernels, biases and BatchNorm scale and
shift), timed at --app_batches; and the built-in residual CNN (`rescnn`,
8x8 inputs) zeroed the same way, timed at --batches. Pruning of the MLP and
the CNN: `apply_pruning` with
`granularity=unit`, masks by `mask_update` at the end of the schedule (the
smallest-L2-norm units of every kernel); `unit_params=all` (the default)
masks the pruned units' biases too, so a removed unit outputs exactly
relu(0) = 0. Three variants of each, all `tf.function`s with the same input
signature: the dense Keras model, `graph_prune.strip` and
`graph_prune.shrink`; for the CNN a fourth, the same architecture built by
hand with the shrunk widths (random weights): the floor shrinking can reach.
They run interleaved (`timing.interleaved`), the order rotating per round,
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

from absl import app
from absl import flags
import keras
import keras_channels  # bench/keras_channels.py, beside this script
import numpy as np
import results_io  # bench/results_io.py, beside this script
import tensorflow as tf
import timing  # bench/timing.py, beside this script

import graph_prune
from graph_prune.train import experiment
from graph_prune.train import models

_ROUNDS = flags.DEFINE_integer('rounds', 9, 'Timing rounds per variant.')
_BATCHES = flags.DEFINE_list('batches', ['1', '256'], 'Batch sizes.')
_ACCURACY = flags.DEFINE_bool(
  'accuracy', False, 'Also train dense and gradual unit-pruned MLPs.'
)
_CASES = flags.DEFINE_list(
  'cases',
  ['mlp_50', 'mlp_75', 'cnn_50', 'rescnn_50', 'resnet50', 'mobilenet_v2'],
  'Cases to run.',
)
_APP_BATCHES = flags.DEFINE_list(
  'app_batches', ['1', '32'], 'Batch sizes of ResNet50 and MobileNetV2.'
)
_APP_SIZE = flags.DEFINE_integer(
  'app_size', 128, 'Input height and width of ResNet50 and MobileNetV2.'
)
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'shrink_speed.json'),
  'Where to write the JSON.',
)

CASES = {
  'mlp_50': ('mlp', 0.5),
  'mlp_75': ('mlp', 0.75),
  'cnn_50': ('cnn', 0.5),
}
APPS = {
  'resnet50': lambda size: keras.applications.ResNet50(
    weights=None, input_shape=(size, size, 3), classifier_activation=None
  ),
  'mobilenet_v2': lambda size: keras.applications.MobileNetV2(
    weights=None, input_shape=(size, size, 3), classifier_activation=None
  ),
  # The built-in residual CNN on 8x8 inputs, timed at --batches.
  'rescnn_50': lambda size: models.build('rescnn', (8, 8), 10, seed=0),
}


def _prune(name, sparsity):
  model = models.build(name, (8, 8), 10, seed=0)
  spec = (
    f'target_sparsity={sparsity},granularity=unit,begin_pruning_step=0,'
    'end_pruning_step=1,sparsity_function_end_step=1,'
    'do_not_prune=[logits,depthwise]'
  )
  pruned = graph_prune.apply_pruning(model, spec)
  # unit_params=all (the default) masks a pruned unit's bias too, so a
  # removed ReLU unit emits exactly 0.
  pruned.mask_update(tf.constant(1, tf.int64))
  return model, pruned


def _by_hand(name, shrunk):
  """The CNN built with the shrunk widths (what removing units by hand
  gives, the floor of what shrinking can reach), or None for other models."""
  if name != 'cnn':
    return None
  widths = [layer.units_after for layer in shrunk.shrink_report.main.layers]
  conv, pointwise, dense = widths[0], widths[1], widths[2]
  layers = keras.layers
  model = keras.Sequential(
    [
      keras.Input((8, 8)),
      layers.Reshape((8, 8, 1)),
      layers.Conv2D(conv, 3, padding='same', activation='relu'),
      layers.DepthwiseConv2D(3, padding='same', activation='relu'),
      layers.Conv2D(pointwise, 1, activation='relu'),
      layers.MaxPooling2D(2),
      layers.Flatten(),
      layers.Dense(dense, activation='relu'),
      layers.Dense(10),
    ]
  )
  return model


def _case(name, sparsity, batches, rounds):
  model, pruned = _prune(name, sparsity)
  return _measure(name, sparsity, model, pruned, batches, rounds, (8, 8))


def _app_case(name, batches, rounds, size):
  """A Keras model with half of every channel group zeroed."""
  model = APPS[name](size)
  shape = tuple(model.input.shape[1:])
  signature = [tf.TensorSpec([None, *shape], tf.float32)]
  spec = 'target_sparsity=0.5,granularity=unit'
  # Masks of ones until a mask update: shrink sees exactly the zeros below.
  unzeroed = graph_prune.shrink(
    graph_prune.apply_pruning(model, spec, input_signature=signature)
  )
  keras_channels.zero_groups(model, unzeroed.shrink_report)
  pruned = graph_prune.apply_pruning(model, spec, input_signature=signature)
  return _measure(name, 0.5, model, pruned, batches, rounds, shape, min_calls=1)


def _measure(name, sparsity, model, pruned, batches, rounds, shape, **kw):
  spec = pruned.__call__.input_signature
  dense = tf.function(lambda x: model(x, training=False), input_signature=spec)
  stripped = graph_prune.strip(pruned)
  shrunk = graph_prune.shrink(pruned)
  result = shrunk.shrink_report.main
  mac_ratio = result.macs_after / result.macs_before
  hand = _by_hand(name, shrunk)
  by_hand = None
  if hand is not None:
    by_hand = tf.function(
      lambda x: hand(x, training=False), input_signature=spec
    )
  rows = []
  rng = np.random.RandomState(0)
  for batch in batches:
    x = tf.constant(rng.rand(batch, *shape).astype(np.float32))
    fns = {'dense': dense, 'stripped': stripped, 'shrunk': shrunk}
    if by_hand is not None:
      fns['by_hand'] = by_hand
    # Shrinking must not change the stripped model's outputs.
    check = np.abs(shrunk(x).numpy() - stripped(x).numpy()).max()
    scale = np.abs(stripped(x).numpy()).max()
    times = timing.interleaved(fns, x, rounds, **kw)
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
        'max_abs_diff': float(check),
        'output_scale': float(scale),
        'coupled_groups': len(result.coupled),
      }
    )
    if by_hand is not None:
      rows[-1]['by_hand_ratio'] = med['by_hand'] / med['dense']
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
  unknown = sorted(set(_CASES.value) - set(CASES) - set(APPS))
  if unknown:
    raise app.UsageError(
      f'Unknown --cases {unknown}; choose from {[*CASES, *APPS]}.'
    )
  rows = []
  for case in _CASES.value:
    if case in CASES:
      rows += _case(*CASES[case], batches, _ROUNDS.value)
    else:
      app_batches = [int(b) for b in _APP_BATCHES.value]
      if case == 'rescnn_50':
        app_batches = batches
      rows += _app_case(case, app_batches, _ROUNDS.value, _APP_SIZE.value)
  print(
    f'{"model":<12} {"units":>5} {"batch":>5} {"dense ms":>9} '
    f'{"stripped":>9} {"shrunk":>9} {"strip/d":>8} {"shrunk/d":>8} '
    f'{"min s/d":>8} {"MACs":>6} {"diff/scale":>10}'
  )
  for r in rows:
    print(
      f'{r["model"]:<12} {r["unit_sparsity"]:>5.2f} {r["batch"]:>5} '
      f'{r["dense_median_s"] * 1e3:>9.3f} {r["stripped_median_s"] * 1e3:>9.3f} '
      f'{r["shrunk_median_s"] * 1e3:>9.3f} {r["stripped_ratio"]:>8.3f} '
      f'{r["shrunk_ratio"]:>8.3f} '
      f'{r["shrunk_min_s"] / r["dense_min_s"]:>8.3f} {r["mac_ratio"]:>6.3f} '
      f'{r["max_abs_diff"] / max(r["output_scale"], 1e-30):>10.2e}'
    )
  for r in rows:
    if 'by_hand_ratio' in r:
      print(
        f'{r["model"]} batch {r["batch"]}: built by hand with the shrunk '
        f'widths {r["by_hand_ratio"]:.3f} x dense (shrunk '
        f'{r["shrunk_ratio"]:.3f})'
      )
  results = {'latency': rows}
  if _ACCURACY.value:
    results['accuracy'] = _accuracy()
    print('test accuracy on the digits:', results['accuracy'])
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
