"""Tests of the binaries' entry points: --help, quiet start, TensorBoard.

Each binary runs as the console script `pip install` made, in a subprocess.
"""

import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

_BIN = os.path.dirname(sys.executable)
# The user's environment, without a log level of its own (that would turn
# the quiet start off).
_ENV = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
# What a line of TensorFlow's C++ logging looks like: absl's prefix
# (severity, date, time, thread, file:line]) or its first-log warning.
_CPP_LOG = re.compile(r'^[IWEF]\d{4} |absl::InitializeLog|\.cc:\d+\]', re.M)
_HPARAMS = (
  'target_sparsity=0.5,begin_pruning_step=0,end_pruning_step=20,'
  'sparsity_function_end_step=20,pruning_frequency=10'
)


def _run(binary, *flags, timeout=300):
  return subprocess.run(
    [os.path.join(_BIN, binary), *flags],
    capture_output=True,
    text=True,
    env=_ENV,
    timeout=timeout,
    check=False,
  )


class HelpTest(tf.test.TestCase):
  def test_each_binary_describes_itself_and_lists_its_flags(self):
    cases = {
      'graph_prune_train': (
        'Trains a built-in model with gradual magnitude pruning',
        ['model', 'hparams', 'train_steps', 'model_dir', 'strategy'],
      ),
      'strip_masks': (
        'Folds the masks of a pruned SavedModel',
        ['saved_model', 'output_dir', 'tflite', 'overwrite'],
      ),
      'sparsity_sweep': (
        'The classic pruning study',
        ['methods', 'sparsities', 'seeds', 'out_dir'],
      ),
    }
    runs = {  # in parallel: each start imports TensorFlow
      binary: subprocess.Popen(
        [os.path.join(_BIN, binary), '--help'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_ENV,
      )
      for binary in cases
    }
    for binary, (description, flags) in cases.items():
      out, err = runs[binary].communicate(timeout=300)
      with self.subTest(binary):
        self.assertEqual(runs[binary].returncode, 0, err)
        self.assertStartsWith(out.lstrip(), description)
        for flag in flags:
          self.assertRegex(out, rf'(?m)^  --(\[no\])?{flag}:')
        self.assertNotRegex(err, _CPP_LOG)

  def test_verbosity_lets_tensorflow_log(self):
    # Only meaningful where TensorFlow logs at start-up at all.
    probe = subprocess.run(
      [sys.executable, '-c', 'import tensorflow as tf; tf.constant(1)'],
      capture_output=True,
      text=True,
      env=_ENV,
      timeout=120,
      check=False,
    )
    if not _CPP_LOG.search(probe.stderr):
      self.skipTest('TensorFlow logs nothing at start-up on this machine.')
    result = _run('strip_masks', '--verbosity=0', '--help')
    self.assertRegex(result.stderr, _CPP_LOG)


class TrainRunTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model_dir = tempfile.mkdtemp(dir=os.environ.get('TEST_TMPDIR'))
    cls.result = _run(
      'graph_prune_train',
      '--train_steps=30',
      f'--hparams={_HPARAMS}',
      f'--model_dir={cls.model_dir}',
    )

  def test_runs_without_tensorflow_log_lines(self):
    self.assertEqual(self.result.returncode, 0, self.result.stderr)
    self.assertNotRegex(self.result.stderr, _CPP_LOG)
    self.assertEqual(self.result.stderr.strip(), '')

  def test_tensorboard_reads_the_pruning_scalars(self):
    # The final table: weight, shape, params, non-zeros, sparsity.
    rows = re.findall(
      r'^(\S+/kernel) +\[(\d+), (\d+)\]', self.result.stdout, re.M
    )
    self.assertNotEmpty(rows)
    events = event_accumulator.EventAccumulator(
      self.model_dir, size_guidance={event_accumulator.TENSORS: 0}
    )
    events.Reload()
    tags = events.Tags()[event_accumulator.TENSORS]

    def last(tag):
      self.assertIn(tag, tags)
      self.assertEqual(
        events.SummaryMetadata(tag).plugin_data.plugin_name, 'scalars'
      )
      return float(tf.make_ndarray(events.Tensors(tag)[-1].tensor_proto))

    for name, rows_in, cols in rows:
      n = int(rows_in) * int(cols)
      pruned = n - max(1, round(n * 0.5))  # contrib's rule, 50% target
      self.assertAllClose(last(f'{name}/sparsity'), pruned / n, atol=1e-6)
      self.assertGreater(last(f'{name}/threshold'), 0.0)
    self.assertAllClose(last('model_pruning/sparsity'), 0.5)
    self.assertEqual(last('model_pruning/last_mask_update_step'), 20)
    self.assertBetween(last('train/accuracy'), 0.0, 1.0)
    self.assertTrue(np.isfinite(last('train/loss')))


if __name__ == '__main__':
  tf.test.main()
