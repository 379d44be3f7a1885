"""End-to-end tests of tools/strip_masks, run as a subprocess.

Every subprocess imports TensorFlow (seconds each), so the runs start
together in `setUpClass` and the tests check their results:
  * a pruned MLP stripped with --tflite and --frozen_graph;
  * the same with --quantize=int8 --representative_data=FILE.npz: int8
    zeros at every pruned position, read back from the file, and the
    report's encoding choice and output check;
  * the MLP stripped with --nodense_reference: sizes without the dense
    SavedModel's row and without the shares of it;
  * a pruned LSTM whose TFLite conversion fails, a later step: the run
    must fail cleanly and leave no output;
  * each bad input: one line on stderr, exit status 1, no traceback;
  * a fresh process with only TensorFlow (no graph_prune import) loading the
    stripped SavedModels of an MLP, a conv net with a depthwise conv, an LSTM
    and a subclassed model, and running the TFLite file.
"""

import os
import re
import subprocess
import sys
import tempfile
import textwrap

import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune.export import tflite_read
from graph_prune.export.strip_saved_model import strip_saved_model

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TOOL = os.path.join(_ROOT, 'tools', 'strip_masks')
_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')
L = keras.layers
RTOL = 1e-6


class SubclassedModel(keras.Model):
  def __init__(self):
    super().__init__()
    self.a = L.Dense(5, activation='tanh')
    self.b = L.Dense(2)

  def call(self, x):
    return self.b(self.a(x))


def _cnn():
  x = keras.Input((6, 6, 2))
  y = L.Conv2D(3, 3, activation='relu')(x)
  y = L.DepthwiseConv2D(3, depth_multiplier=2)(y)
  return keras.Model(x, L.Dense(2)(L.Flatten()(y)))


def _subclassed():
  model = SubclassedModel()
  model(tf.zeros([1, 6]))
  return model


MODELS = {
  'mlp': lambda: keras.Sequential([keras.Input((6,)), L.Dense(8), L.Dense(3)]),
  'cnn': _cnn,
  'lstm': lambda: keras.Sequential(
    [keras.Input((4, 3)), L.LSTM(4), L.Dense(2)]
  ),
  'subclassed': _subclassed,
}

# Runs in a fresh process: TensorFlow only.
_CHECK = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    root = sys.argv[1]
    data = np.load(root + '/inputs.npz')
    results = {}
    for kind in sys.argv[2:]:
      loaded = tf.saved_model.load(root + '/stripped_' + kind)
      signature = loaded.signatures['serving_default']
      (key,) = signature.structured_input_signature[1]
      (out,) = signature(**{key: tf.constant(data[kind])}).values()
      results[kind] = out.numpy()
    runner = tf.lite.Interpreter(
        model_path=root + '/mlp.tflite').get_signature_runner()
    (key,) = runner.get_input_details()
    (results['tflite'],) = runner(**{key: data['mlp']}).values()
    np.savez(root + '/results.npz', **results)
    print(sorted(m for m in sys.modules if m.startswith('graph_prune')))
