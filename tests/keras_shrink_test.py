"""Tests of graph_prune/export/keras_shrink.py: `strip_keras(shrink=True)`.

Keras models unit-pruned (`granularity=unit`) to 50% by one mask update are
rebuilt with the zero units taken out. Checked against NumPy: each rebuilt
layer's size is the number of non-zero units of its masked kernel, each
kernel is the masked kernel with the zero columns (and the next layer's
matching rows) removed, and the outputs equal the pruned model's; the
`.keras` file loads with plain Keras and predicts the same. keras-hub
backbones go through their config: Gemma loses heads and FFN units, BERT
its FFN units; BERT with heads pruned, layers left with different sizes
and a layer class without a rule are one-line `KerasStripError`s saying
why and what to do instead.
"""

import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
import tf_keras
from transformers_test import backbone_inputs  # tests/, beside this
from transformers_test import BACKBONES
from transformers_test import keras_hub
from transformers_test import sequence_output

import graph_prune
from graph_prune import errors
from graph_prune.export.formats import base
from graph_prune.export.formats import driver
from graph_prune.export.formats import keras as keras_format

UNITS = (
  'target_sparsity=0.5,granularity=unit,begin_pruning_step=0,'
  'end_pruning_step=1,sparsity_function_end_step=1'
)
HEADS = UNITS + ',unit_groups=coupled,do_not_prune=[embeddings,pooled_dense]'
ATTENTION = 'query,key,value,attention_output'
X = np.random.RandomState(1).standard_normal((4, 12)).astype(np.float32)


def _tf_variable(v):
  return v if isinstance(v, tf.Variable) else v.value


def _mlp(layers):
  return layers, [
    layers.Dense(16, activation='relu', name='hidden_1'),
    layers.Dense(10, activation='tanh', name='hidden_2'),
    layers.Dense(3, name='logits'),
  ]


def _masked(pruned, weight):
  """weight * mask in NumPy (the weight itself if it has no mask)."""
  for w in list(pruned.pruned_weights) + list(pruned.unit_params):
    if _tf_variable(w.weight) is _tf_variable(weight):
      return weight.numpy() * w.mask.numpy()
  return np.asarray(weight.numpy())


def _live_columns(kernel):
  return np.flatnonzero(np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0))


