"""Tests of strip, export_saved_model, strip_saved_model and the folding passes.

Each model is pruned with random ~50% masks (so negative weights are masked
too), stripped, and compared with the pruned model: outputs equal (rtol
1e-6) eagerly, under tf.function and through a SavedModel; the stripped
graph, nested functions included, holds no variable op, no value of a mask
and no Mul by one; the SavedModel has no variable at all.
"""

import hashlib
import importlib
import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import saved_model_pb2

import graph_prune
from graph_prune import errors
from graph_prune.export import sizes
from graph_prune.export import staging
from graph_prune.export.strip import export_saved_model
from graph_prune.export.strip import strip
from graph_prune.export.strip_saved_model import strip_saved_model
from graph_prune.passes import drop_unused
from graph_prune.passes import fold_checks
from graph_prune.passes import fold_masks
from graph_prune.passes import graph_ir

L = keras.layers
RTOL = 1e-6
# The TFLite format's module, whose `convert_and_check` the export driver
# calls when strip_saved_model asks for a TFLite file.
tflite_format = importlib.import_module('graph_prune.export.formats.tflite')


def _mlp():
  return keras.Sequential(
    [keras.Input((6,)), L.Dense(8, activation='relu'), L.Dense(3)]
  )


def _cnn():
  x = keras.Input((6, 6, 2))
  y = L.Conv2D(3, 3, activation='relu')(x)
  y = L.DepthwiseConv2D(3, depth_multiplier=2)(y)
  return keras.Model(x, L.Dense(2)(L.Flatten()(y)))


def _lstm():
  return keras.Sequential([keras.Input((4, 3)), L.LSTM(5), L.Dense(2)])


class SubclassedModel(keras.Model):
  def __init__(self):
    super().__init__()
    self.a = L.Dense(5, activation='tanh')
    self.b = L.Dense(2)

  def call(self, x):
    return self.b(self.a(x)) + self.a(x)[:, :2]  # `a` read twice


def _subclassed():
  model = SubclassedModel()
  model(tf.zeros([1, 6]))
  return model


MODELS = {'mlp': _mlp, 'cnn': _cnn, 'lstm': _lstm, 'subclassed': _subclassed}


def _prune(kind, seed=0):
  keras.utils.set_random_seed(seed)
  model = MODELS[kind]()
  pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
  rng = np.random.RandomState(seed)
  for mask in pruned.masks:
    value = (rng.rand(*mask.shape) < 0.5).astype(np.float32)
    value.flat[0], value.flat[-1] = 0, 1
    mask.assign(value)
  return model, pruned


def _inputs(pruned, seed=1):
  spec = pruned.__call__.input_signature[0]
  shape = [2 if d is None else d for d in spec.shape]
  return tf.constant(
    np.random.RandomState(seed).standard_normal(shape), spec.dtype
  )


def _input_key(signature):
  (key,) = signature.structured_input_signature[1]
  return key


def _nodes(graph_def):
  """(where, node) for the graph and every function of its library."""
  for node in graph_def.node:
    yield 'graph', node
  for f in graph_def.library.function:
    for node in f.node_def:
      yield f.signature.name, node


def _folded_values(pruned):
  return [
    np.where(m.numpy() == 0, 0, w.numpy())
    for w, m in zip(pruned.weights, pruned.masks)
  ]


def _tree_digest(path):
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      digest.update(os.path.relpath(full, path).encode())
      with open(full, 'rb') as f:
        digest.update(f.read())
  return digest.hexdigest()


