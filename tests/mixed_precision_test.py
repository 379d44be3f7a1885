"""Pruning models built with the mixed_float16 policy (Keras 3 and tf_keras).

Their kernels are float32 variables read through a Cast to float16 before the
MatMul; the masks multiply the float32 kernel.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
import tf_keras

import graph_prune

_SPEC = (
  'target_sparsity=0.75,begin_pruning_step=0,end_pruning_step=10,'
  'sparsity_function_end_step=10'
)


def _mixed_mlp(k):
  k.utils.set_random_seed(0)
  saved = k.mixed_precision.global_policy()
  k.mixed_precision.set_global_policy('mixed_float16')
  try:
    return k.Sequential(
      [
        k.Input((8,)),
        k.layers.Dense(16, activation='relu'),
        k.layers.Dense(4, dtype='float32'),
      ]
    )
  finally:
    k.mixed_precision.set_global_policy(saved)


def _np_forward(x, layers, masks):
  (k1, b1), (k2, b2) = layers
  h = np.maximum(x @ (k1 * masks[0]) + b1, 0)
  return h @ (k2 * masks[1]) + b2


class MixedPrecisionTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_float32_kernels_masked_outputs_and_gradients(self, k):
    model = _mixed_mlp(k)
    pruned = graph_prune.apply_pruning(model, _SPEC)
    self.assertLen(pruned.masks, 2)
    self.assertEqual([m.dtype for m in pruned.masks], [tf.float32] * 2)
    pruned.mask_update(10)
    kernels = [layer.kernel.numpy() for layer in model.layers]
    for mask, kernel in zip(pruned.masks, kernels):
      flat = np.abs(kernel).ravel()
      want = np.ones(flat.size, np.float32)
      want[np.argsort(flat, kind='stable')[: round(0.75 * flat.size)]] = 0
      self.assertAllEqual(mask.numpy(), want.reshape(kernel.shape))

    x = np.random.RandomState(1).rand(5, 8).astype(np.float32)
    layers = [
      (layer.kernel.numpy(), layer.bias.numpy()) for layer in model.layers
    ]
    masks = [m.numpy() for m in pruned.masks]
    # float16 compute: tolerance of half precision.
    self.assertAllClose(
      pruned(x), _np_forward(x, layers, masks), atol=2e-2, rtol=2e-2
    )

    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.cast(pruned(x), tf.float32))
    grads = tape.gradient(loss, [layer.kernel for layer in model.layers])
    for grad, mask in zip(grads, masks):
      self.assertIsNotNone(grad)
      self.assertEqual(grad.dtype, tf.float32)
      self.assertAllEqual(
        grad.numpy()[mask == 0], np.zeros(int((mask == 0).sum()), np.float32)
      )
      self.assertGreater(np.abs(grad.numpy()[mask == 1]).sum(), 0)


if __name__ == '__main__':
  tf.test.main()
