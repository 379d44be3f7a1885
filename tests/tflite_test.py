"""Tests of graph_prune/export/tflite.py and tflite_read.py.

A small MLP and CNN (Keras 3, Glorot-uniform weights) are pruned to 75% by
one mask update and exported in every quantization mode. What is checked,
each against NumPy on the pruned model's own weights and masks:
  * the zeros read back from the flatbuffer: per weight tensor the same
    count as weight * mask, and for the MLP's first kernel the same
    positions (TFLite stores it transposed);
  * the outputs, run here with the interpreter directly, agree with the
    pruned model within a tolerance per mode (relative to the largest
    output), and the report's max abs diff is that difference;
  * int8 without representative data and an unknown mode are clear errors
    that write nothing (bad representative data: data_inputs_test.py);
  * the sparse encoding, forced on and off, decodes to the same weights;
    'auto' keeps the smaller gzipped file; a hand-made block-sparse tensor
    decodes to its closed-form dense value;
  * TFLite's int8 sparse encoding of a 6-wide kernel loses weights: 'on' is
    an error, 'auto' keeps the dense encoding and says why;
  * a sparse file the runtime cannot run (a run check that fails on sparse
    files, as LiteRT's XNNPack does on int8 ones): 'auto' writes the dense
    file, same zeros and outputs, and says why; 'on' is an error;
  * without LiteRT, tf.lite.Interpreter runs the same model alike;
  * blocks of block_height=4 (the Keras kernel's input axis): the mask is
    NumPy's block mask, and in the int8 file every run of 4 along a row of
    TFLite's [out, in] weight is all zero or all non-zero, zeros exactly
    where the transposed mask is 0;
  * float16 weights in those blocks: the converter's sparse file outputs
    NaN (TF 2.21), its max abs diff is NaN, not 0; 'on' is an error and
    'auto' keeps the dense file, which matches the pruned model.
"""

import gzip
import os
import sys
import tempfile
from unittest import mock
import warnings

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.export import tflite
from graph_prune.export import tflite_read

L = keras.layers
HPARAMS = (
  'target_sparsity=0.75,begin_pruning_step=0,end_pruning_step=1,'
  'sparsity_function_end_step=1'
)
# Largest |TFLite - float| allowed, as a fraction of the largest |output|.
TOLERANCE = {'none': 1e-5, 'float16': 5e-3, 'dynamic': 3e-2, 'int8': 6e-2}


def _mlp():
  return keras.Sequential(
    [keras.Input((16,)), L.Dense(32, activation='relu'), L.Dense(10)]
  )


def _cnn():
  x = keras.Input((8, 8, 1))
  y = L.Conv2D(8, 3, activation='relu')(x)
  y = L.Conv2D(8, 3, activation='relu')(y)
  return keras.Model(x, L.Dense(10)(L.Flatten()(y)))


def _prune(build, shape):
  keras.utils.set_random_seed(0)
  model = build()
  pruned = graph_prune.apply_pruning(model, HPARAMS)
  pruned.mask_update(1)
  x = np.random.RandomState(1).rand(64, *shape).astype(np.float32)
  return pruned, x


def _expected_zeros(pruned):
  """Sorted (size, zeros) of weight * mask, computed with NumPy."""
  return sorted(
    (w.numpy().size, int(np.sum(w.numpy() * m.numpy() == 0)))
    for w, m in zip(pruned.weights, pruned.masks)
  )


def _run(path, x):
  with open(path, 'rb') as f:
    runner = tflite_read.make_interpreter(f.read()).get_signature_runner()
  (name,) = runner.get_input_details()
  (output,) = runner(**{name: x}).values()
  return output


class TFLiteExportTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.models = {
      'mlp': _prune(_mlp, (16,)),
      'cnn': _prune(_cnn, (8, 8, 1)),
    }

  def tmp(self, name):
    return os.path.join(self.get_temp_dir(), name)

  @parameterized.named_parameters(
    (f'{model}_{mode}', model, mode)
    for model in ('mlp', 'cnn')
    for mode in ('none', 'dynamic', 'float16', 'int8')
  )
  def test_zeros_survive_and_outputs_agree(self, model, mode):
    pruned, x = self.models[model]
    path = self.tmp(f'{model}_{mode}.tflite')
    report = tflite.export_tflite(
      pruned, path, quantize=mode, representative_data=x
    )
    with open(path, 'rb') as f:
      weights = tflite_read.read_weights(f.read())
    got = sorted((w.size, int(np.sum(w.zeros))) for w in weights)
    self.assertEqual(got, _expected_zeros(pruned))
    self.assertAlmostEqual(report.weight_sparsity, 0.75, delta=0.01)
    want = pruned(tf.constant(x)).numpy()
    output = _run(path, x)
    diff = np.max(np.abs(output - want))
    self.assertLessEqual(diff, TOLERANCE[mode] * np.max(np.abs(want)))
    self.assertAllClose(report.max_abs_diff, diff, rtol=1e-3, atol=1e-6)
    self.assertEqual(report.checked_examples, len(x))
    agreement = np.mean(output.argmax(1) == want.argmax(1))
    self.assertAllClose(report.top1_agreement, agreement)
    self.assertGreaterEqual(agreement, 0.9)
    self.assertEqual(report.quantize, mode)
    self.assertEqual(report.size.raw, os.path.getsize(path))
    if model == 'mlp':
      # The first kernel: zeros exactly where the mask is 0 ([out, in]).
      kernel = pruned.weights[0].numpy() * pruned.masks[0].numpy()
      (first,) = [w for w in weights if w.shape == (32, 16)]
      self.assertAllEqual(first.zeros.T, kernel == 0)

  def test_int8_without_representative_data_is_a_clear_error(self):
    pruned, _ = self.models['mlp']
    path = self.tmp('no_data.tflite')
    with self.assertRaisesRegex(
      errors.RepresentativeDataError, r'int8.*representative_data'
    ):
      tflite.export_tflite(pruned, path, quantize='int8')
    self.assertFalse(os.path.exists(path))

  def test_unknown_mode_is_a_clear_error(self):
    pruned, _ = self.models['mlp']
    with self.assertRaisesRegex(
      errors.TFLiteExportError, r"'int4'.*none, dynamic, float16, int8"
    ):
      tflite.export_tflite(pruned, self.tmp('m.tflite'), quantize='int4')

  def test_output_exists(self):
    pruned, _ = self.models['mlp']
    path = self.tmp('exists.tflite')
    with open(path, 'wb') as f:
      f.write(b'keep')
    with self.assertRaises(errors.OutputExistsError):
      tflite.export_tflite(pruned, path)
    with open(path, 'rb') as f:
      self.assertEqual(f.read(), b'keep')

  @parameterized.named_parameters(('on', 'on', True), ('off', 'off', False))
  def test_forced_encoding_decodes_to_the_weights(self, sparse, encoded):
    pruned, _ = self.models['mlp']
    path = self.tmp(f'{sparse}.tflite')
    report = tflite.export_tflite(pruned, path, sparse=sparse)
    self.assertEqual(report.sparse_encoded, encoded)
    # 'on' also converts the dense encoding, the reference it is checked on.
    self.assertEqual(report.other_encoding_size is None, sparse == 'off')
    with open(path, 'rb') as f:
      weights = tflite_read.read_weights(f.read())
    self.assertEqual({w.sparse_encoded for w in weights}, {encoded})
    by_shape = {w.shape: w.values for w in weights}
    for w, m in zip(pruned.weights, pruned.masks):
      want = (w.numpy() * m.numpy()).T
      self.assertAllEqual(by_shape[want.shape], want)

  def test_auto_keeps_the_smaller_gzipped_file(self):
    pruned, _ = self.models['mlp']
    path = self.tmp('auto.tflite')
    report = tflite.export_tflite(pruned, path, quantize='dynamic')
    with open(path, 'rb') as f:
      gzipped = len(gzip.compress(f.read(), compresslevel=9, mtime=0))
    self.assertEqual(report.size.gzipped, gzipped)
    self.assertLessEqual(gzipped, report.other_encoding_size.gzipped)
    self.assertIn('dynamic', report.to_text())


