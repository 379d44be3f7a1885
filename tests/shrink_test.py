"""Tests of graph_prune.shrink and the shrink_units pass.

Each model gets masks that zero whole output units (columns of a kernel's
last axis), is shrunk, and is compared with the pruned model itself (the
original computation with its masks) and with NumPy: the outputs agree to
float tolerance, each layer keeps exactly the units NumPy finds non-zero,
the removed units' constant output is folded into the next bias as NumPy
computes it, and the parameter and multiply-add counts are the closed-form
ones. Where the unit cannot go (the output, the other side of a residual
add, a zero-padded conv, an LSTM), nothing is removed and the report says
why; tests/shrink_coupled_test.py has the coupled channels.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
import tf_keras

import graph_prune
from graph_prune.export.formats import frozen_graph
from graph_prune.export.shrink import shrink
from graph_prune.export.strip import export_saved_model
from graph_prune.export.strip import strip
from graph_prune.passes import shrink_units
from graph_prune.train import versioned_export

RTOL, ATOL = 1e-5, 1e-5


def _zero_units(pruned, seed=0, fraction=0.5):
  """Zeroes `fraction` of each kernel's output units; returns them."""
  rng = np.random.RandomState(seed)
  zeroed = {}
  for weight, mask in zip(pruned.weights, pruned.masks):
    units = mask.shape[-1]
    dead = rng.permutation(units)[: int(units * fraction)]
    value = np.ones(mask.shape, np.float32)
    value[..., dead] = 0
    mask.assign(value)
    zeroed[weight.name.split(':')[0]] = np.sort(dead)
  return zeroed


def _randomize(model, seed=0):
  """Random weights; BatchNorm variances positive (around 1)."""
  rng = np.random.RandomState(seed)
  for w in model.weights:
    name = getattr(w, 'path', w.name)
    value = rng.randn(*w.shape).astype(np.float32) * 0.5
    w.assign(1.0 + np.abs(value) if 'variance' in name else value)


def _inputs(pruned, batch=3, seed=1):
  spec = pruned.__call__.input_signature[0]
  shape = [batch if d is None else d for d in spec.shape]
  return tf.constant(np.random.RandomState(seed).rand(*shape), spec.dtype)


L = keras.layers


def _mlp(library=keras, activation='relu'):
  layers = library.layers
  return library.Sequential(
    [
      library.Input((6,)),
      layers.Dense(8, activation=activation),
      layers.Dense(6, activation='sigmoid'),
      layers.Dense(3),
    ]
  )


class RawMLP(tf.Module):
  def __init__(self):
    super().__init__()
    rng = np.random.RandomState(3)
    self.w1 = tf.Variable(rng.randn(6, 8).astype(np.float32), name='w1')
    self.b1 = tf.Variable(rng.randn(8).astype(np.float32), name='b1')
    self.w2 = tf.Variable(rng.randn(8, 3).astype(np.float32), name='w2')
    self.b2 = tf.Variable(rng.randn(3).astype(np.float32), name='b2')

  @tf.function(input_signature=[tf.TensorSpec([None, 6])])
  def __call__(self, x):
    return tf.nn.tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2


def _numpy_mlp(weights, x, activations):
  for (w, b), act in zip(weights, activations):
    x = act(x @ w + b)
  return x


def _assert_one_close(test, values, expected):
  """Exactly one of `values` (the stripped biases) is close to `expected`."""
  close = [
    v
    for v in values
    if v.shape == expected.shape and np.allclose(v, expected, rtol=1e-6)
  ]
  test.assertLen(close, 1, msg=f'{expected} not among {values}')


def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


class MLPTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(('keras3', keras), ('tf_keras', tf_keras))
  def test_keeps_surviving_widths_and_outputs(self, library):
    library.utils.set_random_seed(0)
    model = _mlp(library)
    _randomize(model)
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    zeroed = _zero_units(pruned)
    module = shrink(pruned)
    x = _inputs(pruned)
    # NumPy forward pass of the masked weights.
    values = [w.numpy() for w in model.weights]
    kernels = [k * m.numpy() for k, m in zip(values[0::2], pruned.masks)]
    expected = _numpy_mlp(
      list(zip(kernels, values[1::2])),
      x.numpy(),
      [lambda v: np.maximum(v, 0), _sigmoid, lambda v: v],
    )
    self.assertAllClose(module(x), expected, rtol=RTOL, atol=ATOL)
    self.assertAllClose(module(x), pruned(x), rtol=RTOL, atol=ATOL)
    units = [layer.units_after for layer in module.shrink_report.main.layers]
    widths = [
      m.shape[-1] - len(d) for m, d in zip(pruned.masks, zeroed.values())
    ]
    self.assertEqual(units, widths[:2] + [3])
    # The last layer's zero unit stays: it is an output.
    last = module.shrink_report.main.layers[-1]
    self.assertEqual(last.zero_units, 1)
    self.assertIn('model output', last.kept[0])
    # The biases stay trainable variables; the shrunk kernels are fixed
    # variables of the surviving widths.
    self.assertEqual(
      sorted(tuple(v.shape) for v in module.variables if v.trainable),
      [(3,), (3,), (4,)],
    )
    self.assertEqual(
      sorted(tuple(v.shape) for v in module.variables if not v.trainable),
      sorted([(6, units[0]), (units[0], units[1]), (units[1], 3)]),
    )

  def test_sigmoid_constant_folds_into_next_bias(self):
    keras.utils.set_random_seed(1)
    model = _mlp()
    _randomize(model, seed=1)
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    zeroed = _zero_units(pruned, seed=2)
    module = shrink(pruned)
    _, b2, w3, b3 = [w.numpy() for w in model.weights[2:]]
    dead = list(zeroed.values())[1]
    w3 = w3 * pruned.masks[2].numpy()  # the folded (masked) kernel
    # A removed sigmoid unit emits sigmoid(b2[u]) into every output.
    expected = b3 + _sigmoid(b2[dead]) @ w3[dead]
    # The copies of the biases (the trainable variables): the output's holds
    # the folded constant.
    biases = [v.numpy() for v in module.variables if v.trainable]
    self.assertEqual(len(biases), 3)
    _assert_one_close(self, biases, expected)

  def test_raw_module_counts(self):
    raw = RawMLP()
    pruned = graph_prune.apply_pruning(raw, 'target_sparsity=0.5')
    pruned.masks[0].assign(np.repeat([[1, 0, 1, 0, 1, 0, 1, 1]], 6, 0))
    pruned.masks[1].assign(np.ones([8, 3]))
    module = shrink(pruned)
    x = _inputs(pruned)
    w1 = raw.w1.numpy() * pruned.masks[0].numpy()
    expected = np.tanh(x.numpy() @ w1 + raw.b1.numpy()) @ raw.w2.numpy()
    self.assertAllClose(
      module(x), expected + raw.b2.numpy(), rtol=RTOL, atol=ATOL
    )
    result = module.shrink_report.main
    self.assertEqual([x.units_after for x in result.layers], [5, 3])
    self.assertEqual(result.params_before, 6 * 8 + 8 + 8 * 3 + 3)
    self.assertEqual(result.params_after, 6 * 5 + 5 + 5 * 3 + 3)
    self.assertEqual(result.macs_before, 6 * 8 + 8 * 3)
    self.assertEqual(result.macs_after, 6 * 5 + 5 * 3)
    text = module.shrink_report.to_text()
    self.assertIn('8->5', text)
    data = json.loads(json.dumps(module.shrink_report.to_json()))
    self.assertEqual(data['functions']['__call__']['params_after'], 53)


def _cnn():
  x = keras.Input((8, 8, 2))
  y = L.Conv2D(4, 3, padding='same')(x)
  y = L.BatchNormalization()(y)
  y = L.ReLU()(y)
  y = L.DepthwiseConv2D(3, depth_multiplier=2)(y)
  y = L.MaxPooling2D()(y)
  y = L.Conv2D(6, 1, activation='relu')(y)
  return keras.Model(x, L.Dense(2)(L.Flatten()(y)))