class StripTestCase(tf.test.TestCase, parameterized.TestCase):
  def tmp(self, name):
    return os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), name)

  def assert_nothing_of_pruning_left(self, concrete_function, pruned, model):
    """Checks the graph: no pruning variable, mask value, Mul by a mask.

    The function reads the unpruned weights' copies and one non-trainable
    variable per masked weight holding weight * mask (+0.0 where pruned),
    but no mask, threshold or step; it writes none, and holds no Const of
    a weight's size.
    """
    masks = [m.numpy() for m in pruned.masks]
    pruning_values = (
      masks
      + [t.numpy() for t in pruned.thresholds]
      + [pruned.last_mask_update_step.numpy()]
    )
    pruning = {id(v) for v in list(pruned.masks) + list(pruned.weights)}
    unpruned = [
      v
      for v in pruned.__call__.get_concrete_function().variables
      if id(v) not in pruning
    ]
    variables = concrete_function.variables
    self.assertLen(variables, len(unpruned) + len(pruned.masks))
    for variable in variables:
      self.assertNotRegex(variable.name, 'mask|threshold|last_mask_update_step')
      self.assertNotIn(variable.dtype, (tf.int64,))
      for value in pruning_values:
        self.assertFalse(
          variable.shape == value.shape
          and np.array_equal(variable.numpy(), value)
          and value.size > 2
        )
    # Every folded weight is a fixed variable: weight * mask, +0.0 zeros.
    fixed = [v for v in variables if not v.trainable]
    for folded in _folded_values(pruned):
      matches = [
        v.numpy()
        for v in fixed
        if v.shape == folded.shape and np.array_equal(v.numpy(), folded)
      ]
      self.assertNotEmpty(matches, msg='a folded weight is missing')
      self.assertFalse(np.any(np.signbit(matches[0][matches[0] == 0])))
    graph_def = concrete_function.graph.as_graph_def()
    writes = fold_checks.VARIABLE_OPS - {'ReadVariableOp', 'VarHandleOp'}
    for where, node in _nodes(graph_def):
      self.assertNotIn(node.op, writes, msg=f'{where}')
      self.assertNotRegex(node.name, 'mask|threshold|last_mask_update_step')
      self.assertFalse(graph_ir.is_masked_weight(node), msg=node.name)
      if node.op == 'Const':
        # No weight's value is in the graph: a few KB at most.
        self.assertLess(node.attr['value'].tensor.ByteSize(), 4096)

  def assert_saved_model_has_no_pruning_variables(self, path, pruned):
    """Its variables: the unpruned weights and the folded weights."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
      proto.ParseFromString(f.read())
    names = sorted(
      obj.variable.name
      for obj in proto.meta_graphs[0].object_graph_def.nodes
      if obj.WhichOneof('kind') == 'variable'
    )
    want = sorted(
      v.name[:-2]
      for v in pruned.__call__.get_concrete_function().variables
      if not v.name.endswith('/mask:0')
    )
    self.assertEqual(names, want)
    # No weight is in the graph proto: saved_model.pb holds no Const of a
    # weight's size, and the checkpoint holds the folded values.
    for node in proto.meta_graphs[0].graph_def.node:
      if node.op == 'Const':
        self.assertLess(node.attr['value'].tensor.ByteSize(), 4096)
    reader = tf.train.load_checkpoint(
      os.path.join(path, 'variables', 'variables')
    )
    stored = [
      reader.get_tensor(key)
      for key in reader.get_variable_to_shape_map()
      if key.endswith('VARIABLE_VALUE')
    ]
    for folded in _folded_values(pruned):
      self.assertTrue(
        any(
          v.shape == folded.shape and np.array_equal(v, folded) for v in stored
        ),
        msg='a folded weight is missing from variables/',
      )


class StripModelsTest(StripTestCase):
  @parameterized.named_parameters(*[(k, k) for k in MODELS])
  def test_strip_export_and_reload(self, kind):
    model, pruned = _prune(kind)
    x = _inputs(pruned)
    want = pruned(x).numpy()
    self.assertNotAllClose(want, model(x), msg='masks had no effect')

    stripped = strip(pruned)
    self.assertAllClose(want, stripped(x), rtol=RTOL, atol=RTOL)
    self.assertAllClose(
      want, tf.function(lambda v: stripped(v))(x), rtol=RTOL, atol=RTOL
    )
    self.assert_nothing_of_pruning_left(
      stripped.__call__.get_concrete_function(), pruned, model
    )
    self.assertLen(stripped.report.weights, len(pruned.masks))

    path = self.tmp('stripped')
    report = export_saved_model(pruned, path)
    self.assertGreater(report.output_size.raw, report.output_size.gzipped)
    self.assert_saved_model_has_no_pruning_variables(path, pruned)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(want, loaded(x), rtol=RTOL, atol=RTOL)
    signature = loaded.signatures['serving_default']
    self.assertAllClose(
      want, list(signature(x).values())[0], rtol=RTOL, atol=RTOL
    )
    self.assert_nothing_of_pruning_left(signature, pruned, model)

  def test_lstm_recurrent_kernel_folded_and_loop_kept(self):
    _, pruned = _prune('lstm')
    stripped = strip(pruned)
    graph_def = stripped.__call__.get_concrete_function().graph.as_graph_def()
    ops = {node.op for _, node in _nodes(graph_def)}
    self.assertTrue(ops & {'While', 'StatelessWhile'})
    names = [w.name for w in stripped.report.weights]
    self.assertTrue(any(n.endswith('recurrent_kernel') for n in names))
    # The loop body multiplies by the recurrent kernel, not by a mask: the
    # body's MatMuls read the loop-invariant folded constant.
    bodies = [
      f
      for f in graph_def.library.function
      if '_while_body_' in f.signature.name
    ]
    self.assertNotEmpty(bodies)
    self.assertNotIn(
      'Mul',
      [
        n.op
        for f in bodies
        for n in f.node_def
        if n.name.endswith('masked_weight')
      ],
    )

  def test_tf_keras_lstm(self):
    import tf_keras  # pylint: disable=g-import-not-at-top

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
      [
        tf_keras.Input((4, 3)),
        tf_keras.layers.LSTM(5),
        tf_keras.layers.Dense(2),
      ]
    )
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    rng = np.random.RandomState(0)
    for mask in pruned.masks:
      mask.assign((rng.rand(*mask.shape) < 0.5).astype(np.float32))
    x = _inputs(pruned)
    path = self.tmp('tf_keras')
    export_saved_model(pruned, path)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(pruned(x), loaded(x), rtol=RTOL, atol=RTOL)
    self.assert_nothing_of_pruning_left(
      loaded.signatures['serving_default'], pruned, model
    )

  @parameterized.named_parameters(('mlp', 'mlp'), ('lstm', 'lstm'))
  def test_strip_after_training_in_tf_function(self, kind):
    # Differentiating the pruned call inside a tf.function makes TensorFlow
    # keep it as a forward function that also outputs the mask reads; strip
    # must still find the plain inference graph.
    model, pruned = _prune(kind)
    optimizer = keras.optimizers.SGD(0.01)
    x = _inputs(pruned)

    @tf.function
    def train_step():
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(pruned(x)))
      variables = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for _ in range(3):
      train_step()
    want = pruned(x).numpy()
    stripped = strip(pruned)
    self.assertAllClose(want, stripped(x), rtol=RTOL, atol=RTOL)
    self.assert_nothing_of_pruning_left(
      stripped.__call__.get_concrete_function(), pruned, model
    )

  def test_mlp_matches_numpy(self):
    model, pruned = _prune('mlp')
    x = _inputs(pruned).numpy()
    (k1, k2), (b1, b2) = (
      _folded_values(pruned),
      (model.layers[0].bias.numpy(), model.layers[1].bias.numpy()),
    )
    want = np.maximum(x @ k1 + b1, 0) @ k2 + b2
    self.assertAllClose(want, strip(pruned)(x), rtol=1e-5, atol=1e-5)

  def test_report_counts(self):
    model, pruned = _prune('mlp')
    report = strip(pruned).report
    self.assertEqual([w.shape for w in report.weights], [(6, 8), (8, 3)])
    for w, m in zip(report.weights, pruned.masks):
      self.assertAlmostEqual(w.sparsity, float(np.mean(m.numpy() == 0)))
    self.assertEqual(report.total_params, model.count_params())
    nonzero = sum(int(np.count_nonzero(v)) for v in _folded_values(pruned))
    nonzero += sum(
      int(np.count_nonzero(layer.bias.numpy())) for layer in model.layers
    )
    self.assertEqual(report.nonzero_params, nonzero)
    text = report.to_text()
    self.assertIn('6x8', text)
    self.assertIn(f'{report.total_params:,} total', text)

  def test_signature_in_cond_branch_is_folded(self):
    model, pruned = _prune('mlp')
    spec = tf.TensorSpec([None, 6], tf.float32, name='x')

    @tf.function(
      input_signature=[spec, tf.TensorSpec([], tf.bool, name='flag')]
    )
    def branchy(x, flag):
      return {'y': tf.cond(flag, lambda: pruned(x), lambda: pruned(2 * x))}

    x = _inputs(pruned)
    path = self.tmp('cond')
    export_saved_model(pruned, path, signatures={'serving_default': branchy})
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures['serving_default']
    for flag in (True, False):
      self.assertAllClose(
        branchy(x, tf.constant(flag))['y'],
        signature(x=x, flag=tf.constant(flag))['y'],
        rtol=RTOL,
        atol=RTOL,
      )
    self.assert_nothing_of_pruning_left(signature, pruned, model)

  def test_signature_calling_model_in_loop_is_folded(self):
    model, pruned = _prune('mlp')

    @tf.function(input_signature=[tf.TensorSpec([2, 6], tf.float32)])
    def loop(x):
      def body(i, acc):
        return i + 1, acc + pruned(x + tf.cast(i, tf.float32))

      return tf.while_loop(
        lambda i, _: i < 3, body, [tf.constant(0), tf.zeros([2, 3])]
      )[1]

    x = _inputs(pruned)
    stripped = strip(pruned, signatures=loop)
    fn = stripped.signature_functions['serving_default']
    self.assertAllClose(loop(x), fn(x), rtol=RTOL, atol=RTOL)
    self.assert_nothing_of_pruning_left(
      fn.get_concrete_function(), pruned, model
    )

  def test_weight_read_unmasked_in_branch_is_refused(self):
    model, pruned = _prune('mlp')

    @tf.function(
      input_signature=[
        tf.TensorSpec([None, 6], tf.float32),
        tf.TensorSpec([], tf.bool),
      ]
    )
    def mixed(x, flag):
      return tf.cond(flag, lambda: pruned(x), lambda: model(x))

    with self.assertRaisesRegex(errors.FoldError, 'unmasked'):
      strip(pruned, signatures={'mixed': mixed})

  def test_signature_reading_threshold_is_refused(self):
    _, pruned = _prune('mlp')
    fn = tf.function(
      lambda x: {'y': pruned(x), 't': pruned.thresholds[0] + 0},
      input_signature=[tf.TensorSpec([None, 6])],
    )
    with self.assertRaisesRegex(errors.FoldError, 'threshold'):
      strip(pruned, signatures={'serving_default': fn})

  def test_strip_rejects_other_objects(self):
    with self.assertRaisesRegex(errors.StripError, 'PrunedModel'):
      strip(_mlp())

  def test_signature_without_input_signature(self):
    _, pruned = _prune('mlp')
    with self.assertRaisesRegex(errors.StripError, 'input_signature'):
      strip(pruned, signatures={'s': tf.function(lambda x: pruned(x))})


class StripSavedModelTest(StripTestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.model, cls.pruned = _prune('mlp')
    cls.saved = os.path.join(cls.root, 'pruned')
    tf.saved_model.save(cls.pruned, cls.saved)

  def test_strip_saved_model_with_tflite_and_frozen_graph(self):
    out, tflite, frozen = (
      self.tmp('out'),
      self.tmp('m.tflite'),
      self.tmp('m.pb'),
    )
    digest = _tree_digest(self.saved)
    report = strip_saved_model(
      self.saved,
      out,
      tflite_path=tflite,
      frozen_graph_path=frozen,
      tflite_sparse='on',  # 'auto' picks dense weights for so small a model
    )
    self.assertEqual(digest, _tree_digest(self.saved))  # input untouched
    self.assertEqual(report.signatures, ('serving_default',))
    self.assertLess(report.output_size.raw, report.input_size.raw)
    self.assertIsNotNone(report.tflite_size)
    x = _inputs(self.pruned)
    want = self.pruned(x).numpy()
    loaded = tf.saved_model.load(out)
    signature = loaded.signatures['serving_default']
    self.assertAllClose(
      want,
      signature(**{_input_key(signature): x})['output_0'],
      rtol=RTOL,
      atol=RTOL,
    )
    self.assert_saved_model_has_no_pruning_variables(out, self.pruned)
    self.assert_nothing_of_pruning_left(
      loaded.signatures['serving_default'], self.pruned, self.model
    )
    # The TFLite file: sparse weights, same outputs.
    interpreter = tf.lite.Interpreter(model_path=tflite)
    self.assertTrue(
      any(d['sparsity_parameters'] for d in interpreter.get_tensor_details())
    )
    runner = interpreter.get_signature_runner('serving_default')
    self.assertAllClose(
      want,
      runner(**{_input_key(signature): x.numpy()})['output_0'],
      rtol=1e-5,
      atol=1e-5,
    )
    # The frozen GraphDef runs on its own.
    graph_def = graph_pb2.GraphDef()
    with open(frozen, 'rb') as f:
      graph_def.ParseFromString(f.read())
    fn = tf.compat.v1.wrap_function(
      lambda: tf.graph_util.import_graph_def(graph_def, name=''), []
    )
    pruned_fn = fn.prune(
      report.frozen_graph_inputs[0], report.frozen_graph_outputs[0]
    )
    self.assertAllClose(want, pruned_fn(x), rtol=RTOL, atol=RTOL)
    self.assertIn('Sizes', report.to_text())

  def test_cnn_tflite_with_depthwise(self):
    _, pruned = _prune('cnn')
    saved = self.tmp('cnn')
    tf.saved_model.save(pruned, saved)
    tflite = self.tmp('cnn.tflite')
    strip_saved_model(saved, self.tmp('out'), tflite_path=tflite)
    x = _inputs(pruned)
    runner = tf.lite.Interpreter(model_path=tflite).get_signature_runner()
    (key,) = runner.get_input_details()
    got = list(runner(**{key: x.numpy()}).values())[0]
    self.assertAllClose(pruned(x), got, rtol=1e-5, atol=1e-5)

  def test_failure_in_a_later_step_leaves_no_output(self):
    parent = tempfile.mkdtemp(dir=self.get_temp_dir())
    out = os.path.join(parent, 'out')
    tflite = os.path.join(parent, 'm.tflite')
    with (
      mock.patch.object(
        tflite_format,
        'convert_and_check',
        side_effect=RuntimeError('converter crashed'),
      ),
      self.assertRaisesRegex(RuntimeError, 'converter crashed'),
    ):
      strip_saved_model(self.saved, out, tflite_path=tflite)
    self.assertEqual(os.listdir(parent), [])  # no output, no temp left

  def test_overwrite(self):
    out = self.tmp('out')
    os.makedirs(out)
    with open(os.path.join(out, 'keep.txt'), 'w') as f:
      f.write('x')
    # The API names its own argument (the tool says --overwrite).
    with self.assertRaisesRegex(errors.OutputExistsError, 'overwrite=True'):
      strip_saved_model(self.saved, out)
    self.assertEqual(os.listdir(out), ['keep.txt'])
    # --overwrite replaces a SavedModel only, never a folder of other files.
    with self.assertRaisesRegex(
      errors.OutputExistsError, 'holds no SavedModel.*not replaced'
    ):
      strip_saved_model(self.saved, out, overwrite=True)
    self.assertEqual(os.listdir(out), ['keep.txt'])
    with open(os.path.join(out, 'saved_model.pb'), 'w') as f:
      f.write('an older SavedModel')
    strip_saved_model(self.saved, out, overwrite=True)
    self.assertNotIn('keep.txt', os.listdir(out))
    self.assertIn('saved_model.pb', os.listdir(out))
    self.assertEqual(sorted(os.listdir(os.path.dirname(out))), ['out'])

  def test_empty_output_directory_is_used(self):
    out = self.tmp('out')
    os.makedirs(out)
    strip_saved_model(self.saved, out)
    self.assertIn('saved_model.pb', os.listdir(out))

  def test_output_inside_input_is_refused(self):
    with self.assertRaisesRegex(errors.StripError, 'inside the input'):
      strip_saved_model(
        self.saved, os.path.join(self.saved, 'out'), overwrite=True
      )
    with self.assertRaisesRegex(errors.StripError, 'contains the input'):
      strip_saved_model(self.saved, self.root, overwrite=True)
    out = self.tmp('out')
    with self.assertRaisesRegex(errors.StripError, 'inside output'):
      strip_saved_model(
        self.saved, out, tflite_path=os.path.join(out, 'm.tflite')
      )

  def test_bad_inputs(self):
    with self.assertRaisesRegex(
      errors.SavedModelNotFoundError, 'does not exist'
    ):
      strip_saved_model(self.tmp('missing'), self.tmp('out'))
    with self.assertRaisesRegex(
      errors.SavedModelNotFoundError, 'not a SavedModel'
    ):
      strip_saved_model(self.get_temp_dir(), self.tmp('out'))
    with self.assertRaisesRegex(
      errors.UnknownSignatureError, r"'nope'.*\['serving_default'\]"
    ):
      strip_saved_model(self.saved, self.tmp('out'), signature_keys=['nope'])
    dense = self.tmp('dense')
    tf.saved_model.save(self.model, dense)
    with self.assertRaisesRegex(
      errors.NoPruningVariablesError, 'no pruning variables'
    ):
      strip_saved_model(dense, self.tmp('out'))

  def test_selected_signatures_only(self):
    module = tf.Module()
    module.pruned = self.pruned
    spec = [tf.TensorSpec([None, 6], tf.float32, name='x')]
    module.logits = tf.function(
      lambda x: {'logits': self.pruned(x)}, input_signature=spec
    )
    module.probs = tf.function(
      lambda x: {'probs': tf.nn.softmax(self.pruned(x))}, input_signature=spec
    )
    saved = self.tmp('two')
    tf.saved_model.save(
      module, saved, signatures={'logits': module.logits, 'probs': module.probs}
    )
    out = self.tmp('out')
    report = strip_saved_model(saved, out, signature_keys=['probs'])
    self.assertEqual(report.signatures, ('probs',))
    loaded = tf.saved_model.load(out)
    self.assertEqual(list(loaded.signatures), ['probs'])
    x = _inputs(self.pruned)
    self.assertAllClose(
      tf.nn.softmax(self.pruned(x)),
      loaded.signatures['probs'](x=x)['probs'],
      rtol=RTOL,
      atol=RTOL,
    )
    with self.assertRaisesRegex(errors.StripError, 'choose one'):
      strip_saved_model(
        saved, self.tmp('out2'), frozen_graph_path=self.tmp('f.pb')
      )


def _const(graph_def, name, value):
  node = graph_def.node.add(name=name, op='Const')
  node.attr['dtype'].type = tf.float32.as_datatype_enum
  node.attr['value'].tensor.CopyFrom(
    tf.make_tensor_proto(np.asarray(value, np.float32))
  )
  return node


def _add(graph_def, name, op, inputs):
  node = graph_def.node.add(name=name, op=op)
  node.input.extend(inputs)
  node.attr['T'].type = tf.float32.as_datatype_enum
  return node


class FoldingPassTest(tf.test.TestCase):
  """The GraphDef passes on tiny hand-built graphs."""

  def _graph(self, mul_name='s/w/masked_weight'):
    g = graph_pb2.GraphDef()
    x = g.node.add(name='x', op='Placeholder')
    x.attr['dtype'].type = tf.float32.as_datatype_enum
    _const(g, 'k', [[1.0, -2.0], [3.0, -4.0]])
    _const(g, 'm', [[1.0, 0.0], [0.0, 1.0]])
    _add(g, 'rk', 'Identity', ['k'])
    _add(g, 'rm', 'Identity', ['m'])
    _add(g, mul_name, 'Mul', ['rk', 'rm'])
    _add(g, 'n', 'NoOp', ['^rm'])
    _add(g, 'y', 'MatMul', ['x', mul_name])
    _add(g, 'out', 'Identity', ['y', '^n'])
    return g

  def test_fold_prune_check(self):
    g = self._graph()
    result = fold_masks.fold_masked_weights(g, {'m': 'w'}, 'x1')
    folded_graph, folded = result.graph, result.report
    self.assertLen(g.node, 9)  # input untouched
    self.assertEqual(
      [(f.name, f.node, f.shape, f.nonzeros) for f in folded],
      [('w', 's/w', (2, 2), 2)],
    )
    pruned = drop_unused.drop_unused(folded_graph, ['out:0']).graph
    nodes = {n.name: n for n in pruned.node}
    self.assertEqual(sorted(nodes), ['out', 's/w', 'x', 'y'])
    self.assertEqual(list(nodes['y'].input), ['x', 's/w'])
    self.assertEqual(list(nodes['out'].input), ['y'])
    value = tf.make_ndarray(nodes['s/w'].attr['value'].tensor)
    self.assertAllEqual(value, [[1.0, 0.0], [0.0, -4.0]])
    self.assertFalse(np.signbit(value[0, 1]))  # +0.0, not -2 * 0 = -0.0
    fold_checks.check_stripped(pruned, {'m': 'w/mask'}, 'test graph')

  def test_check_stripped_finds_leftovers(self):
    g = self._graph()
    folded_graph = fold_masks.fold_masked_weights(g, {'m': 'w'}, 'x4').graph
    with self.assertRaisesRegex(errors.FoldError, "'w/mask'.*rm"):
      fold_checks.check_stripped(folded_graph, {'m': 'w/mask'}, 'test graph')
    with self.assertRaisesRegex(errors.FoldError, 'multiplies by a mask'):
      fold_checks.check_stripped(g, {}, 'test graph')
    folded_graph.node.add(name='v', op='VarHandleOp')
    with self.assertRaisesRegex(errors.FoldError, 'VarHandleOp'):
      fold_checks.check_stripped(folded_graph, {}, 'test graph')

  def test_misnamed_mul_is_refused(self):
    g = self._graph('s/other/masked_weight')
    with self.assertRaisesRegex(errors.FoldError, "named 'w/masked_weight'"):
      fold_masks.fold_masked_weights(g, {'m': 'w'}, 'x2')

  def test_mul_without_mask_is_refused(self):
    g = self._graph()
    with self.assertRaisesRegex(errors.FoldError, 'neither'):
      fold_masks.fold_masked_weights(g, {}, 'x3')


class SizesAndStagingTest(tf.test.TestCase):
  def test_sizes(self):
    root = tempfile.mkdtemp(dir=self.get_temp_dir())
    os.makedirs(os.path.join(root, 'sub'))
    with open(os.path.join(root, 'sub', 'zeros'), 'wb') as f:
      f.write(bytes(100000))
    with open(os.path.join(root, 'a'), 'wb') as f:
      f.write(b'abc')
    size = sizes.measure(root)
    self.assertEqual(size.raw, 100003)
    self.assertLess(size.gzipped, 1000)
    self.assertEqual(size, sizes.measure(root))  # deterministic
    single = sizes.measure(os.path.join(root, 'sub', 'zeros'))
    self.assertEqual(single.raw, 100000)
    self.assertLess(single.gzipped, size.gzipped)

  def test_staging_commits_all_or_nothing(self):
    parent = tempfile.mkdtemp(dir=self.get_temp_dir())
    with self.assertRaises(ZeroDivisionError), staging.Staging() as stage:
      d = stage.directory(os.path.join(parent, 'model'))
      with open(stage.file(os.path.join(parent, 'f')), 'w') as f:
        f.write('x')
      self.assertTrue(os.path.isdir(d))
      _ = 1 / 0
    self.assertEqual(os.listdir(parent), [])
    with staging.Staging() as stage:
      d = stage.directory(os.path.join(parent, 'model'))
      with open(os.path.join(d, 'a'), 'w') as f:
        f.write('x')
      stage.commit()
    self.assertEqual(os.listdir(parent), ['model'])
    self.assertEqual(os.listdir(os.path.join(parent, 'model')), ['a'])


if __name__ == '__main__':
  tf.test.main()
