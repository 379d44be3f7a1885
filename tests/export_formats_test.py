"""Tests of the export formats seam: graph_prune/export/formats/.

The driver (`formats/driver.py`) writes exactly the formats asked for, each
all or nothing with the others; each format's report carries its final path
and size. Outputs are checked by reading them back with TensorFlow, Keras
and the TFLite interpreter against NumPy's masked forward pass.
"""

import dataclasses
import gzip
import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.export import strip
from graph_prune.export import tflite_read
from graph_prune.export.formats import base
from graph_prune.export.formats import driver
from graph_prune.export.formats import frozen_graph
from graph_prune.export.formats import keras as keras_format
from graph_prune.export.formats import proto_limit
from graph_prune.export.formats import saved_model
from graph_prune.export.formats import table
from graph_prune.export.formats import tflite as tflite_format
from graph_prune.export.stripped_model import StrippedModel

X = np.random.RandomState(2).standard_normal((6, 10)).astype(np.float32)
FILES = {
  'saved_model': 'model',
  'frozen_graph': 'graph.pb',
  'tflite': 'model.tflite',
  'keras': 'model.keras',
}


def _pruned():
  keras.utils.set_random_seed(0)
  model = keras.Sequential(
    [keras.Input((10,)), keras.layers.Dense(8, activation='relu')]
  )
  pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
  rng = np.random.RandomState(0)
  for mask in pruned.masks:
    mask.assign((rng.rand(*mask.shape) < 0.5).astype(np.float32))
  return model, pruned


def _numpy_forward(model, pruned):
  """relu(x @ (kernel * mask) + bias), computed by NumPy."""
  kernel, bias = (w.numpy() for w in model.weights)
  (mask,) = (m.numpy() for m in pruned.masks)
  return np.maximum(X @ (kernel * mask) + bias, 0)


def _raw_bytes(path):
  if not os.path.isdir(path):
    return os.path.getsize(path)
  return sum(
    os.path.getsize(os.path.join(root, name))
    for root, _, names in os.walk(path)
    for name in names
  )


def _failing_format(written):
  """A format that writes half a file, then fails."""

  def write(prepared, path, workspace):
    del prepared, workspace
    with open(path, 'wb') as f:
      f.write(b'half')
    written.append(path)
    raise RuntimeError('disk hiccup')

  return base.Format(
    name='broken',
    is_file=True,
    label='broken',
    options=lambda: None,
    check=base.no_check,
    prepare=lambda source, options: None,
    write=write,
  )


class DriverTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model, cls.pruned = _pruned()
    cls.want = _numpy_forward(cls.model, cls.pruned)

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp(dir=self.get_temp_dir())

  def source(self):
    keys = (strip.DEFAULT_SIGNATURE,)
    return base.Source(
      strip.strip(self.pruned), keys, keys, 'the model', pruned=self.pruned
    )

  def requests(self, names):
    return [
      base.Request(name, os.path.join(self.root, FILES[name]), name)
      for name in names
    ]

  def read_back(self, name, path):
    """The output at `path` of format `name`, run on X."""
    if name == 'saved_model':
      fn = tf.saved_model.load(path).signatures['serving_default']
      (key,) = fn.structured_input_signature[1]
      return list(fn(**{key: tf.constant(X)}).values())[0]
    if name == 'keras':
      return keras.saving.load_model(path).predict(X, verbose=0)
    if name == 'tflite':
      with open(path, 'rb') as f:
        flatbuffer = f.read()
      runner = tflite_read.make_interpreter(flatbuffer).get_signature_runner(
        'serving_default'
      )
      (key,) = runner.get_input_details()
      got = tflite_read.run_signature(flatbuffer, 'serving_default', {key: X})
      return list(got.values())[0]
    graph_def = tf.compat.v1.GraphDef()
    with open(path, 'rb') as f:
      graph_def.ParseFromString(f.read())
    report = self.written[name]
    fn = tf.compat.v1.wrap_function(
      lambda: tf.graph_util.import_graph_def(graph_def, name=''), []
    )
    return fn.prune(report.inputs[0], report.outputs[0])(tf.constant(X))

  @parameterized.named_parameters(
    ('saved_model', ('saved_model',)),
    ('frozen_graph', ('frozen_graph',)),
    ('tflite', ('tflite',)),
    ('keras', ('keras',)),
    ('tflite_and_keras', ('keras', 'tflite')),
    ('all', ('tflite', 'keras', 'saved_model', 'frozen_graph')),
  )
  def test_writes_exactly_the_formats_asked_for(self, names):
    requests = self.requests(names)
    driver.check_requests(requests)
    self.written = driver.write(self.source(), requests)
    self.assertEqual(
      sorted(os.listdir(self.root)), sorted(FILES[n] for n in names)
    )
    # In the table's order: a SavedModel before the TFLite file made from it.
    self.assertEqual(
      self.written.names, tuple(n for n in table.FORMATS if n in names)
    )
    for name in names:
      report = self.written[name]
      path = os.path.join(self.root, FILES[name])
      self.assertEqual(report.path, path)
      self.assertEqual(report.size.raw, _raw_bytes(path))
      if name != 'saved_model':
        with open(path, 'rb') as f:
          data = f.read()
        self.assertEqual(
          report.size.gzipped, len(gzip.compress(data, 9, mtime=0))
        )
      self.assertAllClose(
        self.read_back(name, path), self.want, rtol=1e-5, atol=1e-5
      )

  @parameterized.named_parameters(
    ('saved_model', saved_model.SavedModelReport),
    ('frozen_graph', frozen_graph.FrozenGraphReport),
    ('tflite', tflite_format.TFLiteReport),
    ('keras', keras_format.KerasReport),
  )
  def test_each_report_type_has_path_and_size(self, report_type):
    fields = {f.name for f in dataclasses.fields(report_type)}
    self.assertContainsSubset({'path', 'size'}, fields)

  def test_one_saved_model_serves_the_tflite_conversion(self):
    save = StrippedModel.save
    with mock.patch.object(
      StrippedModel, 'save', autospec=True, side_effect=save
    ) as saved:
      driver.write(self.source(), self.requests(['saved_model', 'tflite']))
    self.assertEqual(saved.call_count, 1)
    with mock.patch.object(
      StrippedModel, 'save', autospec=True, side_effect=save
    ) as saved:
      root = self.root
      self.root = tempfile.mkdtemp(dir=self.get_temp_dir())
      driver.write(self.source(), self.requests(['tflite']))
    # A temporary SavedModel, removed with the run.
    self.assertEqual(saved.call_count, 1)
    temporary = saved.call_args[0][1]
    self.assertFalse(os.path.exists(temporary))
    self.assertNotStartsWith(temporary, root)

  def test_a_failing_format_leaves_no_output_of_any_format(self):
    half = []
    with mock.patch.dict(table.FORMATS, {'broken': _failing_format(half)}):
      requests = self.requests(FILES) + [
        base.Request('broken', os.path.join(self.root, 'b.bin'), 'broken')
      ]
      with self.assertRaisesRegex(RuntimeError, 'disk hiccup'):
        driver.write(self.source(), requests)
    self.assertLen(half, 1)  # it ran last, after every other was staged
    self.assertEqual(os.listdir(self.root), [])  # no output, no temp left

  def test_a_conversion_failure_mid_way_leaves_nothing(self):
    with (
      mock.patch.object(
        tflite_format, 'convert_and_check', side_effect=RuntimeError('boom')
      ),
      self.assertRaisesRegex(RuntimeError, 'boom'),
    ):
      driver.write(self.source(), self.requests(FILES))
    self.assertEqual(os.listdir(self.root), [])

  def test_a_refusal_before_staging_leaves_nothing(self):
    with (
      mock.patch.object(proto_limit, 'PROTO_LIMIT_BYTES', 10),
      self.assertRaisesRegex(errors.ProtoLimitError, 'frozen GraphDef'),
    ):
      driver.write(self.source(), self.requests(FILES))
    self.assertEqual(os.listdir(self.root), [])


class CheckRequestsTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp(dir=self.get_temp_dir())

  def path(self, name):
    return os.path.join(self.root, name)

  @parameterized.named_parameters(
    ('unknown_format', 'onnx', 'm.onnx', None, errors.StripError, 'onnx'),
    (
      'keras_suffix',
      'keras',
      'model.h5',
      None,
      errors.OutputPathError,
      r"keras_path='.*model\.h5' must end in \.keras",
    ),
    (
      'quantize',
      'tflite',
      'm.tflite',
      tflite_format.Options(quantize='int4'),
      errors.TFLiteExportError,
      "Unknown TFLite quantization 'int4'",
    ),
    (
      'int8_without_data',
      'tflite',
      'm.tflite',
      tflite_format.Options(quantize='int8'),
      errors.RepresentativeDataError,
      'needs representative inputs',
    ),
  )
  def test_refused_before_anything(self, fmt, name, options, error, pattern):
    request = base.Request(fmt, self.path(name), 'keras_path', options)
    with self.assertRaisesRegex(error, pattern):
      driver.check_requests([request])
    self.assertIsInstance(error('x'), ValueError)
    self.assertEqual(os.listdir(self.root), [])

  def test_nested_outputs(self):
    requests = [
      base.Request('saved_model', self.path('out'), 'output_dir'),
      base.Request('tflite', self.path('out/m.tflite'), 'tflite_path'),
    ]
    with self.assertRaisesRegex(errors.StripError, 'inside output'):
      driver.check_requests(requests)

  def test_output_inside_the_input(self):
    request = base.Request('saved_model', self.path('in/out'), 'output_dir')
    with self.assertRaisesRegex(errors.StripError, 'inside the input'):
      driver.check_requests([request], input_path=self.path('in'))

  def test_existing_output_names_the_callers_flag(self):
    with open(self.path('m.tflite'), 'w') as f:
      f.write('old')
    request = base.Request('tflite', self.path('m.tflite'), '--tflite')
    with self.assertRaisesRegex(errors.OutputExistsError, '--overwrite'):
      driver.check_requests([request], flag='--overwrite')
    driver.check_requests([request], overwrite=True)

  def test_keras_needs_a_live_model(self):
    _, pruned = _pruned()
    module = strip.strip(pruned)
    keys = (strip.DEFAULT_SIGNATURE,)
    source = base.Source(module, keys, keys, "SavedModel '/in'")
    request = base.Request('keras', self.path('m.keras'), 'keras_path')
    with self.assertRaisesRegex(errors.StripError, 'needs the PrunedModel'):
      driver.write(source, [request])
    self.assertEqual(os.listdir(self.root), [])


class ExportReportTest(tf.test.TestCase):
  def test_lookup(self):
    report = base.ExportReport((('saved_model', 'a'), ('tflite', 'b')))
    self.assertEqual(report['tflite'], 'b')
    self.assertEqual(report.names, ('saved_model', 'tflite'))
    self.assertEqual(list(report), ['a', 'b'])
    self.assertLen(report, 2)
    self.assertIn('saved_model', report)
    self.assertIsNone(report.get('keras'))
    with self.assertRaisesRegex(KeyError, "No 'keras' output was written"):
      report['keras']  # pylint: disable=pointless-statement


if __name__ == '__main__':
  tf.test.main()
