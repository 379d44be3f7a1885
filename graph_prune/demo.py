"""Demo: gradual magnitude pruning of a small MLP on the embedded digits.

Usage:
  python -m graph_prune.demo [--hparams=SPEC] [--train_steps=N] [--seed=S]

Trains a 64-256-128-10 MLP on the 8x8 digits shipped with graph_prune and
prunes its three kernels to 90% sparsity with contrib's gradual schedule,
using graph_prune's schedule and mask math inside a custom tf.function
training step. Prints the sparsity and accuracy as it goes and a final
per-weight table.
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from graph_prune import datasets
from graph_prune import hparams as hparams_lib
from graph_prune import schedule
from graph_prune import update

_HPARAMS = flags.DEFINE_string(
    'hparams',
    'name=demo,target_sparsity=0.9,begin_pruning_step=100,'
    'end_pruning_step=700,sparsity_function_begin_step=100,'
    'sparsity_function_end_step=600,pruning_frequency=25',
    'Pruning hparams spec (contrib syntax).')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 900, 'Training steps.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')


class MaskedMLP(tf.Module):
  """An MLP whose kernels are used as kernel * mask."""

  def __init__(self, sizes, seed):
    super().__init__()
    init = tf.keras.initializers.GlorotUniform(seed=seed)
    self.kernels, self.biases, self.masks = [], [], []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
      self.kernels.append(tf.Variable(init([fan_in, fan_out]),
                                      name=f'dense_{i}/kernel'))
      self.biases.append(tf.Variable(tf.zeros([fan_out]),
                                     name=f'dense_{i}/bias'))
      self.masks.append(tf.Variable(tf.ones([fan_in, fan_out]),
                                    trainable=False, name=f'dense_{i}/mask'))

  def __call__(self, x):
    x = tf.reshape(x, [-1, 64])
    for i, (k, b, m) in enumerate(zip(self.kernels, self.biases, self.masks)):
      x = tf.matmul(x, k * m) + b
      if i < len(self.kernels) - 1:
        x = tf.nn.relu(x)
    return x


def main(argv):
  del argv
  h = hparams_lib.parse_hparams(_HPARAMS.value)
  data = datasets.load_digits()
  model = MaskedMLP([64, 256, 128, 10], seed=_SEED.value)
  names = [f'dense_{i}/kernel' for i in range(len(model.kernels))]
  plans = update.plan_weights(names, [k.shape for k in model.kernels], h)
  optimizer = tf.keras.optimizers.Adam(1e-3)
  last_update = tf.Variable(0, dtype=tf.int64, trainable=False)

  @tf.function
  def train_step(x, y):
    with tf.GradientTape() as tape:
      logits = model(x)
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    variables = model.kernels + model.biases
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    step = tf.cast(optimizer.iterations, tf.int64)

    def do_update():
      masks, _ = update.compute_masks(
          [k.read_value() for k in model.kernels],
          update.scheduled_sparsities(step, plans, h), plans, h)
      for var, mask in zip(model.masks, masks):
        var.assign(mask)
      last_update.assign(step)
      return tf.constant(True)

    tf.cond(schedule.should_update(step, last_update, h), do_update,
            lambda: tf.constant(False))
    return loss

  def accuracy(x, y):
    return float(np.mean(np.argmax(model(x).numpy(), -1) == y))

  def sparsity():
    zeros = sum(int(np.sum(m.numpy() == 0)) for m in model.masks)
    return zeros / sum(int(np.prod(m.shape)) for m in model.masks)

  rng = np.random.RandomState(_SEED.value)
  start = time.time()
  print(f'hparams: {h.to_string(only_changed=True)}')
  print(f'{"step":>6} {"loss":>8} {"test acc":>9} {"sparsity":>9}')
  for step in range(1, _TRAIN_STEPS.value + 1):
    idx = rng.randint(0, len(data.x_train), 64)
    loss = train_step(data.x_train[idx], data.y_train[idx])
    if step % 100 == 0 or step == _TRAIN_STEPS.value:
      print(f'{step:6d} {float(loss):8.4f} '
            f'{accuracy(data.x_test, data.y_test):9.4f} {sparsity():9.4f}')
  print(f'\ntrained in {time.time() - start:.1f} s')
  print(f'{"weight":<16} {"shape":<12} {"sparsity":>9}')
  for name, mask in zip(names, model.masks):
    m = mask.numpy()
    print(f'{name:<16} {str(list(m.shape)):<12} {np.mean(m == 0):9.4f}')
  print(f'overall kernel sparsity {sparsity():.4f}, '
        f'test accuracy {accuracy(data.x_test, data.y_test):.4f}')


if __name__ == '__main__':
  app.run(main)
