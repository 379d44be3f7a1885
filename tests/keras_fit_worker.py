"""Fits a pruned Keras model with `keras_trainer`, for keras_fit_test.py.

  python tests/keras_fit_worker.py --num_cpu_devices=2 --out=FILE.npz

Splits the CPU into logical devices before TensorFlow starts, fits under a
MirroredStrategy over them (or with no strategy for --num_cpu_devices=0), and
writes every replica's copy of every mask, the model's weights and the last
update step to FILE.npz. `fit_and_record` is what the test runs in-process as
the single-device reference.
"""
# pylint: disable=g-import-not-at-top

import argparse
import sys

import numpy as np

SPEC = (
  'target_sparsity=0.75,begin_pruning_step=0,end_pruning_step=40,'
  'sparsity_function_end_step=32,pruning_frequency=8'
)


def fit_and_record(strategy):
  """Fits 32 steps (4 epochs of 8 batches of 32) and returns the state."""
  import keras

  import graph_prune

  rng = np.random.default_rng(0)
  x = rng.standard_normal((256, 20)).astype(np.float32)
  y = np.argmax(x[:, :3], axis=1).astype(np.int32)
  with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
      [
        keras.Input((20,)),
        keras.layers.Dense(32, activation='relu'),
        keras.layers.Dense(3),
      ]
    )
    pruned = graph_prune.apply_pruning(model, SPEC)
    trainer = graph_prune.keras_trainer(pruned)
    trainer.compile(
      optimizer=keras.optimizers.Adam(0.01),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
  trainer.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0)
  state = {
    'num_replicas': strategy.num_replicas_in_sync,
    'last_update': int(pruned.last_mask_update_step.numpy()),
  }
  for i, mask in enumerate(pruned.masks):
    state[f'mask_{i}'] = np.stack(
      [v.numpy() for v in strategy.experimental_local_results(mask)]
    )
  for i, weight in enumerate(model.get_weights()):
    state[f'weight_{i}'] = weight
  return state


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--num_cpu_devices', type=int, required=True)
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  import tensorflow as tf

  if args.num_cpu_devices:
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * args.num_cpu_devices
    )
    strategy = tf.distribute.MirroredStrategy(
      [f'/cpu:{i}' for i in range(args.num_cpu_devices)]
    )
  else:
    strategy = tf.distribute.get_strategy()
  np.savez(args.out, **fit_and_record(strategy))


if __name__ == '__main__':
  main(sys.argv[1:])