class SparseInt8LossTest(tf.test.TestCase):
  """TFLite's int8 sparse encoding drops 1x16 blocks of a 6-wide kernel."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pruned, cls.x = _prune(
      lambda: keras.Sequential([keras.Input((6,)), L.Dense(8), L.Dense(3)]),
      (6,),
    )

  def test_on_is_an_error_and_writes_nothing(self):
    path = os.path.join(self.get_temp_dir(), 'on.tflite')
    with self.assertRaisesRegex(
      errors.TFLiteExportError,
      r'sparse weight encoding changed \d+ of 48 values of weight \[8, 6\]'
      r'.*--tflite_sparse=auto',
    ):
      tflite.export_tflite(
        self.pruned, path, 'int8', representative_data=self.x, sparse='on'
      )
    self.assertFalse(os.path.exists(path))

  def test_auto_keeps_the_dense_encoding(self):
    path = os.path.join(self.get_temp_dir(), 'auto.tflite')
    report = tflite.export_tflite(
      self.pruned, path, 'int8', representative_data=self.x
    )
    self.assertFalse(report.sparse_encoded)
    self.assertRegex(report.sparse_rejected, r'of 48 values')
    self.assertIn('sparse encoding rejected', report.to_text())
    want = self.pruned(tf.constant(self.x)).numpy()
    diff = np.max(np.abs(_run(path, self.x) - want))
    self.assertLessEqual(diff, TOLERANCE['int8'] * np.max(np.abs(want)))


class InterpreterTest(tf.test.TestCase):
  def test_fallback_without_litert_gives_the_same_outputs(self):
    keras.utils.set_random_seed(0)
    model = _mlp()
    path = os.path.join(self.get_temp_dir(), 'm.tflite')
    pruned = graph_prune.apply_pruning(model, HPARAMS)
    tflite.export_tflite(pruned, path)
    with open(path, 'rb') as f:
      flatbuffer = f.read()
    runner = tflite_read.make_interpreter(flatbuffer).get_signature_runner()
    (name,) = runner.get_input_details()
    inputs = {name: np.ones((3, 16), np.float32)}
    want = tflite_read.run_signature(flatbuffer, 'serving_default', inputs)
    with (
      mock.patch.dict(sys.modules, {'ai_edge_litert.interpreter': None}),
      warnings.catch_warnings(),
    ):
      warnings.simplefilter('ignore')  # tf.lite.Interpreter's deprecation
      self.assertEqual(tflite_read.interpreter_name(), 'tf.lite.Interpreter')
      got = tflite_read.run_signature(flatbuffer, 'serving_default', inputs)
    self.assertAllClose(got, want, atol=1e-6)
    self.assertAllClose(
      list(want.values())[0], pruned(tf.constant(inputs[name])), atol=1e-5
    )


def _sparse_fails(calls):
  """A run check that cannot run sparse files, as LiteRT's XNNPack."""

  def check(flatbuffer, *args):
    sparse = any(w.sparse_encoded for w in tflite_read.read_weights(flatbuffer))
    calls.append(sparse)
    if sparse:
      raise RuntimeError('Failed to prepare for TFLite delegate.\nmore')
    return tflite_read.compare_with_saved_model(flatbuffer, *args)

  return check