def _tf_keras_cnn():
  x = tf_keras.Input((8, 8, 2))
  y = tf_keras.layers.Conv2D(4, 3)(x)
  y = tf_keras.layers.BatchNormalization()(y)
  y = tf_keras.layers.ReLU()(y)
  y = tf_keras.layers.Flatten()(y)
  return tf_keras.Model(x, tf_keras.layers.Dense(2)(y))


def _conv1d():
  x = keras.Input((10, 3))
  y = L.Conv1D(6, 3, activation='relu')(x)
  y = L.Conv1D(4, 1)(y)
  return keras.Model(x, L.Dense(2)(L.GlobalAveragePooling1D()(y)))


def _separable():
  x = keras.Input((8, 8, 3))
  y = L.Conv2D(6, 3, activation='relu')(x)
  y = L.SeparableConv2D(4, 3, activation='relu')(y)
  return keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(y)))


class ConvTest(tf.test.TestCase, parameterized.TestCase):
  def _shrunk_like_pruned(self, make):
    """Unit-prunes `make()` (depthwise kernels dense), shrinks it and checks
    that the shrunk module computes what the pruned model does."""
    model = make()
    _randomize(model)
    pruned = graph_prune.apply_pruning(
      model, 'target_sparsity=0.5,do_not_prune=[depthwise]'
    )
    _zero_units(pruned)
    module = shrink(pruned)
    x = _inputs(pruned)
    self.assertAllClose(module(x), pruned(x), rtol=1e-4, atol=1e-4)
    return module

  @parameterized.named_parameters(
    ('conv1d', _conv1d, [3, 2, 2]), ('separable', _separable, [3, 2, 2])
  )
  def test_conv1d_and_separable(self, make, widths):
    keras.utils.set_random_seed(0)
    module = self._shrunk_like_pruned(make)
    # Every zero unit goes but the output's (relu(b) folds through 1x1,
    # VALID convs and global pooling into the next bias).
    self.assertEqual(
      [layer.units_after for layer in module.shrink_report.main.layers],
      widths,
    )

  @parameterized.named_parameters(
    ('keras3', _cnn, 8 * 8), ('tf_keras', _tf_keras_cnn, 6 * 6)
  )
  def test_bn_depthwise_flatten(self, make, positions):
    keras.utils.set_random_seed(0)
    tf_keras.utils.set_random_seed(0)
    module = self._shrunk_like_pruned(make)
    layers = module.shrink_report.main.layers
    self.assertEqual(layers[0].units_after, 2)  # conv: 4 -> 2
    # The first conv's multiply-adds: positions * 3 * 3 * 2 * units.
    self.assertEqual(layers[0].macs_before, positions * 9 * 2 * 4)
    self.assertEqual(layers[0].macs_after, positions * 9 * 2 * 2)

  def test_same_conv_keeps_constant_units(self):
    x = keras.Input((6, 6, 1))
    y = L.Conv2D(4, 3, padding='same', activation='sigmoid')(x)
    y = L.Conv2D(2, 3, padding='same')(y)
    model = keras.Model(x, L.GlobalAveragePooling2D()(y))
    _randomize(model)
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _zero_units(pruned)
    module = shrink(pruned)
    first = module.shrink_report.main.layers[0]
    self.assertEqual((first.units_before, first.units_after), (4, 4))
    self.assertIn('zero-padded', first.kept[0])
    x = _inputs(pruned)
    self.assertAllClose(module(x), pruned(x), rtol=RTOL, atol=ATOL)


