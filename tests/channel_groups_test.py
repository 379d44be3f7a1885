"""Tests of unit_params=all and unit_groups=coupled (passes/channel_groups.py).

The analysis runs through `apply_pruning`; what it finds is checked as the
masks the update writes: a unit parameter's mask equals its kernel's unit
mask, coupled kernels share the channels chosen by the joint L2 norm that
NumPy computes from the weights, a concat maps each part to its offset, and
the pruned model's outputs equal a NumPy forward pass with the masked
weights. Keras 3 and tf_keras (whose BatchNorm is one fused op).
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
import tf_keras

import graph_prune

_ONE_SHOT = (
  'target_sparsity=0.5,granularity=unit,begin_pruning_step=0,'
  'end_pruning_step=1,sparsity_function_end_step=1'
)


def _prune(model, shape, extra=''):
  pruned = graph_prune.apply_pruning(
    model,
    _ONE_SHOT + (f',{extra}' if extra else ''),
    input_signature=[tf.TensorSpec([None, *shape], tf.float32)],
  )
  pruned.mask_update(1)
  return pruned


def _units(mask):
  mask = np.asarray(mask)
  return mask.reshape(-1, mask.shape[-1]).max(axis=0)


def _short(name):
  """'sequential/h1/kernel:0' -> 'h1/kernel'."""
  return '/'.join(name.split(':')[0].split('/')[-2:])


def _by_name(pruned):
  masks = {_short(n): m for n, m in zip(pruned.weight_names, pruned.masks)}
  params = {_short(p.name): np.asarray(p.mask) for p in pruned.unit_params}
  return masks, params


def _norms(kernel):
  kernel = np.asarray(kernel, np.float64)
  return (kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0)


def _lowest(squares, n):
  keep = np.ones(squares.size)
  keep[np.argsort(squares, kind='stable')[:n]] = 0
  return keep


class UnitParamsTest(tf.test.TestCase, parameterized.TestCase):
  def _mlp(self, library):
    layers = library.layers
    return library.Sequential(
      [
        library.Input((6,)),
        layers.Dense(8, activation='relu', name='h1'),
        layers.Dense(6, activation='sigmoid', name='h2'),
        layers.Dense(3, name='out'),
      ]
    )

  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_bias_masked_with_its_units(self, library):
    model = self._mlp(library)
    pruned = _prune(model, (6,))
    masks, params = _by_name(pruned)
    for layer in ('h1', 'h2', 'out'):
      self.assertAllEqual(
        params[f'{layer}/bias'], _units(masks[f'{layer}/kernel'])
      )
    # The outputs: a NumPy forward pass with kernel and bias masked.
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    h = x
    for layer, act in (('h1', 'relu'), ('h2', 'sigmoid'), ('out', None)):
      dense = model.get_layer(layer)
      w = np.asarray(dense.kernel) * np.asarray(masks[f'{layer}/kernel'])
      b = np.asarray(dense.bias) * params[f'{layer}/bias']
      h = h @ w + b
      if act == 'relu':
        h = np.maximum(h, 0)
      elif act == 'sigmoid':
        h = 1 / (1 + np.exp(-h))
    self.assertAllClose(pruned(x), h, atol=1e-5)

  def test_kernel_keeps_bias(self):
    pruned = _prune(self._mlp(keras), (6,), 'unit_params=kernel')
    self.assertEqual(pruned.unit_params, ())
    self.assertEqual(pruned.report.unit_params, ())

  def test_weight_granularity_has_none(self):
    pruned = graph_prune.apply_pruning(
      self._mlp(keras),
      'target_sparsity=0.5',
      input_signature=[tf.TensorSpec([None, 6], tf.float32)],
    )
    self.assertEqual(pruned.unit_params, ())

  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_conv_batch_norm_depthwise(self, library):
    layers = library.layers
    model = library.Sequential(
      [
        library.Input((6, 6, 2)),
        layers.Conv2D(4, 3, padding='same', name='conv'),
        layers.BatchNormalization(name='bn'),
        layers.ReLU(),
        layers.DepthwiseConv2D(3, padding='same', use_bias=False, name='dw'),
        layers.BatchNormalization(name='dwbn'),
        layers.GlobalAveragePooling2D(),
        layers.Dense(2, name='out'),
      ]
    )
    pruned = _prune(model, (6, 6, 2))
    masks, params = _by_name(pruned)
    units = _units(masks['conv/kernel'])
    self.assertEqual(units.sum(), 2)
    # Conv bias and both BatchNorms' scale and shift follow the conv's units
    # (the depthwise conv passes its channels through); the moving
    # statistics are not trainable and stay.
    for name in ('conv/bias', 'bn/gamma', 'bn/beta', 'dwbn/gamma', 'dwbn/beta'):
      self.assertAllEqual(params[name], units, msg=name)
    self.assertNotIn('bn/moving_mean', params)
    # A pruned channel is exactly 0 after the BatchNorms, in both modes.
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 2)).astype(np.float32)
    probe = graph_prune.strip(pruned)
    self.assertAllClose(probe(x), pruned(x), atol=1e-5)
    pruned(x, training=True)  # the training graph masks the same params


class CoupledTest(tf.test.TestCase, parameterized.TestCase):
  def _residual(self, library):
    layers = library.layers
    x = inputs = library.Input((6, 6, 2))
    a = layers.Conv2D(6, 1, name='a')(x)
    b = layers.Conv2D(6, 3, padding='same', name='b')(layers.ReLU()(a))
    x = layers.Add()([a, b])
    c = layers.Conv2D(6, 1, name='c')(layers.ReLU()(x))
    x = layers.Add()([x, c])
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, name='out')(x)
    return library.Model(inputs, outputs)

  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_residual_channels_pruned_together(self, library):
    model = self._residual(library)
    pruned = _prune(model, (6, 6, 2), 'unit_groups=coupled')
    masks, params = _by_name(pruned)
    joint = sum(_norms(model.get_layer(n).kernel) for n in 'abc')
    expected = _lowest(joint, 3)
    for name in 'abc':
      self.assertAllEqual(_units(masks[f'{name}/kernel']), expected, msg=name)
      self.assertAllEqual(params[f'{name}/bias'], expected)
    self.assertLen(pruned.report.unit_groups, 1)
    self.assertIn('a/kernel', pruned.report.unit_groups[0])
    # The logits are a group of their own, pruned as a kernel alone.
    out = _units(masks['out/kernel'])
    self.assertAllEqual(out, _lowest(_norms(model.get_layer('out').kernel), 1))
    # The outputs equal the same model with the masked weights and biases
    # zeroed by NumPy; stripping keeps them.
    twin = self._residual(library)
    for layer in model.layers:
      if not layer.weights:
        continue
      name = layer.name
      twin.get_layer(name).set_weights(
        [
          np.asarray(layer.kernel) * np.asarray(masks[f'{name}/kernel']),
          np.asarray(layer.bias) * params[f'{name}/bias'],
        ]
      )
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 2)).astype(np.float32)
    self.assertAllClose(pruned(x), twin(x), atol=1e-5)
    self.assertAllClose(graph_prune.strip(pruned)(x), twin(x), atol=1e-5)
    # Shrink removes the group's pruned channels from every member.
    shrunk = graph_prune.shrink(pruned)
    # a, b and c keep 3 of 6 channels; the logits keep their pruned unit,
    # a model output.
    widths = [layer.units_after for layer in shrunk.shrink_report.main.layers]
    self.assertEqual(widths, [3, 3, 3, 3])
    self.assertAllClose(shrunk(x), twin(x), atol=1e-5)

  def test_under_a_mirrored_strategy(self):
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    with strategy.scope():
      model = self._residual(keras)
      pruned = graph_prune.apply_pruning(
        model,
        _ONE_SHOT + ',unit_groups=coupled',
        input_signature=[tf.TensorSpec([None, 6, 6, 2], tf.float32)],
      )

    @tf.function
    def step():
      strategy.run(lambda: pruned.mask_update(1))

    step()
    masks, params = _by_name(pruned)
    joint = sum(_norms(model.get_layer(n).kernel) for n in 'abc')
    for name in 'abc':
      self.assertAllEqual(_units(masks[f'{name}/kernel']), _lowest(joint, 3))
      self.assertAllEqual(params[f'{name}/bias'], _lowest(joint, 3))

  def test_without_coupling_each_kernel_alone(self):
    model = self._residual(keras)
    pruned = _prune(model, (6, 6, 2))
    masks, _ = _by_name(pruned)
    for name in 'abc':
      kernel = model.get_layer(name).kernel
      self.assertAllEqual(
        _units(masks[f'{name}/kernel']), _lowest(_norms(kernel), 3)
      )
    self.assertEqual(pruned.report.unit_groups, ())

  def test_concat_maps_offsets(self):
    layers = keras.layers
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2D(4, 1, name='a')(inputs)
    b = layers.Conv2D(2, 1, name='b')(inputs)
    c = layers.Conv2D(6, 1, name='c')(inputs)
    x = layers.Add()([layers.Concatenate()([a, b]), c])
    outputs = layers.Dense(2, name='out')(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    pruned = _prune(model, (4, 4, 2), 'unit_groups=coupled')
    masks, _ = _by_name(pruned)
    joint = _norms(model.get_layer('c').kernel)
    joint[:4] += _norms(model.get_layer('a').kernel)
    joint[4:] += _norms(model.get_layer('b').kernel)
    keep = _lowest(joint, 3)
    self.assertAllEqual(_units(masks['a/kernel']), keep[:4])
    self.assertAllEqual(_units(masks['b/kernel']), keep[4:])
    self.assertAllEqual(_units(masks['c/kernel']), keep)

  def test_squeeze_excitation_and_depthwise(self):
    layers = keras.layers
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(4, 1, name='expand')(inputs)
    x = layers.DepthwiseConv2D(3, padding='same', use_bias=False, name='dw')(x)
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Conv2D(2, 1, activation='relu', name='squeeze')(s)
    s = layers.Conv2D(4, 1, activation='sigmoid', name='excite')(s)
    x = layers.Multiply()([x, s])
    outputs = layers.Dense(2, name='out')(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    pruned = _prune(model, (4, 4, 2), 'unit_groups=coupled')
    masks, _ = _by_name(pruned)
    dw = np.asarray(model.get_layer('dw').kernel, np.float64)
    joint = (
      _norms(model.get_layer('expand').kernel)
      + _norms(model.get_layer('excite').kernel)
      + (dw**2).sum(axis=(0, 1, 3))
    )
    keep = _lowest(joint, 2)
    self.assertAllEqual(_units(masks['expand/kernel']), keep)
    self.assertAllEqual(_units(masks['excite/kernel']), keep)
    self.assertAllEqual(np.asarray(masks['dw/kernel'])[0, 0, :, 0], keep)

  def test_coupled_needs_unit_granularity(self):
    with self.assertRaisesRegex(ValueError, 'unit_groups=coupled.*granularity'):
      graph_prune.parse_hparams('unit_groups=coupled')


class ExportTest(tf.test.TestCase):
  """Unit parameter masks are state: exported, restored, folded."""

  def _pruned(self):
    model = keras.Sequential(
      [
        keras.Input((5,)),
        keras.layers.Dense(
          6, 'sigmoid', bias_initializer='random_normal', name='h'
        ),
        keras.layers.Dense(2, name='out'),
      ]
    )
    return model, _prune(model, (5,))

  def test_strip_keras_masks_biases(self):
    model, pruned = self._pruned()
    _, params = _by_name(pruned)
    clone = graph_prune.strip_keras(pruned)
    bias = np.asarray(clone.get_layer('h').bias)
    self.assertAllEqual(bias != 0, params['h/bias'] != 0)
    kept = params['h/bias'] == 1
    self.assertAllEqual(bias[kept], np.asarray(model.get_layer('h').bias)[kept])
    x = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
    self.assertAllClose(clone(x), pruned(x), atol=1e-6)

  def test_checkpoint_and_saved_model(self):
    _, pruned = self._pruned()
    _, params = _by_name(pruned)
    x = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    expected = pruned(x)
    path = tf.train.Checkpoint(pruned=pruned).save(self.get_temp_dir() + '/c')
    for p in pruned.unit_params:
      p.mask.assign(tf.ones_like(p.mask))
    tf.train.Checkpoint(pruned=pruned).restore(path).assert_consumed()
    self.assertAllEqual(_by_name(pruned)[1]['h/bias'], params['h/bias'])
    export_dir = self.get_temp_dir() + '/pruned'
    tf.saved_model.save(pruned, export_dir)
    stripped_dir = self.get_temp_dir() + '/stripped'
    graph_prune.strip_saved_model(export_dir, stripped_dir)
    loaded = tf.saved_model.load(stripped_dir)
    self.assertAllClose(
      loaded.signatures['serving_default'](tf.constant(x)).popitem()[1],
      expected,
      atol=1e-6,
    )
    names = [v.name for v in loaded.variables]
    self.assertFalse([n for n in names if 'mask' in n], names)


if __name__ == '__main__':
  tf.test.main()
