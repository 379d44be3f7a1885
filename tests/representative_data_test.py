"""Representative data on the TFLite path, through the API and the binaries.

A tiny pruned MLP (Keras 3) is exported with bad and good representative
data. What is checked:
  * every bad input (NaN, Inf, objects, strings, complex, empty, wrong rank
    or width, 1-D, truncated files) is one `RepresentativeDataError` line
    (also an `ExampleDataError`, a ValueError) and leaves the output folder
    empty: no file, no staging folder; a shape error found inside staging
    (strip_saved_model) leaves nothing either;
  * integer data gives the same int8 file as the same values as float32,
    and so do an unbatched Dataset and an .npy of them;
  * a two-input model is calibrated from a dict per input name, and the
    int8 file agrees with the model;
  * a converter failure is one `TFLiteExportError` line; output paths that
    are directories or under a file are refused;
  * TFLite's C++ log lines follow TF_CPP_MIN_LOG_LEVEL (`native_logs`);
  * the small items: latency batch sizes, unit_params without unit
    granularity, train_config.json holding the hparams once;
  * the binaries, in subprocesses started together: a bad input of each
    kind of check (Inf, which used to kill the converter; a truncated file;
    a shape; output paths; --overwrite's wording) exits 1 with one stderr
    line and no traceback, writing nothing (the other data refusals take
    the same path through the binary, `tflite.check_options`, and are
    tested through the API above); strip_masks and graph_prune_train export
    int8 TFLite with nothing on stderr (the converter's lines show with
    --verbosity=0), and --shrink of a weight-pruned model says it removed
    nothing and names granularity=unit.
"""

import io
import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.export import native_logs
from graph_prune.export import tflite
from graph_prune.export import tflite_read
from graph_prune.train import experiment
from graph_prune.train import run_record

L = keras.layers
HPARAMS = (
  'target_sparsity=0.5,begin_pruning_step=0,end_pruning_step=1,'
  'sparsity_function_end_step=1'
)
_BIN = os.path.dirname(sys.executable)
# No log level of the caller's: the binaries' own quiet default applies.
_ENV = {
  k: v
  for k, v in dict(os.environ, CUDA_VISIBLE_DEVICES='').items()
  if k != 'TF_CPP_MIN_LOG_LEVEL'
}
_CONVERTER_LINES = r'fully_quantize|XNNPACK delegate'


def _prune(model):
  pruned = graph_prune.apply_pruning(model, HPARAMS)
  pruned.mask_update(1)
  return pruned


def _mlp(width=16):
  keras.utils.set_random_seed(0)
  return _prune(
    keras.Sequential([keras.Input((width,)), L.Dense(8), L.Dense(3)])
  )


def _x(n=32, width=16):
  return np.random.RandomState(1).rand(n, width).astype(np.float32)


def _with(x, index, value):
  x = x.astype(np.float64)
  x[index] = value
  return x


def _listing(path):
  return sorted(os.listdir(path))


class ExportTFLiteDataTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pruned = _mlp()
    cls.files = tempfile.mkdtemp()
    np.savez(os.path.join(cls.files, 'good.npz'), x=_x())
    with open(os.path.join(cls.files, 'good.npz'), 'rb') as f:
      raw = f.read()
    with open(os.path.join(cls.files, 'truncated.npz'), 'wb') as f:
      f.write(raw[: len(raw) // 2])
    np.save(os.path.join(cls.files, 'one_d.npy'), _x()[0])
    np.save(os.path.join(cls.files, 'x.npy'), _x())

  def export(self, data, quantize='int8', name='m.tflite'):
    """(report, path) of an export into a new folder, `self.out`."""
    self.out = tempfile.mkdtemp()
    path = os.path.join(self.out, name)
    report = tflite.export_tflite(
      self.pruned, path, quantize=quantize, representative_data=data
    )
    return report, path

  @parameterized.named_parameters(
    ('inf', _with(_x(), (4, 1), np.inf), 'int8', r'1 non-finite value'),
    (
      'nan',
      _with(_x(), (2, 3), np.nan),
      'none',
      r'index \[2, 3\] \(nan\)',
    ),
    (
      'objects',
      np.array([[None] * 16] * 4),
      'int8',
      r'object array .* not numbers',
    ),
    ('strings', np.array([['1'] * 16]), 'int8', r'<U1 values'),
    ('complex', _x().astype(np.complex64), 'int8', r'is complex'),
    ('empty', np.zeros((0, 16)), 'int8', r'holds no example'),
    ('rank_3', np.zeros((4, 2, 16)), 'int8', r'\(rank 3\)'),
    ('one_d', _x()[0], 'int8', r'add the batch dimension first'),
    (
      'wide_dynamic',
      np.zeros((64, 7)),
      'dynamic',
      r'shape \[64, 7\]: dimension 1 is 7, not 16',
    ),
    ('truncated_npz', 'truncated.npz', 'int8', r'not a readable \.npz'),
    ('one_d_npy', 'one_d.npy', 'int8', r'has shape \[16\] \(rank 1\)'),
  )
  def test_bad_data_is_one_line_and_writes_nothing(
    self, data, quantize, pattern
  ):
    if isinstance(data, str):
      data = os.path.join(self.files, data)
    with self.assertRaises(errors.RepresentativeDataError) as raised:
      self.export(data, quantize)
    self.assertIsInstance(raised.exception, errors.ExampleDataError)
    self.assertIsInstance(raised.exception, ValueError)
    message = str(raised.exception)
    self.assertNotIn('\n', message)
    self.assertRegex(message, '^Representative data')
    self.assertRegex(message, pattern)
    self.assertEqual(_listing(self.out), [])  # no file, no staging folder

  def test_integer_data_gives_the_same_int8_file_as_float32(self):
    values = (np.arange(32 * 16) % 17).reshape(32, 16)
    files = {}
    for name, data in (
      ('float32', values.astype(np.float32)),
      ('int64', values.astype(np.int64)),
      ('uint8', values.astype(np.uint8)),
      ('unbatched_dataset', tf.data.Dataset.from_tensor_slices(values)),
      ('npy', os.path.join(self.files, 'values.npy')),
    ):
      if name == 'npy':
        np.save(data, values.astype(np.int32))
      report, path = self.export(data, name=f'{name}.tflite')
      with open(path, 'rb') as f:
        files[name] = f.read()
      self.assertEqual(report.checked_examples, 32)
    for name, flatbuffer in files.items():
      self.assertEqual(flatbuffer, files['float32'], msg=name)
    # Calibrated on 0..16, not on values divided by the dtype's maximum: the
    # int8 model computes what the float model does on such inputs.
    want = self.pruned(tf.constant(values, tf.float32)).numpy()
    runner = tflite_read.make_interpreter(files['int64']).get_signature_runner()
    (name,) = runner.get_input_details()
    (got,) = runner(**{name: values.astype(np.float32)}).values()
    self.assertLessEqual(np.max(np.abs(got - want)), 0.06 * np.abs(want).max())

  def test_two_inputs_are_calibrated_from_a_dict(self):
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name='a'), keras.Input((3,), name='b')
    joined = L.Concatenate()([L.Dense(8)(a), L.Dense(8)(b)])
    pruned = _prune(keras.Model({'a': a, 'b': b}, L.Dense(3)(joined)))
    rng = np.random.RandomState(2)
    data = {'a': rng.rand(32, 4), 'b': rng.rand(32, 3)}
    path = os.path.join(tempfile.mkdtemp(), 'two.tflite')
    report = tflite.export_tflite(
      pruned, path, quantize='int8', representative_data=data
    )
    self.assertEqual(report.checked_examples, 32)
    inputs = {k: v.astype(np.float32) for k, v in data.items()}
    want = pruned(inputs).numpy()
    with open(path, 'rb') as f:
      got = tflite_read.run_signature(f.read(), 'serving_default', inputs)
    (got,) = got.values()
    self.assertLessEqual(np.max(np.abs(got - want)), 0.06 * np.abs(want).max())
    self.assertAllClose(report.max_abs_diff, np.max(np.abs(got - want)))
    with self.assertRaisesRegex(
      errors.RepresentativeDataError, r"takes 2 inputs \['a', 'b'\]"
    ):
      tflite.export_tflite(
        pruned, path + '2', quantize='int8', representative_data=data['a']
      )

  def test_converter_failure_is_one_line(self):
    converter = mock.MagicMock()
    converter.convert.side_effect = RuntimeError(
      'loc("x"): error: op not supported\nmore'
    )
    with (
      mock.patch.object(
        tf.lite.TFLiteConverter, 'from_saved_model', return_value=converter
      ),
      self.assertRaises(errors.TFLiteExportError) as raised,
    ):
      self.export(_x(), 'float16')
    message = str(raised.exception)
    self.assertNotIn('\n', message)
    self.assertRegex(
      message,
      r"^The TFLite converter failed on signatures \['serving_default'\] "
      r"with quantize='float16' \(op not supported\); try "
      r"quantize='dynamic' \(--quantize=dynamic\)",
    )
    self.assertEqual(_listing(self.out), [])

  def test_output_paths(self):
    root = tempfile.mkdtemp()
    a_file = os.path.join(root, 'file')
    with open(a_file, 'w') as f:
      f.write('keep')
    for path, pattern in (
      (root, r'is a directory, not a file; pass a file path'),
      (os.path.join(a_file, 'm.tflite'), r"'.*file' is a file, not a dir"),
    ):
      with self.assertRaisesRegex(errors.OutputPathError, pattern):
        tflite.export_tflite(self.pruned, path)
    self.assertEqual(_listing(root), ['file'])

  def test_shape_error_inside_staging_leaves_nothing(self):
    # strip_saved_model checks the data's values before staging, its shape
    # against the signature in the TFLite step, inside staging.
    root = tempfile.mkdtemp()
    saved = os.path.join(root, 'in')
    tf.saved_model.save(self.pruned, saved)
    with self.assertRaisesRegex(
      errors.RepresentativeDataError, r'dimension 1 is 7, not 16'
    ):
      graph_prune.strip_saved_model(
        saved,
        os.path.join(root, 'out'),
        tflite_path=os.path.join(root, 'out.tflite'),
        quantize='dynamic',
        representative_data=np.zeros((8, 7)),
        dense_reference=False,
      )
    self.assertEqual(_listing(root), ['in'])


class NativeLogsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('absl_info', 'I0000 00:00:1.0 1 file.cc:1] hello', 'I'),
    ('absl_error', 'E1206 12:00:00.1 7 quantize.cc:9] bad', 'E'),
    ('tflite_info', 'INFO: Created TensorFlow Lite XNNPACK delegate', 'I'),
    ('tflite_warning', 'WARNING: something', 'W'),
    ('mlir_error', 'loc("x"): error: scale out of range', 'E'),
    ('python_warning', 'x.py:3: UserWarning: careful', 'W'),
    ('plain', 'fully_quantize: 0, inference_type: 6', 'I'),
  )
  def test_severity(self, line, want):
    self.assertEqual(native_logs.severity(line), want)

  @parameterized.named_parameters(
    ('all', 0, ['fully_quantize: 0', 'W0 x.cc:1] w', 'E0 x.cc:1] e']),
    ('warnings', 1, ['W0 x.cc:1] w', 'E0 x.cc:1] e']),
    ('errors', 2, ['E0 x.cc:1] e']),
    ('none', 3, []),
  )
  def test_lines_below_the_level_are_dropped(self, level, kept):
    lines = ['fully_quantize: 0', 'W0 x.cc:1] w', 'E0 x.cc:1] e']
    lines = [x.replace('0 x', '0000 x') for x in lines]
    kept = [x.replace('0 x', '0000 x') for x in kept]
    written = io.StringIO()
    with (
      mock.patch.object(sys, 'stderr', written),
      native_logs.captured(level) as logs,
    ):
      os.write(2, ('\n'.join(lines) + '\n').encode())
    self.assertEqual(logs.lines, lines)
    self.assertEqual(written.getvalue().splitlines(), kept)
    self.assertEqual(logs.errors(), lines[2:])

  def test_level_follows_tf_cpp_min_log_level(self):
    for environ, want in (({}, 0), ({'TF_CPP_MIN_LOG_LEVEL': '2'}, 2)):
      self.assertEqual(native_logs.min_level(environ), want)


class SmallItemsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('negative', [-3], r'batch size -3; .*positive'),
    ('zero', [1, 0], r'batch size 0; .*positive'),
    ('not_an_integer', ['a'], r"holds 'a', not an integer"),
  )
  def test_latency_batches(self, batches, pattern):
    pruned = _mlp()
    with self.assertRaisesRegex(errors.LatencyBatchesError, pattern):
      graph_prune.shrink(pruned, latency_batches=batches)

  def test_unit_params_needs_unit_granularity(self):
    with self.assertRaisesRegex(
      errors.HParamValueError,
      r'unit_params=kernel is invalid: .*add granularity=unit',
    ):
      graph_prune.parse_hparams('unit_params=kernel')
    parsed = graph_prune.parse_hparams('granularity=unit,unit_params=kernel')
    self.assertEqual(parsed.unit_params, 'kernel')

  def test_train_config_holds_the_hparams_once(self):
    model_dir = tempfile.mkdtemp()
    config = experiment.TrainConfig(hparams=HPARAMS, model_dir=model_dir)
    run_record.write(config, model_dir)
    path = os.path.join(model_dir, run_record.CONFIG_FILE)
    with open(path) as f:
      text = f.read()
    self.assertEqual(text.count('sparsity_function_end_step'), 1)
    record = json.loads(text)
    self.assertEqual(
      record['hparams'],
      graph_prune.parse_hparams(HPARAMS).to_string(only_changed=True),
    )
    self.assertNotIn('hparams', record['first_run'])
    self.assertEqual(record['first_run']['train_steps'], config.train_steps)
    self.assertEqual(run_record.check(config, model_dir), record)