""")


def _prune(kind, seed=0):
  keras.utils.set_random_seed(seed)
  pruned = graph_prune.apply_pruning(MODELS[kind](), 'target_sparsity=0.5')
  rng = np.random.RandomState(seed)
  for mask in pruned.masks:
    mask.assign((rng.rand(*mask.shape) < 0.5).astype(np.float32))
  return pruned


def _start(args):
  return subprocess.Popen(
    [sys.executable, _TOOL] + args,
    env=_ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


class StripMasksToolTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = root = tempfile.mkdtemp()
    inputs, cls.expected = {}, {}
    for kind in MODELS:
      pruned = _prune(kind)
      spec = pruned.__call__.input_signature[0]
      shape = [2 if d is None else d for d in spec.shape]
      inputs[kind] = (
        np.random.RandomState(1).standard_normal(shape).astype(np.float32)
      )
      cls.expected[kind] = pruned(inputs[kind]).numpy()
      tf.saved_model.save(pruned, f'{root}/in_{kind}')
    np.savez(f'{root}/inputs.npz', **inputs)
    dense = MODELS['mlp']()
    tf.saved_model.save(dense, f'{root}/dense')
    os.makedirs(f'{root}/not_a_saved_model')
    os.makedirs(f'{root}/full')
    with open(f'{root}/full/file.txt', 'w') as f:
      f.write('keep')

    cls.errors = {
      'missing': (
        [f'--saved_model={root}/nothing_here', f'--output_dir={root}/o1'],
        r"SavedModel path '.*nothing_here' does not exist; pass",
      ),
      'not_saved_model': (
        [f'--saved_model={root}/not_a_saved_model', f'--output_dir={root}/o2'],
        r"'.*not_a_saved_model' is not a SavedModel "
        r'directory \(it has no saved_model.pb\)',
      ),
      'no_pruning': (
        [f'--saved_model={root}/dense', f'--output_dir={root}/o3'],
        r"SavedModel '.*dense' has no pruning variables .*"
        'apply_pruning',
      ),
      'unknown_signature': (
        [
          f'--saved_model={root}/in_mlp',
          f'--output_dir={root}/o4',
          '--signature=serving_defualt',
        ],
        r"Signature 'serving_defualt' is not in "
        r'SavedModel .*; its signatures are '
        r"\['serving_default'\]\.",
      ),
      'output_not_empty': (
        [f'--saved_model={root}/in_mlp', f'--output_dir={root}/full'],
        r"Output directory '.*full' already exists and "
        r'is not empty; pass --overwrite',
      ),
      'later_step_fails': (
        [
          f'--saved_model={root}/in_lstm',
          f'--output_dir={root}/o5',
          f'--tflite={root}/lstm.tflite',
        ],
        r'The TFLite converter failed .*'
        'fixed batch size',
      ),
      'int8_without_data': (
        [
          f'--saved_model={root}/in_mlp',
          f'--output_dir={root}/o6',
          f'--tflite={root}/o6.tflite',
          '--quantize=int8',
        ],
        r'Full-integer int8 quantization needs representative inputs .*'
        r'--representative_data=FILE\.npz',
      ),
      'quantize_without_tflite': (
        [
          f'--saved_model={root}/in_mlp',
          f'--output_dir={root}/o7',
          '--quantize=dynamic',
        ],
        r'flags tflite=None, quantize=dynamic, .*: '
        r'--quantize, --representative_data and --tflite_sparse set up the '
        r'TFLite file; add --tflite=FILE\.',
      ),
      'bad_representative_data': (
        [
          f'--saved_model={root}/in_mlp',
          f'--output_dir={root}/o8',
          f'--tflite={root}/o8.tflite',
          '--quantize=int8',
          f'--representative_data={root}/missing.npz',
        ],
        r"Representative data file '.*missing\.npz' does not exist",
      ),
      'int8_sparse_loses_weights': (
        [
          f'--saved_model={root}/in_mlp',
          f'--output_dir={root}/o9',
          f'--tflite={root}/o9.tflite',
          '--quantize=int8',
          f'--representative_data={root}/representative.npz',
          '--tflite_sparse=on',
        ],
        r"TFLite's sparse weight encoding changed \d+ of 48 values .*"
        r'--tflite_sparse=auto\)\.$',
      ),
    }
    np.savez(
      f'{root}/representative.npz',
      x_train=np.random.RandomState(2).standard_normal((32, 6)),
    )
    runs = {name: _start(args) for name, (args, _) in cls.errors.items()}
    runs['ok'] = _start(
      [
        f'--saved_model={root}/in_mlp',
        f'--output_dir={root}/stripped_mlp',
        f'--tflite={root}/mlp.tflite',
        f'--frozen_graph={root}/mlp.pb',
      ]
    )
    runs['int8'] = _start(
      [
        f'--saved_model={root}/in_mlp',
        f'--output_dir={root}/stripped_int8',
        f'--tflite={root}/int8.tflite',
        '--quantize=int8',
        f'--representative_data={root}/representative.npz',
      ]
    )
    runs['nodense'] = _start(
      [
        f'--saved_model={root}/in_mlp',
        f'--output_dir={root}/stripped_nodense',
        '--nodense_reference',
      ]
    )
    # Meanwhile, strip the other kinds through the library.
    for kind in ('cnn', 'lstm', 'subclassed'):
      strip_saved_model(f'{root}/in_{kind}', f'{root}/stripped_{kind}')
    cls.results = {
      name: (p.wait(), *p.communicate()) for name, p in runs.items()
    }
    ok_code, ok_out, ok_err = cls.results['ok']
    if ok_code != 0:
      raise AssertionError(f'strip_masks failed:\n{ok_out}\n{ok_err}')
    check = subprocess.run(
      [sys.executable, '-c', _CHECK, root, *MODELS],
      env=_ENV,
      cwd=root,
      capture_output=True,
      text=True,
      check=False,
    )
    cls.check = check

  def test_stripped_models_serve_in_fresh_process_without_graph_prune(self):
    self.assertEqual(self.check.returncode, 0, msg=self.check.stderr)
    self.assertEqual(self.check.stdout.strip().splitlines()[-1], '[]')
    results = np.load(f'{self.root}/results.npz')
    for kind in MODELS:
      self.assertAllClose(
        self.expected[kind], results[kind], rtol=RTOL, atol=RTOL, msg=kind
      )
    self.assertAllClose(
      self.expected['mlp'], results['tflite'], rtol=1e-5, atol=1e-5
    )

  def test_report(self):
    _, out, err = self.results['ok']
    self.assertNotIn('Traceback', err)
    for text in (
      'Masked weights folded (weight * mask, fixed values):',
      '6x8',
      '8x3',
      'Parameters:',
      'non-zero',
      'input SavedModel',
      '% of the dense gzipped',
      'stripped SavedModel',
      'TFLite (none, ',
      'frozen GraphDef',
      'gzip',
    ):
      self.assertIn(text, out)
    # The dense reference's row is 100%; the 50%-pruned output's is smaller.
    self.assertRegex(out, r'dense SavedModel .* 100\.00%\n')
    (share,) = re.findall(r'stripped SavedModel .* ([\d.]+)%\n', out)
    self.assertLess(float(share), 100)
    self.assertTrue(os.path.isfile(f'{self.root}/mlp.pb'))
    # Nothing but the three outputs was written beside them.
    leftovers = [n for n in os.listdir(self.root) if n.startswith('.')]
    self.assertEqual(leftovers, [])

  def test_nodense_reference_drops_the_dense_row_and_shares(self):
    code, out, err = self.results['nodense']
    self.assertEqual(code, 0, msg=err)
    self.assertIn('Sizes (raw / gzip -9', out)
    self.assertNotIn('dense SavedModel', out)
    self.assertNotIn('% of the dense gzipped', out)
    # The two size rows end at the gzipped size: no share column.
    rows = re.findall(r'^  (\w+) SavedModel +[\d,]+ B .*$', out, re.M)
    self.assertEqual(rows, ['input', 'stripped'])
    for row in re.findall(r'^  \w+ SavedModel .*$', out, re.M):
      self.assertRegex(row, r'/ +[\d,]+ B \([^)]*\)$')
    self.assertTrue(
      tf.saved_model.contains_saved_model(f'{self.root}/stripped_nodense')
    )

  def test_int8_tflite(self):
    code, out, err = self.results['int8']
    self.assertEqual(code, 0, msg=err)
    # The report: the mode, the encoding (dense: TFLite's int8 sparse
    # encoding loses blocks of the 6-wide kernel, and auto says so), the
    # zeros read back, and the check against the SavedModel.
    self.assertRegex(
      out, r'TFLite \(int8, dense weights\): weight sparsity read back '
    )
    self.assertRegex(out, r'sparse encoding rejected: it changed \d+ of 48')
    self.assertRegex(out, r'on 32 inputs: max abs diff [\d.e-]+, top-1')
    with open(f'{self.root}/int8.tflite', 'rb') as f:
      weights = tflite_read.read_weights(f.read())
    # Every pruned position is an int8 zero (TFLite stores [out, in]); a
    # kept weight may round to zero too, so only the pruned ones are exact.
    by_shape = {w.shape: w for w in weights}
    pruned = _prune('mlp')
    for mask in pruned.masks:
      got = by_shape[tuple(mask.shape[::-1])]
      self.assertEqual(got.dtype, 'int8')
      self.assertTrue(np.all(got.zeros.T[mask.numpy() == 0]))
      self.assertLessEqual(np.sum(got.zeros), np.sum(mask.numpy() == 0) + 2)

  def test_bad_inputs_give_one_line_and_status_1(self):
    for name, (_, pattern) in self.errors.items():
      with self.subTest(name):
        code, out, err = self.results[name]
        self.assertEqual(code, 1, msg=err)
        self.assertNotIn('Traceback', err)
        lines = [x for x in err.splitlines() if x.startswith('strip_masks:')]
        self.assertLen(lines, 1, msg=err)
        self.assertRegex(lines[0], '^strip_masks: error: ' + pattern)
        self.assertEqual(err.strip().splitlines()[-1], lines[0])
        self.assertNotIn('Stripped', out)

  def test_failed_runs_write_nothing(self):
    for name in (
      'o1',
      'o2',
      'o3',
      'o4',
      'o5',
      'lstm.tflite',
      'o6',
      'o6.tflite',
      'o7',
      'o8',
      'o8.tflite',
      'o9',
      'o9.tflite',
    ):
      self.assertFalse(os.path.exists(f'{self.root}/{name}'), msg=name)
    self.assertEqual(os.listdir(f'{self.root}/full'), ['file.txt'])


if __name__ == '__main__':
  tf.test.main()
