"""Coupled channels through every elementwise activation are removed.

A residual block, conv -> act -> conv -> act added to a 1x1 conv of the
input, pruned with `granularity=unit,unit_groups=coupled` at 50%: training
zeroes the same channels on both sides of the add (checked on the kernels'
slices with NumPy), and shrink removes exactly those, computing the same
outputs. GELU (exact: Erfc; tanh form: Pow) and SiLU (Keras' custom-gradient
IdentityN) used to be left whole by shrink (issue 24's bug).
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune

L = keras.layers


def _gelu_tanh(v):
  return keras.activations.gelu(v, approximate=True)


ACTIVATIONS = {
  'relu': 'relu',
  'relu6': 'relu6',
  'tanh': 'tanh',
  'elu': 'elu',
  'selu': 'selu',
  'leaky_relu': 'leaky_relu',
  'gelu': 'gelu',
  'gelu_tanh': _gelu_tanh,
  'silu': 'silu',
  'hard_silu': 'hard_silu',
  'mish': 'mish',
  'sigmoid': 'sigmoid',
  'softplus': 'softplus',
  'softsign': 'softsign',
  'hard_sigmoid': 'hard_sigmoid',
  'swish_mixed_precision': lambda v: tf.cast(
    keras.activations.silu(tf.cast(v, tf.float16)), tf.float32
  ),
}


def _block(activation):
  keras.utils.set_random_seed(0)
  x = keras.Input((6, 6, 3))
  stem = L.Conv2D(8, 1, name='stem')(x)
  h = L.Activation(activation)(L.Conv2D(8, 3, padding='same', name='c1')(x))
  h = L.Activation(activation)(L.Conv2D(8, 3, padding='same', name='c2')(h))
  y = L.Add()([stem, h])
  head = L.Dense(3, name='head')(L.GlobalAveragePooling2D()(y))
  return keras.Model(x, head)


class ResidualActivationTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(*ACTIVATIONS.items())
  def test_coupled_channels_removed(self, activation):
    model = _block(activation)
    pruned = graph_prune.apply_pruning(
      model,
      'granularity=unit,unit_groups=coupled,target_sparsity=0.5,'
      'do_not_prune=[head]',
    )
    pruned.mask_update(10**6)
    masks = {m.name.split('/')[0]: m.numpy() for m in pruned.masks}
    kernels = {
      name: model.get_layer(name).kernel.numpy() * masks[name]
      for name in ('stem', 'c1', 'c2')
    }
    zero = {
      name: np.flatnonzero(~np.any(k.reshape(-1, k.shape[-1]), axis=0))
      for name, k in kernels.items()
    }
    # The add ties stem's and c2's channels: the same ones are zero.
    self.assertLen(zero['stem'], 4)
    self.assertAllEqual(zero['stem'], zero['c2'])
    shrunk = graph_prune.shrink(pruned)
    layers = {
      layer.kernel.split('/')[-3]: layer
      for layer in shrunk.shrink_report.main.layers
      if layer.op == 'Conv2D'
    }
    for name in ('stem', 'c2'):
      self.assertEqual(
        (layers[name].units_before, layers[name].units_after), (8, 4), name
      )
    x = np.random.RandomState(1).standard_normal((2, 6, 6, 3))
    x = x.astype('float32')
    self.assertAllClose(pruned(x), shrunk(x), rtol=1e-5, atol=1e-5)


if __name__ == '__main__':
  tf.test.main()
