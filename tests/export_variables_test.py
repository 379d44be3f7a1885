"""Stripped models keep their weights as variables (issue 23).

The folded weights are non-trainable variables holding weight * mask (+0.0
where pruned), saved in `variables/` like a dense model's weights; no graph
proto carries a weight's value; formats of constants (the frozen GraphDef,
TFLite) freeze at their own step and refuse, in one line and before writing
anything, weights beyond their 2 GB limit. Compared with NumPy's
weight * mask, never with the code under test.
"""

import os
import tempfile
import unittest
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import graph_prune
from graph_prune import errors
from graph_prune.export.formats import frozen_graph
from graph_prune.export.formats import proto_limit
from graph_prune.export.strip import export_saved_model
from graph_prune.export.strip import strip
from graph_prune.export.strip_saved_model import strip_saved_model

RUN_HEAVY = os.environ.get('GRAPH_PRUNE_HEAVY_TESTS') == '1'


class TwoHeads(tf.Module):
  """Raw variables, two signatures sharing the first kernel."""

  def __init__(self):
    super().__init__()
    rng = np.random.RandomState(0)
    self.w1 = tf.Variable(rng.standard_normal((6, 16)).astype('float32'))
    self.b1 = tf.Variable(rng.standard_normal(16).astype('float32'))
    self.w2 = tf.Variable(rng.standard_normal((16, 3)).astype('float32'))

  @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32)])
  def __call__(self, x):
    h = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
    return tf.matmul(h, self.w2)


def _random_masks(pruned, seed=0):
  rng = np.random.RandomState(seed)
  for mask in pruned.masks:
    value = (rng.rand(*mask.shape) < 0.4).astype(np.float32)
    mask.assign(value)


def _folded(pruned):
  """NumPy's weight * mask, +0.0 where pruned, by weight name."""
  return {
    name: np.where(m.numpy() == 0, np.float32(0), w.numpy() * m.numpy())
    for name, w, m in zip(
      [graph_prune_name(m) for m in pruned.masks], pruned.weights, pruned.masks
    )
  }


def graph_prune_name(mask):
  return mask.name[: -len('/mask:0')]


def _saved_values(path):
  """The values of every variable in a SavedModel's checkpoint."""
  reader = tf.train.load_checkpoint(
    os.path.join(path, 'variables', 'variables')
  )
  return [
    reader.get_tensor(key)
    for key in reader.get_variable_to_shape_map()
    if key.endswith('VARIABLE_VALUE')
  ]


def _largest_const(path):
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
    proto.ParseFromString(f.read())
  graph_def = proto.meta_graphs[0].graph_def
  nodes = list(graph_def.node) + [
    n for f in graph_def.library.function for n in f.node_def
  ]
  sizes = [n.attr['value'].tensor.ByteSize() for n in nodes if n.op == 'Const']
  return max(sizes, default=0)


