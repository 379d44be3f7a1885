"""One-shot pruning of a model's layers, in order, against NumPy.

Wanda's masks are recomputed in NumPy from the calibration inputs: the first
layer's from the data, the second's from the NumPy outputs of the pruned
first layer (the sequential order both papers use). SparseGPT keeps exact
sparsity and reconstructs better than magnitude; the pruned model computes
with the new weights and masks.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune.oneshot import layers as oneshot_layers

L = keras.layers


def _mlp():
  keras.utils.set_random_seed(0)
  x = keras.Input((8,))
  h = L.Dense(16, activation='relu', name='d1')(x)
  h = L.Dense(12, activation='relu', name='d2')(h)
  return keras.Model(x, L.Dense(4, name='d3')(h))


def _data(rows=64, features=8, seed=1):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((rows, 3)) @ rng.standard_normal((3, features))
  x += 0.2 * rng.standard_normal((rows, features))
  return (x * rng.uniform(0.2, 4.0, features)).astype(np.float32)


def _wanda_keep(w, x, sparsity):
  norms = np.sqrt((x.astype(np.float64) ** 2).sum(axis=0))
  keep = np.ones(w.shape, dtype=bool)
  count = int(sparsity * w.shape[0])
  for out in range(w.shape[1]):
    score = np.abs(w[:, out]) * norms
    keep[np.argsort(score, kind='stable')[:count], out] = False
  return keep


def _prune(model, method, x, sparsity=0.5, m_by_n=None, batch=16):
  pruned = graph_prune.apply_pruning(model, f'target_sparsity={sparsity}')
  batches = [(x[i : i + batch],) for i in range(0, len(x), batch)]
  sparsities = dict.fromkeys(pruned.weight_names, sparsity)
  results = oneshot_layers.prune_layers(
    pruned, batches, method, sparsities, m_by_n
  )
  return pruned, results


class WandaTest(tf.test.TestCase):
  def test_masks_follow_numpy_layer_by_layer(self):
    model = _mlp()
    x = _data()
    w = {n: model.get_layer(n).kernel.numpy() for n in ('d1', 'd2', 'd3')}
    b = {n: model.get_layer(n).bias.numpy() for n in ('d1', 'd2', 'd3')}
    pruned, results = _prune(model, 'wanda', x)
    masks = {
      name.split('/')[0]: m.numpy()
      for name, m in zip(pruned.weight_names, pruned.masks)
    }
    self.assertEqual(
      [r.name.split('/')[0] for r in results], ['d1', 'd2', 'd3']
    )
    keep1 = _wanda_keep(w['d1'], x, 0.5)
    self.assertAllEqual(masks['d1'], keep1.astype(np.float32))
    h1 = np.maximum(x @ (w['d1'] * keep1) + b['d1'], 0)
    keep2 = _wanda_keep(w['d2'], h1, 0.5)
    self.assertAllEqual(masks['d2'], keep2.astype(np.float32))
    # Wanda leaves the kept weights as they were.
    self.assertAllEqual(model.get_layer('d1').kernel.numpy(), w['d1'])
    self.assertEqual([r.rows for r in results], [64, 64, 64])


class SparseGPTTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(('half', 0.5), ('most', 0.75))
  def test_exact_sparsity_and_less_error_than_magnitude(self, sparsity):
    x = _data(rows=128)
    pruned, results = _prune(_mlp(), 'sparsegpt', x, sparsity)
    _, by_magnitude = _prune(_mlp(), 'weight', x, sparsity)
    for mask in pruned.masks:
      n = int(np.prod(mask.shape))
      self.assertEqual(int((mask.numpy() == 0).sum()), int(sparsity * n))
    self.assertLess(results[0].error, by_magnitude[0].error)
    self.assertLess(
      sum(r.error for r in results), sum(r.error for r in by_magnitude)
    )

  def test_model_computes_with_new_weights_and_masks(self):
    model = _mlp()
    x = _data()
    pruned, _ = _prune(model, 'sparsegpt', x)
    h = x.astype(np.float64)
    for i, name in enumerate(('d1', 'd2', 'd3')):
      layer = model.get_layer(name)
      kernel = layer.kernel.numpy() * pruned.masks[i].numpy()
      h = h @ kernel + layer.bias.numpy()
      if name != 'd3':
        h = np.maximum(h, 0)
    self.assertAllClose(pruned(x), h, rtol=1e-4, atol=1e-4)

  def test_two_of_four(self):
    pruned, _ = _prune(_mlp(), 'sparsegpt', _data(), m_by_n=(2, 4))
    mask = pruned.masks[1].numpy()  # d2: 16 inputs
    self.assertAllEqual(
      mask.reshape(4, 4, 12).sum(axis=1), np.full((4, 12), 2.0)
    )


class AllOrNothingTest(tf.test.TestCase):
  def test_failure_at_a_later_layer_changes_nothing(self):
    keras.utils.set_random_seed(0)
    x_in = keras.Input((8,))
    h = L.Dense(6, activation='relu', name='d1')(x_in)
    h = L.Lambda(tf.math.log)(h)  # relu's zeros give -inf to d2
    model = keras.Model(x_in, L.Dense(2, name='d2')(h))
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    before = [v.numpy() for v in list(pruned.weights) + list(pruned.masks)]
    x = _data()
    with self.assertRaisesRegex(ValueError, 'NaN or Inf at the input of d2'):
      oneshot_layers.prune_layers(
        pruned, [(x,)], 'sparsegpt', dict.fromkeys(pruned.weight_names, 0.5)
      )
    after = [v.numpy() for v in list(pruned.weights) + list(pruned.masks)]
    for a, b in zip(before, after):
      self.assertAllEqual(a, b)


class ConvTest(tf.test.TestCase):
  def test_conv_wanda_reads_patches_in_kernel_order(self):
    keras.utils.set_random_seed(0)
    x_in = keras.Input((5, 5, 2))
    y = L.Conv2D(3, 3, name='c')(x_in)
    model = keras.Model(x_in, L.Dense(2, name='d')(L.Flatten()(y)))
    x = np.random.default_rng(2).standard_normal((4, 5, 5, 2))
    x = x.astype(np.float32)
    kernel = model.get_layer('c').kernel.numpy()
    pruned, _ = _prune(model, 'wanda', x, batch=2)
    patches = [
      x[n, i : i + 3, j : j + 3, :].reshape(-1)
      for n in range(4)
      for i in range(3)
      for j in range(3)
    ]
    keep = _wanda_keep(kernel.reshape(18, 3), np.stack(patches), 0.5)
    self.assertAllEqual(
      pruned.masks[0].numpy(), keep.reshape(3, 3, 2, 3).astype(np.float32)
    )


class DepthwiseTest(tf.test.TestCase):
  def _model(self):
    keras.utils.set_random_seed(0)
    x_in = keras.Input((6, 6, 3))
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name='dw')(x_in)
    return keras.Model(x_in, L.Dense(2, name='d')(L.Flatten()(h)))

  def _x(self):
    return (
      np.random.default_rng(4).standard_normal((3, 6, 6, 3)).astype(np.float32)
    )

  def test_wanda_per_channel_from_its_own_patches(self):
    model = self._model()
    kernel = model.get_layer('dw').kernel.numpy()  # [3, 3, 3, 2]
    x = self._x()
    pruned, _ = _prune(model, 'wanda', x)
    expected = np.zeros(kernel.shape, np.float32)
    for c in range(3):
      patches = np.stack(
        [
          x[n, i : i + 3, j : j + 3, c].reshape(-1)
          for n in range(3)
          for i in range(4)
          for j in range(4)
        ]
      )
      keep = _wanda_keep(kernel[:, :, c, :].reshape(9, 2), patches, 0.5)
      expected[:, :, c, :] = keep.reshape(3, 3, 2)
    self.assertAllEqual(pruned.masks[0].numpy(), expected)

  def test_sparsegpt_exact_per_channel_and_equal_outputs(self):
    model = self._model()
    x = self._x()
    pruned, results = _prune(model, 'sparsegpt', x)
    mask = pruned.masks[0].numpy()
    for c in range(3):
      self.assertEqual(int((mask[:, :, c, :] == 0).sum()), 9)
    self.assertGreater(results[0].error, 0.0)
    self.assertLess(results[0].error, 1.0)
    stripped = graph_prune.strip(pruned)
    self.assertAllClose(stripped(x), pruned(x), rtol=1e-5, atol=1e-5)


class AttentionTest(tf.test.TestCase):
  def test_einsum_dense_kernels_are_matrices_of_their_reshape(self):
    # Keras' EinsumDense reshapes the [hidden, heads, head_dim] kernel to a
    # [hidden, heads * head_dim] matrix; its rows are the hidden features.
    keras.utils.set_random_seed(0)
    x_in = keras.Input((5, 8))
    y = L.MultiHeadAttention(2, 4, name='mha')(x_in, x_in)
    model = keras.Model(x_in, L.Dense(3, name='d')(y))
    x = np.random.default_rng(3).standard_normal((6, 5, 8))
    x = x.astype(np.float32)
    attention = model.get_layer('mha')
    query = attention.query_dense.kernel.numpy()
    value = attention.value_dense.kernel.numpy()
    pruned, results = _prune(model, 'wanda', x, batch=3)
    masks = dict(zip(pruned.weight_names, pruned.masks))
    rows = x.reshape(-1, 8)
    self.assertAllEqual(
      masks['mha/query/kernel'].numpy(),
      _wanda_keep(query.reshape(8, 8), rows, 0.5)
      .reshape(8, 2, 4)
      .astype(np.float32),
    )
    self.assertAllEqual(
      masks['mha/value/kernel'].numpy(),
      _wanda_keep(value.reshape(8, 8), rows, 0.5)
      .reshape(8, 2, 4)
      .astype(np.float32),
    )
    # q, k, v read the same input: one run for the three.
    probe = oneshot_layers.Probe.of(pruned)
    first = oneshot_layers.groups(probe.layers)[0]
    self.assertEqual(
      sorted(layer.name for layer in first),
      ['mha/key/kernel', 'mha/query/kernel', 'mha/value/kernel'],
    )
    self.assertLen(results, 5)


class GroupsTest(tf.test.TestCase):
  def test_parallel_layers_share_a_run(self):
    keras.utils.set_random_seed(0)
    x = keras.Input((6,))
    a = L.Dense(4, name='a')(x)
    b = L.Dense(4, name='b')(x)
    y = L.Dense(2, name='c')(L.Concatenate()([a, b]))
    pruned = graph_prune.apply_pruning(keras.Model(x, y), 'target_sparsity=0.5')
    probe = oneshot_layers.Probe.of(pruned)
    names = [
      sorted(layer.name.split('/')[0] for layer in group)
      for group in oneshot_layers.groups(probe.layers)
    ]
    self.assertEqual(names, [['a', 'b'], ['c']])


if __name__ == '__main__':
  tf.test.main()
