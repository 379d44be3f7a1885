"""One-shot pruning of the layers a small transformer LM is made of.

Dense on 3-D inputs (Keras 3 and tf_keras: tensordot's Reshape -> MatMul),
attention projections (EinsumDense kernels [hidden, heads, head_dim] and
[heads, head_dim, hidden]; Keras 3 reshapes them to matrices, tf_keras
reads them with Einsum), embeddings (a lookup: token counts) and grouped
convs (each group from its own channels' patches). Wanda's masks are
recomputed in NumPy; SparseGPT keeps exact sparsity, valid 2:4, and
reconstructs better than magnitude on correlated inputs.
"""

from absl.testing import parameterized
import keras
import numpy as np
from oneshot_layers_test import _wanda_keep  # tests/, beside this
import tensorflow as tf
import tf_keras

import graph_prune
from graph_prune.oneshot import layers as oneshot_layers

L = keras.layers


def _correlated(shape, seed=1):
  """Inputs whose features share a few factors and differ in scale."""
  rng = np.random.default_rng(seed)
  features = shape[-1]
  rows = int(np.prod(shape[:-1]))
  x = rng.standard_normal((rows, 3)) @ rng.standard_normal((3, features))
  x += 0.2 * rng.standard_normal((rows, features))
  x *= rng.uniform(0.2, 4.0, features)
  return x.reshape(shape).astype(np.float32)


def _prune(model, method, x, sparsity=0.5, m_by_n=None, batch=4):
  pruned = graph_prune.apply_pruning(model, f'target_sparsity={sparsity}')
  batches = [(x[i : i + batch],) for i in range(0, len(x), batch)]
  results = oneshot_layers.prune_layers(
    pruned,
    batches,
    method,
    dict.fromkeys(pruned.weight_names, sparsity),
    m_by_n,
  )
  return pruned, {r.name: r for r in results}


def _masks(pruned):
  return {n: m.numpy() for n, m in zip(pruned.weight_names, pruned.masks)}