@keras.saving.register_keras_serializable('graph_prune_test')
class OwnDense(keras.layers.Layer):
  """A layer graph_prune has no config rule for."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units

  def build(self, shape):
    self.kernel = self.add_weight(shape=(shape[-1], self.units), name='kernel')

  def call(self, x):
    return tf.nn.relu(tf.matmul(x, self.kernel))

  def get_config(self):
    return {**super().get_config(), 'units': self.units}


class SequentialAndFunctionalTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp(dir=self.get_temp_dir())

  def check_reloads(self, small, package, x, pruned, name, atol):
    """`small` saved as `.keras` loads with plain Keras and equals
    `pruned` on `x`."""
    path = os.path.join(self.root, f'{name}.keras')
    small.save(path)
    self.assertAllClose(
      package.models.load_model(path)(x), pruned(x), atol=atol
    )

  @parameterized.named_parameters(
    ('keras3', keras, False),
    ('tf_keras', tf_keras, False),
    ('tf_keras_functional', tf_keras, True),
  )
  def test_dense_units(self, package, functional):
    package.utils.set_random_seed(0)
    _, dense = _mlp(package.layers)
    if functional:
      x = package.Input((12,))
      h = x
      for layer in dense:
        h = layer(h)
      model = package.Model(x, h)
    else:
      model = package.Sequential([package.Input((12,))] + dense)
    pruned = graph_prune.apply_pruning(model, UNITS + ',do_not_prune=[logits]')
    pruned.mask_update(1)
    names = ('hidden_1', 'hidden_2', 'logits')
    k1, k2 = (_masked(pruned, model.get_layer(n).kernel) for n in names[:2])
    live1, live2 = _live_columns(k1), _live_columns(k2)
    self.assertLen(live1, 8)
    self.assertLen(live2, 5)

    small = graph_prune.strip_keras(pruned, shrink=True)

    self.assertIsInstance(small, package.Model)
    rebuilt = [small.get_layer(n) for n in names]
    self.assertEqual([layer.units for layer in rebuilt], [8, 5, 3])
    self.assertAllEqual(rebuilt[0].kernel.numpy(), k1[:, live1])
    self.assertAllEqual(rebuilt[1].kernel.numpy(), k2[live1][:, live2])
    k3 = model.get_layer('logits').kernel.numpy()
    self.assertAllEqual(rebuilt[2].kernel.numpy(), k3[live2])
    self.assertAllClose(small(X), pruned(X), atol=1e-6)
    self.assertLess(small.count_params(), model.count_params())
    self.check_reloads(small, package, X, pruned, 'small', 1e-6)

  def test_functional_conv_and_batch_norm(self):
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding='same')(x)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(x, keras.layers.Dense(3, name='logits')(h))
    pruned = graph_prune.apply_pruning(model, UNITS + ',do_not_prune=[logits]')
    pruned.mask_update(1)
    kernel = _masked(pruned, model.layers[1].kernel)
    live = _live_columns(kernel)
    self.assertLen(live, 4)

    small = graph_prune.strip_keras(pruned, shrink=True)

    conv = small.layers[1]
    self.assertEqual(conv.get_config()['filters'], 4)
    self.assertAllEqual(conv.kernel.numpy(), kernel[..., live])
    self.assertEqual(tuple(small.layers[2].gamma.shape), (4,))
    images = np.random.RandomState(2).standard_normal((2, 8, 8, 3))
    images = images.astype(np.float32)
    self.assertAllClose(small(images), pruned(images), atol=1e-5)

  def test_inverted_residual_block(self):
    # Conv -> BN -> ReLU -> depthwise -> BN -> ReLU -> conv -> BN -> add:
    # the expansion's channels go with the depthwise conv's and both
    # BatchNorms'; BatchNorm parameters shrink folds into one constant are
    # the originals at the channels that stay.
    keras.utils.set_random_seed(0)
    lay = keras.layers
    x = keras.Input((6, 6, 4))
    h = lay.Conv2D(8, 1, name='expand')(x)
    h = lay.ReLU()(lay.BatchNormalization(name='expand_bn')(h))
    h = lay.DepthwiseConv2D(3, padding='same', name='depthwise')(h)
    h = lay.ReLU()(lay.BatchNormalization(name='depthwise_bn')(h))
    h = lay.BatchNormalization(name='project_bn')(
      lay.Conv2D(4, 1, name='project')(h)
    )
    h = lay.GlobalAveragePooling2D()(lay.Add()([x, h]))
    model = keras.Model(x, lay.Dense(3, name='logits')(h))
    for layer in model.layers:  # BatchNorm statistics other than 0 and 1
      if isinstance(layer, lay.BatchNormalization):
        rs = np.random.RandomState(len(layer.name))
        layer.set_weights(
          [rs.uniform(0.5, 1.5, w.shape) for w in layer.weights]
        )
    pruned = graph_prune.apply_pruning(
      model, UNITS + ',unit_groups=coupled,do_not_prune=[logits]'
    )
    pruned.mask_update(1)
    expand = _masked(pruned, model.get_layer('expand').kernel)
    live = _live_columns(expand)
    self.assertLen(live, 4)

    small = graph_prune.strip_keras(pruned, shrink=True)

    self.assertEqual(small.get_layer('expand').filters, 4)
    self.assertAllEqual(
      small.get_layer('expand').kernel.numpy(), expand[..., live]
    )
    depthwise = small.get_layer('depthwise').kernel.numpy()
    self.assertEqual(depthwise.shape, (3, 3, 4, 1))
    for name in ('expand_bn', 'depthwise_bn'):
      for got, want in zip(
        small.get_layer(name).weights, model.get_layer(name).weights
      ):
        self.assertAllEqual(got.numpy(), want.numpy()[live], msg=name)
    images = np.random.RandomState(4).standard_normal((2, 6, 6, 4))
    images = images.astype(np.float32)
    self.assertAllClose(small(images), pruned(images), atol=1e-5)
    self.check_reloads(small, keras, images, pruned, 'block', 1e-5)

  def test_concatenation_and_squeeze_excitation(self):
    # Two convs concatenated, a BatchNorm over the concatenation, and a
    # squeeze-and-excitation gate whose Reshape((1, 1, channels)) holds the
    # channel count in its config (DenseNet's and EfficientNet's patterns).
    keras.utils.set_random_seed(0)
    lay = keras.layers
    x = keras.Input((6, 6, 4))
    cat = lay.Concatenate(name='cat')(
      [lay.Conv2D(6, 1, name='a')(x), lay.Conv2D(6, 1, name='b')(x)]
    )
    h = lay.ReLU()(lay.BatchNormalization(name='cat_bn')(cat))
    se = lay.Reshape((1, 1, 12), name='se_reshape')(
      lay.GlobalAveragePooling2D()(h)
    )
    se = lay.Conv2D(3, 1, activation='relu', name='se_reduce')(se)
    se = lay.Conv2D(12, 1, activation='sigmoid', name='se_expand')(se)
    h = lay.GlobalAveragePooling2D()(lay.Multiply()([h, se]))
    model = keras.Model(x, lay.Dense(3, name='logits')(h))
    bn = model.get_layer('cat_bn')
    rs = np.random.RandomState(5)
    bn.set_weights([rs.uniform(0.5, 1.5, w.shape) for w in bn.weights])
    pruned = graph_prune.apply_pruning(
      model, UNITS + ',unit_groups=coupled,do_not_prune=[logits]'
    )
    pruned.mask_update(1)
    live = np.concatenate(
      [
        _live_columns(_masked(pruned, model.get_layer('a').kernel)),
        6 + _live_columns(_masked(pruned, model.get_layer('b').kernel)),
      ]
    )
    self.assertLess(live.size, 12)

    small = graph_prune.strip_keras(pruned, shrink=True)

    self.assertEqual(
      small.get_layer('se_reshape').target_shape, (1, 1, live.size)
    )
    for got, want in zip(small.get_layer('cat_bn').weights, bn.weights):
      self.assertAllEqual(got.numpy(), want.numpy()[live])
    images = np.random.RandomState(6).standard_normal((2, 6, 6, 4))
    images = images.astype(np.float32)
    self.assertAllClose(small(images), pruned(images), atol=1e-5)
    self.check_reloads(small, keras, images, pruned, 'se', 1e-5)

  @parameterized.named_parameters(('static', 5), ('open', None))
  def test_multi_head_attention_heads(self, sequence):
    keras.utils.set_random_seed(0)
    # (A fixed sequence length: Keras lowers the projections' einsums to
    # reshapes and BatchMatMulV2, which the heads walk follows too.)
    x = keras.Input((sequence, 12))
    attention = keras.layers.MultiHeadAttention(num_heads=4, key_dim=3)
    h = attention(x, x)
    model = keras.Model(x, keras.layers.Dense(2, name='logits')(h))
    pruned = graph_prune.apply_pruning(
      model, UNITS + ',unit_groups=coupled,do_not_prune=[logits]'
    )
    pruned.mask_update(1)
    query = _masked(pruned, attention.query_dense.kernel)  # [12, heads, 3]
    live = np.flatnonzero(np.abs(query).sum(axis=(0, 2)))
    self.assertLen(live, 2)

    small = graph_prune.strip_keras(pruned, shrink=True)

    rebuilt = small.layers[1]
    self.assertEqual(rebuilt.get_config()['num_heads'], 2)
    self.assertEqual(rebuilt.get_config()['key_dim'], 3)
    self.assertAllEqual(rebuilt.query_dense.kernel.numpy(), query[:, live])
    output = _masked(pruned, attention.output_dense.kernel)
    self.assertAllEqual(rebuilt.output_dense.kernel.numpy(), output[live])
    tokens = np.random.RandomState(3).standard_normal((2, 5, 12))
    tokens = tokens.astype(np.float32)
    self.assertAllClose(small(tokens), pruned(tokens), atol=1e-5)

  def test_a_layer_without_a_rule_is_refused(self):
    keras.utils.set_random_seed(0)
    x = keras.Input((12,))
    own = OwnDense(8, name='own')(x)
    model = keras.Model(x, keras.layers.Dense(3, name='logits')(own))
    pruned = graph_prune.apply_pruning(model, UNITS + ',do_not_prune=[logits]')
    pruned.mask_update(1)
    with self.assertRaisesRegex(
      errors.KerasStripError,
      r"^Cannot rebuild layer 'own' \(OwnDense\).*\[12, 8\] -> \[12, 4\].*"
      r'do_not_prune.*export_saved_model\(\.\.\., shrink=True\)[^\n]*$',
    ):
      graph_prune.strip_keras(pruned, shrink=True)
    # Without shrink the same model strips as before.
    plain = graph_prune.strip_keras(pruned)
    self.assertAllClose(plain(X), pruned(X), atol=1e-6)

  def test_keras_format_writes_the_shrunk_model(self):
    keras.utils.set_random_seed(0)
    _, dense = _mlp(keras.layers)
    model = keras.Sequential([keras.Input((12,))] + dense)
    pruned = graph_prune.apply_pruning(model, UNITS + ',do_not_prune=[logits]')
    pruned.mask_update(1)
    path = os.path.join(self.root, 'm.keras')
    request = base.Request(
      'keras', path, 'keras_path', keras_format.Options(shrink=True)
    )
    module = graph_prune.strip(pruned)
    keys = ('serving_default',)
    source = base.Source(module, keys, keys, 'the model', pruned=pruned)
    driver.write(source, [request])
    loaded = keras.models.load_model(path)
    self.assertEqual([layer.units for layer in loaded.layers], [8, 5, 3])
    self.assertAllClose(loaded(X), pruned(X), atol=1e-6)


class BackboneTest(tf.test.TestCase):
  """keras-hub backbones, rebuilt through their config."""

  def setUp(self):
    super().setUp()
    if keras_hub is None:
      self.skipTest('keras-hub is not installed (pip install -e .[test])')

  def _pruned(self, name, hparams):
    keras.utils.set_random_seed(0)
    model = BACKBONES[name]()
    pruned = graph_prune.apply_pruning(model, hparams)
    pruned.mask_update(1)
    return model, pruned

  def test_gemma_heads_and_ffn_units(self):
    model, pruned = self._pruned('gemma', HEADS)
    small = graph_prune.strip_keras(pruned, shrink=True)
    config = small.get_config()
    # 4 query heads sharing 2 key/value heads, intermediate 32 (gated FFN
    # kernels of 16 columns): half of each.
    self.assertEqual(
      (config['num_query_heads'], config['num_key_value_heads']), (2, 1)
    )
    self.assertEqual(config['intermediate_dim'], 16)
    self.assertEqual(config['head_dim'], model.get_config()['head_dim'])
    by_path = {w.path: w for w in model.weights}
    for w in small.weights:
      if w.path.endswith('query/kernel'):  # [heads, hidden, head_dim]
        masked = _masked(pruned, by_path[w.path])
        live = np.flatnonzero(np.abs(masked).sum(axis=(1, 2)))
        self.assertAllEqual(w.numpy(), masked[live])
    x = backbone_inputs('gemma')
    self.assertAllClose(
      sequence_output(small(x)), sequence_output(pruned(x)), atol=1e-5
    )
    path = os.path.join(self.get_temp_dir(), 'gemma.keras')
    small.save(path)
    loaded = keras.models.load_model(path)
    self.assertAllClose(
      sequence_output(loaded(x)), sequence_output(pruned(x)), atol=1e-5
    )

  def test_bert_ffn_units(self):
    model, pruned = self._pruned(
      'bert', HEADS.replace('pooled_dense]', f'pooled_dense,{ATTENTION}]')
    )
    small = graph_prune.strip_keras(pruned, shrink=True)
    self.assertEqual(small.get_config()['intermediate_dim'], 16)
    self.assertEqual(small.get_config()['num_heads'], 4)
    self.assertEqual(model.count_params() - small.count_params(), 2 * 16 * 33)
    x = backbone_inputs('bert')
    self.assertAllClose(
      sequence_output(small(x)), sequence_output(pruned(x)), atol=1e-5
    )

  def test_a_task_rebuilds_its_backbone(self):
    # A keras-hub task keeps its backbone's config inside its own.
    keras.utils.set_random_seed(0)
    task = keras_hub.models.BertTextClassifier(
      backbone=BACKBONES['bert'](), num_classes=3, preprocessor=None
    )
    hparams = HEADS.replace(
      'pooled_dense]', f'pooled_dense,{ATTENTION},logits]'
    )
    pruned = graph_prune.apply_pruning(task, hparams)
    pruned.mask_update(1)
    small = graph_prune.strip_keras(pruned, shrink=True)
    self.assertEqual(small.backbone.get_config()['intermediate_dim'], 16)
    x = backbone_inputs('bert')
    path = os.path.join(self.get_temp_dir(), 'task.keras')
    small.save(path)
    self.assertAllClose(keras.models.load_model(path)(x), pruned(x), atol=1e-5)

  def test_bert_heads_are_refused(self):
    _, pruned = self._pruned('bert', HEADS)
    with self.assertRaisesRegex(
      errors.KerasStripError,
      r'^Rebuilt with num_heads=2, intermediate_dim=16, BertBackbone gives '
      r'.*query/kernel the shape \[16, 2, 8\] where the shrunk weight is '
      r'\[16, 2, 4\]: BertBackbone derives the size of a head from '
      r'num_heads.*do_not_prune.*shrink=True[^\n]*$',
    ):
      graph_prune.strip_keras(pruned, shrink=True)

  def test_layers_left_different_sizes_are_refused(self):
    model, pruned = self._pruned(
      'bert', HEADS.replace('pooled_dense]', f'pooled_dense,{ATTENTION}]')
    )
    # One more unit of the first layer's FFN becomes zero, so shrink leaves
    # it 15 units where the second layer keeps 16.
    for w in model.weights:
      if w.path == 'transformer_layer_0/feedforward_intermediate_dense/kernel':
        masked = _masked(pruned, w)
        unit = _live_columns(masked)[0]
        value = w.numpy()
        value[:, unit] = 0.0
        w.assign(value)
    with self.assertRaisesRegex(
      errors.KerasStripError,
      r'BertBackbone takes one intermediate_dim for all its layers.*'
      r'transformer_layer_0: 15, transformer_layer_1: 16\)',
    ):
      graph_prune.strip_keras(pruned, shrink=True)


if __name__ == '__main__':
  tf.test.main()