class ExportVariablesTest(tf.test.TestCase, parameterized.TestCase):
  def tmp(self, name):
    return os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), name)

  def test_module_with_two_signatures_shares_folded_variables(self):
    module = TwoHeads()
    pruned = graph_prune.apply_pruning(module, 'target_sparsity=0.5')
    _random_masks(pruned)
    x = tf.constant(
      np.random.RandomState(1).standard_normal((4, 6)), tf.float32
    )
    logits = tf.function(
      lambda v: {'logits': pruned(v)},
      input_signature=[tf.TensorSpec([None, 6], tf.float32)],
    )
    probs = tf.function(
      lambda v: {'probs': tf.nn.softmax(pruned(v))},
      input_signature=[tf.TensorSpec([None, 6], tf.float32)],
    )
    path = self.tmp('out')
    export_saved_model(
      pruned, path, signatures={'logits': logits, 'probs': probs}
    )
    loaded = tf.saved_model.load(path)
    w1 = module.w1.numpy() * pruned.masks[0].numpy()
    w2 = module.w2.numpy() * pruned.masks[1].numpy()
    want = np.maximum(x.numpy() @ w1 + module.b1.numpy(), 0) @ w2
    self.assertAllClose(
      want, loaded.signatures['logits'](x)['logits'], atol=1e-5
    )
    self.assertAllClose(
      tf.nn.softmax(want), loaded.signatures['probs'](x)['probs'], atol=1e-6
    )
    # One variable per weight (the folded ones shared by both signatures),
    # none of them a mask; the folded ones hold NumPy's w * m with +0.0.
    stored = _saved_values(path)
    self.assertLen(stored, 3)
    for folded in (w1, w2):
      (match,) = [v for v in stored if v.shape == folded.shape]
      self.assertAllEqual(np.where(folded == 0, 0, folded), match)
      self.assertFalse(np.any(np.signbit(match[match == 0])))
    self.assertLess(_largest_const(path), 1024)

  @parameterized.named_parameters(
    ('keras3', 'keras3'), ('tf_keras', 'tf_keras')
  )
  def test_lstm_exports_with_folded_variables(self, flavour):
    if flavour == 'tf_keras':
      import tf_keras as k  # pylint: disable=g-import-not-at-top
    else:
      k = keras
    k.utils.set_random_seed(0)
    model = k.Sequential([k.Input((5, 3)), k.layers.LSTM(8), k.layers.Dense(2)])
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _random_masks(pruned, seed=2)
    x = np.random.RandomState(3).standard_normal((4, 5, 3)).astype('float32')
    want = pruned(x).numpy()
    path = self.tmp('lstm')
    export_saved_model(pruned, path)
    loaded = tf.saved_model.load(path)
    got = list(loaded.signatures['serving_default'](tf.constant(x)).values())
    self.assertAllClose(want, got[0], atol=1e-5)
    stored = _saved_values(path)
    for name, folded in _folded(pruned).items():
      self.assertTrue(
        any(
          v.shape == folded.shape and np.array_equal(v, folded) for v in stored
        ),
        msg=f'{name} missing from variables/',
      )
    self.assertLess(_largest_const(path), 1024)

  def test_stripped_model_is_a_snapshot(self):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _random_masks(pruned)
    stripped = strip(pruned)
    x = np.ones((2, 4), np.float32)
    before = stripped(x).numpy()
    model.layers[-1].kernel.assign(model.layers[-1].kernel + 1.0)
    model.layers[-1].bias.assign(model.layers[-1].bias + 1.0)
    self.assertAllEqual(before, stripped(x))
    fixed = [v for v in stripped.variables if not v.trainable]
    self.assertLen(fixed, 1)

  def test_shrunk_export_keeps_weights_in_variables(self):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
      [
        keras.Input((40,)),
        keras.layers.Dense(64, activation='relu'),
        keras.layers.Dense(5),
      ]
    )
    pruned = graph_prune.apply_pruning(
      model, 'target_sparsity=0.5,granularity=unit,unit_params=kernel'
    )
    mask = np.ones((40, 64), np.float32)
    mask[:, 16:] = 0  # 48 of the first layer's 64 units
    pruned.masks[0].assign(mask)
    pruned.masks[1].assign(np.ones((64, 5), np.float32))
    x = np.random.RandomState(0).standard_normal((3, 40)).astype('float32')
    want = pruned(x).numpy()
    path = self.tmp('shrunk')
    export_saved_model(pruned, path, shrink=True)
    loaded = tf.saved_model.load(path)
    got = list(loaded.signatures['serving_default'](tf.constant(x)).values())
    self.assertAllClose(want, got[0], atol=1e-5)
    self.assertLess(_largest_const(path), 4096)
    shapes = sorted(v.shape for v in _saved_values(path))
    kernel, bias = model.layers[0].kernel.numpy(), model.layers[0].bias.numpy()
    self.assertEqual(shapes, sorted([(16,), (40, 16), (16, 5), (5,)]))
    stored = _saved_values(path)
    (first,) = [v for v in stored if v.shape == (40, 16)]
    self.assertAllEqual(kernel[:, :16], first)
    (b,) = [v for v in stored if v.shape == (16,)]
    self.assertAllEqual(bias[:16], b)