class SparseRunFallbackTest(tf.test.TestCase):
  """'auto' falls back to dense weights when the sparse file cannot run."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # At 95% the sparse float32 file is the smaller one, so 'auto' tries it.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((256,)), L.Dense(256), L.Dense(10)])
    cls.pruned = graph_prune.apply_pruning(
      model, HPARAMS.replace('target_sparsity=0.75', 'target_sparsity=0.95')
    )
    cls.pruned.mask_update(1)
    cls.x = np.random.RandomState(1).rand(16, 256).astype(np.float32)

  def setUp(self):
    super().setUp()
    self.saved = os.path.join(self.get_temp_dir(), 'stripped')
    graph_prune.strip(self.pruned).save(self.saved)

  def convert(self, sparse, calls):
    path = os.path.join(self.get_temp_dir(), f'{sparse}.tflite')
    report = tflite.convert_and_check(
      self.saved,
      ['serving_default'],
      path,
      sparse=sparse,
      representative_data=self.x,
      run_check=_sparse_fails(calls),
    )
    return path, report

  def test_auto_writes_the_dense_file_and_says_why(self):
    calls = []
    path, report = self.convert('auto', calls)
    # The sparse file is the smaller one: tried first.
    self.assertEqual(calls, [True, False])
    self.assertFalse(report.sparse_encoded)
    self.assertRegex(
      report.sparse_rejected, r'cannot run it \(Failed to prepare .*\)$'
    )
    self.assertLess(report.other_encoding_size.gzipped, report.size.gzipped)
    with open(path, 'rb') as f:
      weights = tflite_read.read_weights(f.read())
    self.assertEqual({w.sparse_encoded for w in weights}, {False})
    self.assertEqual(
      sorted((w.size, int(np.sum(w.zeros))) for w in weights),
      _expected_zeros(self.pruned),
    )
    want = self.pruned(tf.constant(self.x)).numpy()
    self.assertAllClose(_run(path, self.x), want, atol=1e-5)

  def test_on_is_an_error_and_writes_nothing(self):
    calls = []
    with self.assertRaisesRegex(
      errors.TFLiteExportError,
      r'cannot run the converted TFLite model \(quantize=.none., sparse '
      r'weights\): Failed to prepare for TFLite delegate\.; .*'
      r'--tflite_sparse=off',
    ):
      self.convert('on', calls)
    self.assertEqual(calls, [True])
    self.assertFalse(os.path.exists(os.path.join(self.get_temp_dir(), 'on')))


def _block_mask(kernel, height, sparsity):
  """NumPy: the mask of AVG-pooled |w| blocks of `height` input rows."""
  rows, cols = kernel.shape
  scores = np.abs(kernel).reshape(rows // height, height, cols).mean(axis=1)
  keep = max(1, round(scores.size * (1 - sparsity)))
  kept = np.zeros(scores.size, bool)
  kept[np.argsort(scores, axis=None, kind='stable')[-keep:]] = True
  return np.repeat(kept.reshape(scores.shape), height, axis=0)


class BlockAlongInputTest(tf.test.TestCase):
  """Blocks of block_height=4 (the Keras kernel's input axis, [in, out]) are
  runs of 4 consecutive zeros along a row of TFLite's [out, in] weight: the
  orientation the README recommends for the smallest gzipped file."""

  def test_int8_rows_hold_whole_blocks(self):
    keras.utils.set_random_seed(0)
    model = _mlp()
    rng = np.random.RandomState(2)
    for layer in model.layers:
      # |w| in [0.25, 1]: no kept weight rounds to int8 zero (scale <= 1/127).
      shape = layer.kernel.shape
      magnitude = rng.uniform(0.25, 1.0, shape)
      layer.kernel.assign(np.where(rng.rand(*shape) < 0.5, -1, 1) * magnitude)
    pruned = graph_prune.apply_pruning(
      model, HPARAMS + ',block_height=4,block_width=1'
    )
    pruned.mask_update(1)
    x = np.random.RandomState(1).rand(64, 16).astype(np.float32)
    path = os.path.join(self.get_temp_dir(), 'block4x1.tflite')
    tflite.export_tflite(pruned, path, quantize='int8', representative_data=x)
    with open(path, 'rb') as f:
      by_shape = {w.shape: w for w in tflite_read.read_weights(f.read())}
    for layer, mask in zip(model.layers, pruned.masks):
      kernel = layer.kernel.numpy()
      want = _block_mask(kernel, 4, 0.75)
      self.assertAllEqual(mask.numpy() != 0, want)
      stored = by_shape[kernel.shape[::-1]]
      self.assertEqual(stored.dtype, 'int8')
      zeros = stored.zeros.reshape(kernel.shape[1], kernel.shape[0] // 4, 4)
      # Every run of 4 along a TFLite row: all zero or all non-zero.
      self.assertTrue(np.all(zeros.all(-1) | ~zeros.any(-1)))
      self.assertAllEqual(stored.zeros, ~want.T)
      self.assertAlmostEqual(float(np.mean(stored.zeros)), 0.75)


class BlockSparseFloat16Test(tf.test.TestCase):
  """float16 weights in 1x4 blocks: TF 2.21's converter leaves out their
  Densify op, so the sparse file outputs NaN; it is never kept."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # At 95% the sparse file is the smaller one, so 'auto' tries it.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
      [keras.Input((128,)), L.Dense(128, activation='relu'), L.Dense(8)]
    )
    cls.pruned = graph_prune.apply_pruning(
      model,
      HPARAMS.replace('target_sparsity=0.75', 'target_sparsity=0.95')
      + ',block_height=4,block_width=1',
    )
    cls.pruned.mask_update(1)
    cls.x = np.random.RandomState(1).rand(16, 128).astype(np.float32)
    cls.saved = os.path.join(tempfile.mkdtemp(), 'stripped')
    graph_prune.strip(cls.pruned).save(cls.saved)

  def convert(self, sparse):
    path = os.path.join(self.get_temp_dir(), f'{sparse}.tflite')
    report = tflite.convert_and_check(
      self.saved, ['serving_default'], path, 'float16', self.x, sparse
    )
    return path, report

  def test_nan_outputs_are_a_nan_difference(self):
    flatbuffer = tflite.convert_saved_model(
      self.saved, ['serving_default'], 'float16', self.x, True
    )
    runner = tflite_read.make_interpreter(flatbuffer).get_signature_runner()
    (name,) = runner.get_input_details()
    (output,) = runner(**{name: self.x}).values()
    # The converter bug (TF 2.21): if this fails, it was fixed.
    self.assertTrue(np.isnan(output).any())
    diff, _, _ = tflite_read.compare_with_saved_model(
      flatbuffer, self.saved, ['serving_default'], self.x
    )
    self.assertTrue(np.isnan(diff))

  def test_on_is_an_error_and_writes_nothing(self):
    with self.assertRaisesRegex(
      errors.TFLiteExportError,
      r"sparse weights \(quantize='float16'\) differs from the float model "
      r'by NaN.*--tflite_sparse=auto',
    ):
      self.convert('on')
    self.assertFalse(
      os.path.exists(os.path.join(self.get_temp_dir(), 'on.tflite'))
    )

  def test_auto_keeps_the_dense_file_and_says_why(self):
    path, report = self.convert('auto')
    self.assertFalse(report.sparse_encoded)
    self.assertEqual(report.sparse_rejected, 'its outputs are NaN')
    # The sparse file was the smaller one: it was tried first.
    self.assertLess(report.other_encoding_size.gzipped, report.size.gzipped)
    with open(path, 'rb') as f:
      weights = tflite_read.read_weights(f.read())
    self.assertEqual({w.sparse_encoded for w in weights}, {False})
    want = self.pruned(tf.constant(self.x)).numpy()
    diff = np.max(np.abs(_run(path, self.x) - want))
    self.assertLessEqual(diff, TOLERANCE['float16'] * np.max(np.abs(want)))
    self.assertAllClose(report.max_abs_diff, diff, rtol=1e-3, atol=1e-6)


class DensifyTest(tf.test.TestCase):
  def test_block_sparse_matrix(self):
    # [[1, 2, 0, 0], [0, 0, 3, 4]] in 1x2 blocks: one block per row, stored
    # as values 1, 2, 3, 4 with block columns 0 and 1.
    schema = tflite_read._tf_internal.tflite_schema()
    dims = []
    for fmt, size, segments, indices in (
      (0, 2, None, None),
      (1, 0, [0, 1, 2], [0, 1]),
      (0, 2, None, None),
    ):
      dim = schema.DimensionMetadataT()
      dim.format, dim.denseSize = fmt, size
      if segments is not None:
        dim.arraySegments = schema.Int32VectorT()
        dim.arraySegments.values = segments
        dim.arrayIndices = schema.Int32VectorT()
        dim.arrayIndices.values = indices
      dims.append(dim)
    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap = [0, 1, 2], [1]
    sparsity.dimMetadata = dims
    dense = tflite_read.densify(
      np.array([1, 2, 3, 4], np.float32), (2, 4), sparsity
    )
    self.assertAllEqual(dense, [[1, 2, 0, 0], [0, 0, 3, 4]])


if __name__ == '__main__':
  tf.test.main()
