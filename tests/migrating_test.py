"""docs/migrating.md: every graph_prune snippet runs and does what it says.

A fenced block preceded by `<!-- test: NAME -->` is run here: a python block
in a fresh namespace (from a file of its own, so that AutoGraph can read its
tf.functions), an sh block as a subprocess of the installed binary. Paths
under /tmp/migrate are moved to a temporary folder. A block preceded by
`<!-- shown, not run: tfmot|TF1 -->` is old code and is never executed.
"""

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

_DOC = os.path.join(os.path.dirname(__file__), '..', 'docs', 'migrating.md')
_MARKED = re.compile(
  r'<!-- (?:test: (?P<test>\w+)|shown, not run: (?P<shown>tfmot|TF1)) -->\n'
  r'```(?P<lang>\w+)\n(?P<code>.*?)```',
  flags=re.DOTALL,
)
_TESTED = {
  'keras_fit': 'python',
  'custom_loop': 'python',
  'm_by_n': 'python',
  'resume': 'python',
  'contrib_program': 'python',
  'strip_masks': 'sh',
  'hparams': 'python',
}
_SHOWN = {'tfmot': 4, 'TF1': 1}
# What the old code needs; a tested block must need none of it.
_OLD_APIS = (
  'tfmot.',
  'tensorflow_model_optimization',
  'tensorflow.contrib',
  'tf.compat.v1',
  'import tf_keras',
  'tf.placeholder',
)
_PATH = '/tmp/migrate'


def _read_doc():
  with open(_DOC) as f:
    return f.read()


def _blocks():
  """(tested: name -> (lang, code), shown: [(kind, code)])."""
  tested, shown = {}, []
  for match in _MARKED.finditer(_read_doc()):
    if match['test']:
      if match['test'] in tested:
        raise AssertionError(f'snippet {match["test"]!r} is marked twice')
      tested[match['test']] = (match['lang'], match['code'])
    else:
      shown.append((match['shown'], match['code']))
  return tested, shown


def _tags(log_dir):
  """Every summary tag in the event files under `log_dir`."""
  tags = set()
  for root, _, files in os.walk(log_dir):
    for name in files:
      if 'tfevents' in name:
        for record in tf.data.TFRecordDataset(os.path.join(root, name)):
          event = tf.compat.v1.Event.FromString(record.numpy())
          tags.update(v.tag for v in event.summary.value)
  return tags


def _exact_overall(sparsity, masks):
  """Sparsity over all masks when round(s * n) of each are pruned."""
  sizes = [m.shape.num_elements() for m in masks]
  return sum(round(sparsity * n) for n in sizes) / sum(sizes)


class MigratingTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._dir = tempfile.mkdtemp(prefix='migrate_')
    assert "'" not in cls._dir and ' ' not in cls._dir, cls._dir
    cls._tested, cls._shown = _blocks()
    cls._runs = {}  # name -> (namespace, printed lines), each run once

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls._dir, ignore_errors=True)
    super().tearDownClass()

  def _path(self, relative):
    return os.path.join(self._dir, relative)

  def _run(self, name):
    """Runs the python snippet `name` once, in a fresh namespace."""
    if name not in self._runs:
      lang, code = self._tested[name]
      self.assertEqual(lang, 'python')
      code = code.replace(_PATH, self._dir)
      path = self._path(f'snippet_{name}.py')
      with open(path, 'w') as f:
        f.write(code)
      namespace = {'__name__': f'migrating_{name}'}
      printed = io.StringIO()
      with contextlib.redirect_stdout(printed):
        exec(compile(code, path, 'exec'), namespace)  # pylint: disable=exec-used
      self._runs[name] = (namespace, printed.getvalue().splitlines())
    return self._runs[name]

  def _assert_same_outputs(self, model, pruned, x):
    """`model` (or its serving signature) computes `pruned` to 1e-5."""
    x = tf.constant(x)
    if callable(model):
      got = model(x)
    else:  # a SavedModel written by strip_saved_model: signatures only
      (got,) = model.signatures['serving_default'](x).values()
    self.assertAllClose(got, pruned(x), atol=1e-5)

  # The guide itself.

  def test_every_snippet_is_marked(self):
    doc = _read_doc()
    fences = re.findall(r'^```\w+$', doc, flags=re.MULTILINE)
    self.assertLen(fences, len(_TESTED) + sum(_SHOWN.values()))
    self.assertLen(_MARKED.findall(doc), len(fences))

  def test_tested_snippets_are_all_there(self):
    self.assertEqual(
      {k: lang for k, (lang, _) in self._tested.items()}, _TESTED
    )
    for name, (_, code) in self._tested.items():
      for old in _OLD_APIS:
        self.assertNotIn(old, code, f'tested snippet {name!r} uses {old}')

  def test_old_snippets_are_shown_not_run(self):
    kinds = [kind for kind, _ in self._shown]
    self.assertEqual({k: kinds.count(k) for k in set(kinds)}, _SHOWN)
    for kind, code in self._shown:
      self.assertIn('shown, not run', code.splitlines()[0])
      self.assertIn('tfmot' if kind == 'tfmot' else 'tensorflow.contrib', code)
    tf1 = next(code for kind, code in self._shown if kind == 'TF1')
    for api in (
      'pruning.Pruning(hparams, global_step=global_step)',
      'pruning.apply_mask',
      'layers.masked_fully_connected',
      'conditional_mask_update_op()',
      'add_pruning_summaries()',
      'strip_pruning_vars',
    ):
      self.assertIn(api, tf1)
    tfmot = '\n'.join(code for kind, code in self._shown if kind == 'tfmot')
    for api in (
      'prune_low_magnitude',
      'PolynomialDecay',
      'ConstantSparsity',
      'UpdatePruningStep',
      'strip_pruning',
      'block_size',
      'sparsity_m_by_n',
      'prune_scope',
    ):
      self.assertIn(api, tfmot)

  # The snippets.

  @parameterized.named_parameters(('keras_fit', 'keras_fit'))
  def test_keras_fit(self, name):
    ns, printed = self._run(name)
    pruned, x = ns['pruned'], ns['x']
    self.assertEqual(printed[-1], '0.80')
    self.assertAllClose(
      float(pruned.sparsity().overall),
      _exact_overall(0.8, pruned.masks),
      atol=1e-6,
    )
    self.assertEqual(int(ns['trainer'].optimizer.iterations), 40)
    loaded = tf.saved_model.load(self._path('model'))
    self._assert_same_outputs(loaded, pruned, x[:32])
    # Folded: the Keras model itself is the sparse model, also once reloaded.
    self._assert_same_outputs(ns['model'], pruned, x[:32])
    reloaded = keras.models.load_model(self._path('model.keras'))
    self._assert_same_outputs(reloaded, pruned, x[:32])
    tags = _tags(self._path('logs'))
    for weight in pruned.sparsity().per_weight:
      self.assertIn(f'{weight}/sparsity', tags)
      self.assertIn(f'{weight}/threshold', tags)
    self.assertIn('model_pruning/sparsity', tags)
    self.assertIn('model_pruning/last_mask_update_step', tags)

  @parameterized.named_parameters(('custom_loop', 'custom_loop'))
  def test_custom_loop(self, name):
    ns, printed = self._run(name)
    pruned = ns['pruned']
    self.assertEqual(printed[-1], '0.50')
    self.assertEqual(int(ns['optimizer'].iterations), 30)
    for mask in pruned.masks:
      mask = mask.numpy()
      self.assertAllClose(float(1 - mask.mean()), 0.5, atol=1e-6)
      # 4x1 blocks: four consecutive rows of a column share their value.
      blocks = mask.reshape(mask.shape[0] // 4, 4, mask.shape[1])
      self.assertAllEqual(blocks, np.repeat(blocks[:, :1], 4, axis=1))

  @parameterized.named_parameters(('m_by_n', 'm_by_n'))
  def test_m_by_n(self, name):
    ns, printed = self._run(name)
    pruned = ns['pruned']
    self.assertEqual(printed[-1], '0.50')
    masked = [m.name for m in pruned.report.masked]
    self.assertLen(masked, 2)
    self.assertRegex(masked[0], r'/conv2d(_\d+)?/kernel$')
    self.assertRegex(masked[1], r'/dense(_\d+)?/kernel$')
    self.assertIn('depthwise', ' '.join(s.name for s in pruned.report.skipped))
    for mask in pruned.masks:
      mask = mask.numpy()
      # 2 survivors in every 4 consecutive weights along axis -2.
      groups = np.moveaxis(mask, -2, 0)
      groups = groups.reshape(groups.shape[0] // 4, 4, -1)
      self.assertAllEqual(groups.sum(axis=1), np.full_like(groups[:, 0], 2))

  @parameterized.named_parameters(('resume', 'resume'))
  def test_resume(self, name):
    ns, printed = self._run(name)
    self.assertEqual(printed, ['16', '0.80'])
    resumed = ns['resumed']
    self.assertEqual(int(ns['resumed_trainer'].optimizer.iterations), 32)
    self.assertAllClose(
      float(resumed.sparsity().overall),
      _exact_overall(0.8, resumed.masks),
      atol=1e-6,
    )
    # The first run stopped at step 16: 0.8 * (1 - 0.5**3) of the schedule.
    self.assertAllClose(
      float(ns['pruned'].sparsity().overall),
      _exact_overall(0.7, ns['pruned'].masks),
      atol=1e-6,
    )

  @parameterized.named_parameters(('contrib_program', 'contrib_program'))
  def test_contrib_program(self, name):
    ns, printed = self._run(name)
    pruned, xs = ns['pruned'], ns['xs']
    self.assertEqual(printed[-1], '0.90')
    self.assertAllClose(
      float(pruned.sparsity().overall),
      _exact_overall(0.9, pruned.masks),
      atol=1e-6,
    )
    self.assertEqual(
      sorted(pruned.sparsity().per_weight), ['hidden/weights', 'logits/weights']
    )
    self.assertIsNotNone(ns['manager'].latest_checkpoint)
    tags = _tags(self._path('tf2/logs'))
    for tag in (
      'hidden/weights/sparsity',
      'hidden/weights/threshold',
      'logits/weights/sparsity',
      'mlp_pruning/sparsity',
      'mlp_pruning/last_mask_update_step',
    ):
      self.assertIn(tag, tags)
    for stripped in ('tf2/stripped', 'tf2/stripped_too'):
      loaded = tf.saved_model.load(self._path(stripped))
      self._assert_same_outputs(loaded, pruned, xs[:16])
    self.assertGreater(
      os.path.getsize(self._path('tf2/pruning_stripped.pb')), 0
    )

  @parameterized.named_parameters(('strip_masks', 'strip_masks'))
  def test_strip_masks_command(self, name):
    ns, _ = self._run('contrib_program')  # writes the SavedModel it strips
    lang, code = self._tested[name]
    self.assertEqual(lang, 'sh')
    argv = shlex.split(code.replace(_PATH, self._dir).replace('\\\n', ' '))
    binary = os.path.join(os.path.dirname(sys.executable), argv[0])
    self.assertTrue(os.path.isfile(binary), binary)
    done = subprocess.run(
      [binary, *argv[1:]], capture_output=True, text=True, timeout=120
    )
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    loaded = tf.saved_model.load(self._path('tf2/cli'))
    self._assert_same_outputs(loaded, ns['pruned'], ns['xs'][:16])
    self.assertGreater(os.path.getsize(self._path('tf2/cli.pb')), 0)

  @parameterized.named_parameters(('hparams', 'hparams'))
  def test_hparams(self, name):
    ns, printed = self._run(name)
    self.assertEqual(printed[0], "0.9 ('conv1:0.8', '.*kernel:0.6') 10")
    self.assertEqual(printed[1], '(2, 4)')
    self.assertRegex(
      printed[2],
      r"^Unknown hparam 'prunning_frequency' in .*; "
      r"did you mean 'pruning_frequency'\?$",
    )
    old = ns['old']
    self.assertEqual(old.name, 'cifar10_pruning')
    self.assertEqual(
      (old.begin_pruning_step, old.end_pruning_step), (10000, 100000)
    )
    tfmot_like = ns['tfmot_like']
    self.assertEqual(
      (
        tfmot_like.initial_sparsity,
        tfmot_like.target_sparsity,
        tfmot_like.sparsity_function_exponent,
        tfmot_like.pruning_frequency,
      ),
      (0.2, 0.8, 2.0, 100),
    )


if __name__ == '__main__':
  tf.test.main()