class ProtoLimitTest(tf.test.TestCase):
  """Formats of constants refuse weights over their limit, writing nothing.

  The limit is lowered to the model's size minus one byte: the same check a
  2 GB model meets, without allocating one.
  """

  def setUp(self):
    super().setUp()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    self.pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _random_masks(self.pruned)
    self.root = tempfile.mkdtemp(dir=self.get_temp_dir())
    self.saved = os.path.join(self.root, 'pruned')
    tf.saved_model.save(self.pruned, self.saved)
    # Folded kernel (8*4) and bias (4), float32.
    self.size = (8 * 4 + 4) * 4

  def _assert_refused(self, **outputs):
    limit = mock.patch.object(proto_limit, 'PROTO_LIMIT_BYTES', self.size - 1)
    out = os.path.join(self.root, 'out')
    with limit, self.assertRaises(errors.ProtoLimitError) as caught:
      strip_saved_model(self.saved, out, **outputs)
    message = str(caught.exception)
    self.assertLen(message.splitlines(), 1)
    self.assertIn(f'{self.size / 2**30:.2f} GiB', message)
    self.assertIn(str(self.size - 1), message)
    self.assertIn('SavedModel', message)
    self.assertEqual(sorted(os.listdir(self.root)), ['pruned'])
    return message

  def test_frozen_graph_over_limit(self):
    message = self._assert_refused(
      frozen_graph_path=os.path.join(self.root, 'g.pb')
    )
    self.assertIn('frozen GraphDef', message)

  def test_tflite_over_limit(self):
    message = self._assert_refused(
      tflite_path=os.path.join(self.root, 'm.tflite')
    )
    self.assertIn('TFLite', message)

  def test_export_tflite_over_limit(self):
    path = os.path.join(self.root, 'direct.tflite')
    limit = mock.patch.object(proto_limit, 'PROTO_LIMIT_BYTES', self.size - 1)
    with limit, self.assertRaises(errors.ProtoLimitError) as caught:
      graph_prune.export_tflite(self.pruned, path)
    self.assertIn('TFLite', str(caught.exception))
    self.assertEqual(sorted(os.listdir(self.root)), ['pruned'])

  def test_at_limit_freezes(self):
    path = os.path.join(self.root, 'g.pb')
    with mock.patch.object(proto_limit, 'PROTO_LIMIT_BYTES', self.size):
      strip_saved_model(
        self.saved, os.path.join(self.root, 'out'), frozen_graph_path=path
      )
    self.assertTrue(os.path.isfile(path))


@unittest.skipUnless(
  RUN_HEAVY, 'set GRAPH_PRUNE_HEAVY_TESTS=1 (make test-heavy)'
)
class BeyondTwoGigabytesTest(tf.test.TestCase):
  """A model whose masked weights exceed 2 GB exports and loads back."""

  def test_export_past_the_proto_limit(self):
    # 9 x 8192x8192 float32 kernels: 2.42 GB of masked weights.
    layers = [keras.Input((8192,))]
    layers += [keras.layers.Dense(8192, use_bias=False) for _ in range(9)]
    model = keras.Sequential(layers)
    pruned = graph_prune.apply_pruning(
      model, 'target_sparsity=0.9,sparsity_function_end_step=1'
    )
    pruned.mask_update(1)
    self.assertAllClose(0.9, pruned.sparsity().overall, atol=1e-3)
    self.assertGreater(proto_limit.weight_bytes(model.weights), 2**31)
    x = np.random.RandomState(0).standard_normal((2, 8192)).astype('float32')
    want = pruned(x).numpy()
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'big')
    export_saved_model(pruned, path)
    loaded = tf.saved_model.load(path)
    got = list(loaded.signatures['serving_default'](tf.constant(x)).values())
    self.assertAllClose(want, got[0], rtol=1e-4, atol=1e-4)
    with self.assertRaises(errors.ProtoLimitError):
      frozen_graph.freeze(strip(pruned).__call__, 'the model')


if __name__ == '__main__':
  tf.test.main()