class SparseGPTChecks:
  """SparseGPT on any model: exact sparsity, 2:4, below magnitude's error."""

  def check_sparsegpt(self, build, x, matrices):
    """`matrices`: weight name -> its [inputs, outputs] shape."""
    pruned, results = _prune(build(), 'sparsegpt', x)
    _, magnitude = _prune(build(), 'weight', x)
    for name, mask in _masks(pruned).items():
      self.assertEqual(int((mask == 0).sum()), mask.size // 2, msg=name)
    self.assertLess(
      sum(r.error for r in results.values()),
      sum(r.error for r in magnitude.values()),
    )
    pruned, _ = _prune(build(), 'sparsegpt', x, m_by_n=(2, 4))
    for name, mask in _masks(pruned).items():
      inputs, outputs = matrices[name]
      self.assertAllEqual(
        mask.reshape(inputs // 4, 4, outputs).sum(axis=1),
        np.full((inputs // 4, outputs), 2.0),
        msg=name,
      )
    stripped = graph_prune.strip(pruned)
    self.assertAllClose(stripped(x), pruned(x), rtol=1e-4, atol=1e-4)


def _dense3d(api):
  api.utils.set_random_seed(0)
  x = api.Input((5, 8))
  h = api.layers.Dense(12, activation='relu', name='d1')(x)
  return api.Model(x, api.layers.Dense(4, name='d2')(h))


class Dense3DTest(tf.test.TestCase, parameterized.TestCase, SparseGPTChecks):
  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_wanda_rows_are_every_position(self, api):
    model = _dense3d(api)
    x = _correlated((6, 5, 8))
    w1 = model.get_layer('d1').kernel.numpy()
    w2 = model.get_layer('d2').kernel.numpy()
    b1 = model.get_layer('d1').bias.numpy()
    pruned, results = _prune(model, 'wanda', x)
    masks = _masks(pruned)
    keep1 = _wanda_keep(w1, x.reshape(-1, 8), 0.5)
    self.assertAllEqual(masks['d1/kernel'], keep1)
    h = np.maximum(x.reshape(-1, 8) @ (w1 * keep1) + b1, 0)
    self.assertAllEqual(masks['d2/kernel'], _wanda_keep(w2, h, 0.5))
    self.assertEqual(results['d1/kernel'].rows, 30)

  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_sparsegpt(self, api):
    self.check_sparsegpt(
      lambda: _dense3d(api),
      _correlated((16, 5, 8)),
      {'d1/kernel': (8, 12), 'd2/kernel': (12, 4)},
    )


def _attention(api):
  api.utils.set_random_seed(0)
  x = api.Input((5, 8))
  y = api.layers.MultiHeadAttention(2, 4, name='mha')(x, x)
  return api.Model(x, y)


def _numpy_attention(x, kernels, biases):
  """Multi-head attention's output-projection input, [rows, heads * dim]."""

  def project(name):
    return np.einsum('bsh,hnd->bsnd', x, kernels[name]) + biases[name]

  q, k, v = project('query') / 2.0, project('key'), project('value')
  scores = np.einsum('bqnd,bknd->bnqk', q, k)
  weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
  weights /= weights.sum(axis=-1, keepdims=True)
  heads = np.einsum('bnqk,bknd->bqnd', weights, v)
  return heads.reshape(-1, 8)


class AttentionTest(tf.test.TestCase, parameterized.TestCase, SparseGPTChecks):
  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_wanda_on_every_projection(self, api):
    model = _attention(api)
    mha = model.get_layer('mha')
    dense = {
      'query': mha._query_dense,
      'key': mha._key_dense,
      'value': mha._value_dense,
      'attention_output': mha._output_dense,
    }
    kernels = {k: d.kernel.numpy() for k, d in dense.items()}
    biases = {k: d.bias.numpy() for k, d in dense.items()}
    x = _correlated((6, 5, 8))
    pruned, _ = _prune(model, 'wanda', x, batch=3)
    masks = _masks(pruned)
    kept = {}
    for name in ('query', 'key', 'value'):
      kept[name] = _wanda_keep(
        kernels[name].reshape(8, 8), x.reshape(-1, 8), 0.5
      ).reshape(8, 2, 4)
      self.assertAllEqual(masks[f'mha/{name}/kernel'], kept[name], msg=name)
    # The output kernel [heads, head_dim, hidden] is the matrix
    # [heads * head_dim, hidden]; its rows the heads' outputs, computed
    # from the pruned q, k, v.
    heads = _numpy_attention(
      x.astype(np.float64),
      {n: kernels[n] * kept[n] for n in kept},
      biases,
    )
    output = kernels['attention_output']
    self.assertAllEqual(
      masks['mha/attention_output/kernel'],
      _wanda_keep(output.reshape(8, 8), heads, 0.5).reshape(2, 4, 8),
    )

  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_sparsegpt(self, api):
    names = ('query', 'key', 'value', 'attention_output')
    self.check_sparsegpt(
      lambda: _attention(api),
      _correlated((16, 5, 8)),
      {f'mha/{n}/kernel': (8, 8) for n in names},
    )


def _embedding(api, vocabulary=12):
  api.utils.set_random_seed(0)
  ids = api.Input((7,), dtype='int32')
  h = api.layers.Embedding(vocabulary, 8, name='e')(ids)
  return api.Model(ids, api.layers.Dense(4, name='d')(h))


def _ids(examples=20, vocabulary=12, seed=0):
  # Skewed counts, and the last two tokens never seen.
  rng = np.random.default_rng(seed)
  p = 1.0 / np.arange(1, vocabulary - 1)
  ids = rng.choice(vocabulary - 2, size=(examples, 7), p=p / p.sum())
  return ids.astype(np.int32)


class EmbeddingTest(tf.test.TestCase, parameterized.TestCase):
  def _counts(self, ids, vocabulary=12):
    return np.bincount(ids.reshape(-1), minlength=vocabulary).astype(float)

  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_wanda_scores_by_token_counts_per_column(self, api):
    model = _embedding(api)
    table = model.get_layer('e').embeddings.numpy()
    ids = _ids()
    pruned, results = _prune(model, 'wanda', ids)
    counts = self._counts(ids)
    expected = np.ones(table.shape, bool)
    for column in range(8):
      score = np.abs(table[:, column]) * np.sqrt(counts)
      expected[np.argsort(score, kind='stable')[:6], column] = False
    self.assertAllEqual(_masks(pruned)['e/embeddings'], expected)
    self.assertEqual(results['e/embeddings'].rows, ids.size)

  def test_sparsegpt_ranks_squares_times_damped_counts(self):
    model = _embedding(keras)
    table = model.get_layer('e').embeddings.numpy()
    ids = _ids()
    counts = self._counts(ids)
    damped = counts + 0.01 * counts.mean()
    pruned, results = _prune(model, 'sparsegpt', ids)
    mask = _masks(pruned)['e/embeddings']
    expected = np.ones(table.shape, bool)
    for column in range(8):
      score = table[:, column] ** 2 * damped
      expected[np.argsort(score, kind='stable')[:6], column] = False
    self.assertAllEqual(mask, expected)
    # A diagonal Hessian: no OBS update, the kept entries stay as they were.
    self.assertAllEqual(model.get_layer('e').embeddings.numpy(), table * mask)
    # Its error is the count-weighted share of the table pruned.
    error = np.sqrt(
      (counts[:, None] * (table * (1 - mask)) ** 2).sum()
      / (counts[:, None] * table**2).sum()
    )
    self.assertAllClose(results['e/embeddings'].error, error)
    _, magnitude = _prune(_embedding(keras), 'weight', ids)
    self.assertLess(error, magnitude['e/embeddings'].error)

  def test_sparsegpt_two_of_four_per_column(self):
    model = _embedding(keras)
    table = model.get_layer('e').embeddings.numpy()
    ids = _ids()
    damped = self._counts(ids) + 0.01 * self._counts(ids).mean()
    pruned, _ = _prune(model, 'sparsegpt', ids, m_by_n=(2, 4))
    mask = _masks(pruned)['e/embeddings']
    score = table**2 * damped[:, None]
    for start in range(0, 12, 4):
      top = np.argsort(-score[start : start + 4], axis=0, kind='stable')[:2]
      expected = np.zeros((4, 8), bool)
      np.put_along_axis(expected, top, True, axis=0)
      self.assertAllEqual(mask[start : start + 4], expected)

  def test_tied_embeddings_are_refused_and_change_nothing(self):
    class Tied(keras.layers.Layer):
      def build(self, shape):
        self.table = self.add_weight(shape=(12, 8), name='table')

      def call(self, ids):
        h = keras.ops.take(self.table, ids, axis=0)
        return keras.ops.matmul(h, keras.ops.transpose(self.table))

    keras.utils.set_random_seed(0)
    ids = keras.Input((7,), dtype='int32')
    model = keras.Model(ids, Tied(name='tied')(ids))
    before = model.get_layer('tied').table.numpy()
    with self.assertRaisesRegex(
      ValueError, r'GatherV2 .* and Transpose .*tied .*do_not_prune'
    ):
      graph_prune.prune_oneshot(model, _ids(), 'prune_option=wanda')
    self.assertAllEqual(model.get_layer('tied').table.numpy(), before)


def _grouped_conv():
  keras.utils.set_random_seed(0)
  x = keras.Input((6, 6, 8))
  # No bias: a stripped grouped Conv2D + BiasAdd fails on CPU (TF's fused
  # conv has no groups), with or without one-shot pruning.
  h = L.Conv2D(6, 3, groups=2, use_bias=False, name='g')(x)
  return keras.Model(x, h)


class GroupedConvTest(tf.test.TestCase, SparseGPTChecks):
  def test_wanda_per_group_from_its_own_channels(self):
    model = _grouped_conv()
    kernel = model.get_layer('g').kernel.numpy()  # [3, 3, 4, 6]
    x = _correlated((3, 6, 6, 8))
    pruned, results = _prune(model, 'wanda', x)
    expected = np.zeros(kernel.shape, bool)
    for g in range(2):
      patches = np.stack(
        [
          x[n, i : i + 3, j : j + 3, 4 * g : 4 * g + 4].reshape(-1)
          for n in range(3)
          for i in range(4)
          for j in range(4)
        ]
      )
      outputs = slice(3 * g, 3 * g + 3)
      keep = _wanda_keep(kernel[..., outputs].reshape(36, 3), patches, 0.5)
      expected[..., outputs] = keep.reshape(3, 3, 4, 3)
    self.assertAllEqual(_masks(pruned)['g/kernel'], expected)
    self.assertEqual(results['g/kernel'].rows, 48)

  def test_sparsegpt(self):
    # Per group [36, 3]; 2:4 checked over the kernel's (kh, kw, cin) rows.
    self.check_sparsegpt(
      _grouped_conv, _correlated((8, 6, 6, 8)), {'g/kernel': (36, 6)}
    )


class UnsupportedTest(tf.test.TestCase):
  def test_an_op_without_a_rule_names_it_and_do_not_prune(self):
    class Transposed(keras.layers.Layer):
      def build(self, shape):
        self.w = self.add_weight(shape=(4, 8), name='w')

      def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(self.w))

    x = keras.Input((8,))
    model = keras.Model(x, Transposed(name='t')(x))
    with self.assertRaisesRegex(
      ValueError, r"'t/w' is read by Transpose .*do_not_prune$"
    ):
      graph_prune.prune_oneshot(
        model, _correlated((4, 8)), 'prune_option=sparsegpt'
      )


if __name__ == '__main__':
  tf.test.main()