class StopTest(tf.test.TestCase):
  def test_residual_add_removes_units_zero_on_both_sides(self):
    x = keras.Input((6,))
    a = L.Dense(8, activation='relu')(x)
    b = L.Dense(8)(a)
    model = keras.Model(x, L.Dense(3)(L.Add()([a, b])))
    _randomize(model)
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    masks = [np.ones(m.shape, np.float32) for m in pruned.masks]
    masks[0][:, [1, 3, 5]] = 0
    masks[1][:, [1, 3, 6]] = 0
    for mask, value in zip(pruned.masks, masks):
      mask.assign(value)
    module = shrink(pruned)
    first, second, _ = module.shrink_report.main.layers
    # Units 1 and 3 are zero on both sides of the add and go; 5 and 6 stay.
    for layer in (first, second):
      self.assertEqual((layer.units_before, layer.units_after), (8, 6))
      self.assertIn('coupled with non-zero units', layer.kept[0])
    (group,) = module.shrink_report.main.coupled
    self.assertEqual((group.channels_before, group.channels_after), (8, 6))
    xs = _inputs(pruned)
    self.assertAllClose(module(xs), pruned(xs), rtol=RTOL, atol=ATOL)
    # A removed unit u emits relu(b1[u]) + b2[u] into the last layer.
    _, b1, _, b2, w3, b3 = [w.numpy() for w in model.weights]
    gone = [1, 3]
    expected = b3 + (np.maximum(b1[gone], 0) + b2[gone]) @ w3[gone]
    _assert_one_close(
      self, [v.numpy() for v in module.variables if v.trainable], expected
    )

  def test_lstm_removes_nothing(self):
    model = keras.Sequential([keras.Input((4, 3)), L.LSTM(5), L.Dense(2)])
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _zero_units(pruned)
    module = shrink(pruned)
    result = module.shrink_report.main
    self.assertEqual(result.params_before, result.params_after)
    for layer in result.layers:
      self.assertEqual(layer.units_after, layer.units_before)
    x = _inputs(pruned)
    self.assertAllClose(module(x), pruned(x), rtol=RTOL, atol=ATOL)


class KeptReasonTest(tf.test.TestCase, parameterized.TestCase):
  """A kept unit's reason names the weight it is coupled with."""

  @parameterized.named_parameters(
    ('other_masked', ''),  # b/kernel folded with a mask of ones
    ('other_not_masked', ',do_not_prune=[b/kernel]'),  # a frozen variable
  )
  def test_coupled_reason_names_the_weight(self, extra):
    x = keras.Input((6,))
    a = L.Dense(8, activation='relu', name='a')(x)
    b = L.Dense(8, name='b')(a)
    model = keras.Model(x, L.Dense(3, name='c')(L.Add()([a, b])))
    _randomize(model)
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5' + extra)
    masks = {m.name.split(':')[0]: m for m in pruned.masks}
    value = np.ones([6, 8], np.float32)
    value[:, [1, 3]] = 0  # a's units 1 and 3: zero, but b's are not
    masks['a/kernel/mask'].assign(value)
    for name, mask in masks.items():
      if name != 'a/kernel/mask':
        mask.assign(np.ones(mask.shape, np.float32))
    want = (
      'the units are coupled with non-zero units of '
      f'{model.get_layer("b").kernel.path!r}',  # 'b/kernel'
    )
    first = shrink(pruned).shrink_report.main.layers[0]
    self.assertEqual((first.units_before, first.units_after), (8, 8))
    self.assertEqual(first.kept, want)
    # The pass alone, given no names, names the kernel's Const node.
    stripped = frozen_graph.freeze(strip(pruned).__call__, 'test')
    result = shrink_units.shrink_units(
      stripped.graph_def, stripped.output_names
    ).report
    node = result.layers[1].kernel
    self.assertNotEqual(node, 'b/kernel')
    self.assertEqual(
      result.layers[0].kept,
      (f'the units are coupled with non-zero units of {node!r}',),
    )


