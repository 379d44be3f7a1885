"""Benchmark: training-step cost of pruning, and the cost of apply_pruning.

Usage:
  python bench/train_overhead.py [--steps=N] [--repeats=R] [--skip_resnet]
      [--models=mlp_1000_1000_500_200,mlp_4096x3]

For a 784-1000-1000-500-200-10 ReLU MLP and a 784-4096-4096-4096-10 MLP at
batch 256, times one training step (forward, backward, Adam) of the dense
model and of the pruned model with the mask update called every step at
pruning_frequency 1, 10 and 100, interleaving the variants so that machine
noise hits them alike, and prints the ratios to dense of the median and of
the minimum over rounds (the minimum is the estimate least disturbed by other
processes on a shared machine). Then times
`apply_pruning` on Keras ResNet50 (weights=None) against tracing the same
model. Writes bench/results/train_overhead.json.
"""

import os
import time

from absl import app
from absl import flags
import keras
import numpy as np
import results_io  # bench/results_io.py, beside this script
import step_timing  # bench/step_timing.py
import tensorflow as tf

import graph_prune

_STEPS = flags.DEFINE_integer('steps', 30, 'Timed steps per variant and round.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Interleaved rounds.')
_SKIP_RESNET = flags.DEFINE_bool('skip_resnet', False, 'Skip ResNet50.')
_MODEL_NAMES = flags.DEFINE_list(
  'models',
  ['mlp_1000_1000_500_200', 'mlp_4096x3'],
  'MLPs to time (names in _MODELS).',
)
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'train_overhead.json'),
  'JSON output path.',
)

_MODELS = {
  'mlp_1000_1000_500_200': [1000, 1000, 500, 200],
  'mlp_4096x3': [4096, 4096, 4096],
}
_BATCH = 256


def _mlp(hidden, seed):
  keras.utils.set_random_seed(seed)
  layers = [keras.Input((784,))]
  layers += [keras.layers.Dense(h, activation='relu') for h in hidden]
  layers.append(keras.layers.Dense(10))
  return keras.Sequential(layers)


def _step_fn(model, forward, pruned):
  optimizer = keras.optimizers.Adam(1e-4)
  optimizer.build(model.trainable_variables)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, forward(x))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    if pruned is not None:
      pruned.conditional_mask_update(optimizer.iterations)
    return loss

  return step


def bench_mlp(hidden):
  rng = np.random.RandomState(0)
  x = tf.constant(rng.standard_normal((_BATCH, 784)).astype(np.float32))
  y = tf.constant(rng.randint(0, 10, _BATCH).astype(np.int32))
  variants = {}
  model = _mlp(hidden, 0)
  variants['dense'] = _step_fn(model, model, None)
  for frequency in (1, 10, 100):
    model = _mlp(hidden, 0)
    pruned = graph_prune.apply_pruning(
      model,
      f'target_sparsity=0.9,pruning_frequency={frequency},'
      'sparsity_function_end_step=1000000',
    )
    variants[f'freq_{frequency}'] = _step_fn(model, pruned, pruned)
  return step_timing.interleaved(variants, (x, y), _STEPS.value, _REPEATS.value)


def bench_resnet():
  model = keras.applications.ResNet50(weights=None)
  signature = [tf.TensorSpec([None, 224, 224, 3], tf.float32)]
  start = time.perf_counter()
  tf.function(
    lambda x: model(x, training=False), input_signature=signature
  ).get_concrete_function()
  trace = time.perf_counter() - start
  start = time.perf_counter()
  pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
  apply = time.perf_counter() - start
  return {
    'trace_s': trace,
    'apply_pruning_s': apply,
    'ratio': apply / trace,
    'masked_weights': len(pruned.masks),
  }


def main(argv):
  del argv
  results = {'batch': _BATCH, 'steps': _STEPS.value, 'repeats': _REPEATS.value}
  print(
    f'{"model":<24} {"variant":<10} {"ms/step":>9} {"x dense":>8} '
    f'{"min ms":>9} {"x dense":>8}   (median and minimum over rounds)'
  )
  for name in _MODEL_NAMES.value:
    if name not in _MODELS:
      raise app.UsageError(
        f'--models: unknown model {name!r}; choose from {", ".join(_MODELS)}.'
      )
    hidden = _MODELS[name]
    results[name] = bench_mlp(hidden)
    for key, row in results[name].items():
      print(
        f'{name:<24} {key:<10} {row["ms_per_step"]:9.2f} '
        f'{row["ratio_to_dense"]:8.3f} {row["min_ms_per_step"]:9.2f} '
        f'{row["min_ratio_to_dense"]:8.3f}'
      )
  if not _SKIP_RESNET.value:
    results['resnet50'] = r = bench_resnet()
    print(
      f'\nResNet50: trace {r["trace_s"]:.2f} s, apply_pruning '
      f'{r["apply_pruning_s"]:.2f} s ({r["ratio"]:.2f}x trace), '
      f'{r["masked_weights"]} weights masked'
    )
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
