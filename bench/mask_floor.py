"""Benchmark: the cost of `weight * mask` itself, by hand, vs graph_prune.

Usage:
  python bench/mask_floor.py [--steps=30] [--repeats=15]

The 784-1000-1000-500-200-10 ReLU MLP of bench/train_overhead.py, written as a
`tf.Module` with raw variables, trained with Adam at batch 256 in three
variants, interleaved round by round:

  dense         the module as written
  hand masked   the same module multiplying each kernel by a mask variable
                (all ones) before its MatMul: what any masking design pays
  graph_prune   `apply_pruning` of the dense module (masks all ones, no update
                inside the timed steps)

Prints ms per step and the ratios to dense (median and minimum over rounds)
and writes bench/results/mask_floor.json. If `graph_prune` costs what
`hand masked` costs, the overhead of train_overhead.py at low update
frequency is the masking itself, not the graph pass.
"""

import os

from absl import app
from absl import flags
import keras
import numpy as np
import results_io  # bench/results_io.py, beside this script
import step_timing  # bench/step_timing.py
import tensorflow as tf

import graph_prune

_STEPS = flags.DEFINE_integer('steps', 30, 'Timed steps per variant and round.')
_REPEATS = flags.DEFINE_integer('repeats', 15, 'Interleaved rounds.')
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'mask_floor.json'),
  'JSON output path.',
)

_SIZES = (784, 1000, 1000, 500, 200, 10)
_BATCH = 256
# Masks stay all ones: the update never runs in the timed steps.
_NO_UPDATE = 'target_sparsity=0.9,begin_pruning_step=1000000000'


class _MLP(tf.Module):
  """ReLU MLP on raw variables; `masked` multiplies kernels by masks."""

  def __init__(self, masked, seed=0):
    super().__init__()
    rng = np.random.RandomState(seed)
    shapes = list(zip(_SIZES[:-1], _SIZES[1:]))
    self.kernels = [
      tf.Variable(rng.standard_normal(s).astype(np.float32) * 0.03)
      for s in shapes
    ]
    self.biases = [tf.Variable(np.zeros(s[1], np.float32)) for s in shapes]
    self.masks = (
      [tf.Variable(tf.ones(s), trainable=False) for s in shapes]
      if masked
      else None
    )

  def __call__(self, x):
    for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
      if self.masks is not None:
        kernel = kernel * self.masks[i]
      x = tf.nn.bias_add(tf.matmul(x, kernel), bias)
      if i < len(self.kernels) - 1:
        x = tf.nn.relu(x)
    return x


def _step_fn(module, forward):
  variables = [*module.kernels, *module.biases]
  optimizer = keras.optimizers.Adam(1e-4)
  optimizer.build(variables)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(y, forward(x))
      )
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  return step


def main(argv):
  del argv
  rng = np.random.RandomState(0)
  x = tf.constant(rng.standard_normal((_BATCH, 784)).astype(np.float32))
  y = tf.constant(rng.randint(0, 10, _BATCH).astype(np.int32))
  dense, hand = _MLP(masked=False), _MLP(masked=True)
  module = _MLP(masked=False)
  pruned = graph_prune.apply_pruning(
    tf.function(
      module.__call__, input_signature=[tf.TensorSpec([None, 784], tf.float32)]
    ),
    _NO_UPDATE,
  )
  variants = {
    'dense': _step_fn(dense, dense),
    'hand masked': _step_fn(hand, hand),
    'graph_prune': _step_fn(module, pruned),
  }
  results = {'batch': _BATCH, 'steps': _STEPS.value, 'repeats': _REPEATS.value}
  results.update(
    step_timing.interleaved(variants, (x, y), _STEPS.value, _REPEATS.value)
  )
  step_timing.print_table({k: results[k] for k in variants})
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