def _start(binary, *flags, verbose=False):
  return subprocess.Popen(
    [
      os.path.join(_BIN, binary),
      *flags,
      *(['--verbosity=0'] if verbose else []),
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=_ENV,
  )


class BinariesTest(tf.test.TestCase):
  """strip_masks and graph_prune_train, each run a subprocess."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = root = tempfile.mkdtemp()
    tf.saved_model.save(_mlp(6), f'{root}/in')
    x = _x(32, 6)
    data = {
      'good': dict(x_train=x),
      'inf': dict(x_train=_with(x, (4, 1), np.inf)),
      'wide': dict(x=np.zeros((32, 7))),
    }
    os.makedirs(f'{root}/data')
    for name, arrays in data.items():
      np.savez(f'{root}/data/{name}.npz', **arrays)
    with open(f'{root}/data/good.npz', 'rb') as f:
      raw = f.read()
    with open(f'{root}/data/truncated.npz', 'wb') as f:
      f.write(raw[: len(raw) // 2])
    os.makedirs(f'{root}/out')
    with open(f'{root}/out/a_file', 'w') as f:
      f.write('keep')
    os.makedirs(f'{root}/out/a_dir/inside')
    os.makedirs(f'{root}/out/full')
    with open(f'{root}/out/full/keep.txt', 'w') as f:
      f.write('keep')

    def strip(case, *flags):
      return (
        'strip_masks',
        f'--saved_model={root}/in',
        f'--output_dir={root}/out/{case}',
        *flags,
      )

    def int8(case, data, quantize='int8'):
      return strip(
        case,
        f'--tflite={root}/out/{case}.tflite',
        f'--quantize={quantize}',
        f'--representative_data={root}/data/{data}',
      )

    cls.errors = {
      'inf': (int8('inf', 'inf.npz'), r'1 non-finite value .*\(inf\)'),
      'truncated': (
        int8('truncated', 'truncated.npz'),
        r'not a readable \.npz or \.npy file',
      ),
      'wide_dynamic': (
        int8('wide', 'wide.npz', 'dynamic'),
        r'dimension 1 is 7, not 6; pass inputs of shape \[n, 6\]',
      ),
      'output_under_a_file': (
        (
          'strip_masks',
          f'--saved_model={root}/in',
          f'--output_dir={root}/out/a_file/sub',
        ),
        r"--output_dir='.*a_file/sub' cannot be created: '.*a_file' is a "
        r'file, not a directory',
      ),
      'tflite_is_a_directory': (
        strip('t', f'--tflite={root}/out/a_dir'),
        r"--tflite='.*a_dir' is a directory, not a file; pass a file path",
      ),
      'output_exists': (
        (
          'strip_masks',
          f'--saved_model={root}/in',
          f'--output_dir={root}/out/full',
        ),
        r"Output directory '.*full' already exists and is not empty; pass "
        r'--overwrite to replace it',
      ),
    }
    runs = {name: _start(*args) for name, (args, _) in cls.errors.items()}
    cls.quiet_flags = int8('quiet', 'good.npz') + (
      '--shrink',
      '--latency_batches=1',
      '--nodense_reference',
    )
    runs['quiet'] = _start(*cls.quiet_flags)
    runs['verbose'] = _start(
      *strip('verbose', f'--tflite={root}/out/verbose.tflite'),
      '--nodense_reference',
      verbose=True,
    )
    images = (np.random.RandomState(0).rand(48, 6, 7) * 255).astype(np.uint8)
    labels = np.arange(48) % 3
    np.savez(
      f'{root}/data/tiny.npz',
      x_train=images[:32],
      y_train=labels[:32],
      x_test=images[32:],
      y_test=labels[32:],
    )
    runs['train'] = _start(
      'graph_prune_train',
      '--model=cnn',
      f'--data={root}/data/tiny.npz',
      '--train_steps=1',
      '--batch_size=8',
      '--export_tflite=int8',
      '--shrink',
      f'--model_dir={root}/train',
      f'--hparams={HPARAMS},pruning_frequency=1',
    )
    cls.results = {
      name: (p.wait(timeout=600), *p.communicate()) for name, p in runs.items()
    }

  def test_bad_inputs_give_one_line_and_status_1(self):
    for name, (_, pattern) in self.errors.items():
      with self.subTest(name):
        code, out, err = self.results[name]
        self.assertEqual(code, 1, msg=err)
        self.assertNotIn('Traceback', err)
        self.assertLen(err.strip().splitlines(), 1, msg=err)
        self.assertRegex(err.strip(), '^strip_masks: error: .*' + pattern)
        self.assertNotIn('overwrite=True', err)
        self.assertNotIn('Stripped', out)

  def test_failed_runs_write_nothing(self):
    written = _listing(f'{self.root}/out')
    for name in ('quiet', 'quiet.tflite', 'verbose', 'verbose.tflite'):
      written.remove(name)
    # Only what was there before: no output, no hidden staging folder.
    self.assertEqual(written, ['a_dir', 'a_file', 'full'])
    self.assertEqual(_listing(f'{self.root}/out/full'), ['keep.txt'])
    self.assertEqual(_listing(f'{self.root}/out/a_dir'), ['inside'])

  def test_strip_masks_int8_is_quiet_and_notes_an_empty_shrink(self):
    code, out, err = self.results['quiet']
    self.assertEqual(code, 0, msg=err)
    self.assertEqual(err, '')
    self.assertIn('TFLite (int8, ', out)
    self.assertRegex(
      out,
      r'(?m)^note: --shrink removed nothing: .*granularity=unit',
    )
    self.assertTrue(os.path.isfile(f'{self.root}/out/quiet.tflite'))

  def test_verbosity_shows_the_converter_lines(self):
    code, _, err = self.results['verbose']
    self.assertEqual(code, 0, msg=err)
    self.assertRegex(err, _CONVERTER_LINES)

  def test_graph_prune_train_int8_is_quiet(self):
    code, out, err = self.results['train']
    self.assertEqual(code, 0, msg=err)
    self.assertEqual(err, '')
    self.assertRegex(out, r'tflite-int8 .*int8\.tflite')
    self.assertRegex(
      out, r'(?m)^note: --shrink removed nothing: .*granularity=unit'
    )


if __name__ == '__main__':
  tf.test.main()