class ExportTest(tf.test.TestCase):
  def test_saved_model_and_tflite(self):
    keras.utils.set_random_seed(0)
    model = _mlp()
    _randomize(model)
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _zero_units(pruned)
    x = _inputs(pruned)
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'model')
      export_saved_model(pruned, path, shrink=True)
      loaded = tf.saved_model.load(path)
      self.assertAllClose(loaded(x), pruned(x), rtol=RTOL, atol=ATOL)
      sizes = sorted(v.shape.num_elements() for v in loaded.trainable_variables)
      self.assertEqual(sizes, [3, 3, 4])
      converter = tf.lite.TFLiteConverter.from_saved_model(path)
      interpreter = tf.lite.Interpreter(model_content=converter.convert())
      runner = interpreter.get_signature_runner()
      (key,) = runner.get_input_details()
      (out,) = runner(**{key: x.numpy()}).values()
      self.assertAllClose(out, pruned(x), rtol=RTOL, atol=ATOL)


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExportPathsTest(tf.test.TestCase):
  """strip_saved_model(shrink=True), the strip_masks tool, versioned exports."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    keras.utils.set_random_seed(0)
    cls.model = _mlp()
    _randomize(cls.model)
    cls.pruned = graph_prune.apply_pruning(cls.model, 'target_sparsity=0.5')
    _zero_units(cls.pruned)
    cls.tmp = tempfile.mkdtemp()
    cls.saved = os.path.join(cls.tmp, 'pruned')
    tf.saved_model.save(cls.pruned, cls.saved)
    cls.x = _inputs(cls.pruned)

  def _serve(self, path):
    fn = tf.saved_model.load(path).signatures['serving_default']
    (out,) = fn(**{_input_key(fn): self.x}).values()
    return out

  def test_strip_saved_model_shrink(self):
    out = os.path.join(self.tmp, 'shrunk')
    report = graph_prune.strip_saved_model(
      self.saved, out, shrink=True, latency_batches=(2,)
    )
    self.assertAllClose(
      self._serve(out), self.pruned(self.x), rtol=RTOL, atol=ATOL
    )
    (key, result) = report.shrink.functions[0]
    self.assertEqual(key, 'serving_default')
    self.assertEqual([x.units_after for x in result.layers], [4, 3, 3])
    self.assertEqual([row.batch for row in report.shrink.latency], [2])
    self.assertGreater(report.shrink.latency[0].shrunk_median, 0)
    self.assertIn('Shrunk serving_default', report.to_text())
    # The folded weights are listed with their shrunk shapes.
    self.assertEqual(
      [tuple(w.shape) for w in report.weights], [(6, 4), (4, 3), (3, 3)]
    )

  def test_tool_prints_shrink_report(self):
    out = os.path.join(self.tmp, 'tool')
    run = subprocess.run(
      [
        sys.executable,
        os.path.join(_ROOT, 'tools', 'strip_masks'),
        f'--saved_model={self.saved}',
        f'--output_dir={out}',
        '--shrink',
        '--latency_batches=1',
      ],
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES=''),
      capture_output=True,
      text=True,
      check=False,
    )
    self.assertEqual(run.returncode, 0, run.stderr)
    self.assertIn('8->4', run.stdout)
    self.assertIn('Latency', run.stdout)
    self.assertAllClose(
      self._serve(out), self.pruned(self.x), rtol=RTOL, atol=ATOL
    )

  def test_versioned_export_writes_shrunk(self):
    exports = versioned_export.export(
      self.pruned,
      os.path.join(self.tmp, 'export'),
      7,
      log=lambda _: None,
      shrink=True,
    )
    self.assertEqual(
      [e.kind for e in exports], ['pruned', 'stripped', 'shrunk']
    )
    shrunk = exports[-1]
    self.assertTrue(shrunk.path.endswith(os.path.join('shrunk', '7')))
    self.assertLess(shrunk.raw_bytes, exports[1].raw_bytes)
    self.assertAllClose(
      tf.saved_model.load(shrunk.path)(self.x),
      self.pruned(self.x),
      rtol=RTOL,
      atol=ATOL,
    )


def _input_key(signature):
  (key,) = signature.structured_input_signature[1]
  return key
