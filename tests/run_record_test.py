"""Tests of train/run_record: which flags a resume may change, and when the
record is written (items 2 and 4 of issue 15)."""

import json
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.train import errors
from graph_prune.train import experiment
from graph_prune.train import run_record

_SPEC = 'target_sparsity=0.5,begin_pruning_step=0,end_pruning_step=4'


def _config(model_dir, **changes):
  values = dict(model='mlp', hparams=_SPEC, train_steps=0, model_dir=model_dir)
  values.update(changes)
  return experiment.TrainConfig(**values)


class RunRecordTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.model_dir = tempfile.mkdtemp(dir=self.get_temp_dir())

  @parameterized.named_parameters(
    ('seed', 'seed', 0, 7),
    ('batch_size', 'batch_size', 64, 32),
    ('learning_rate', 'learning_rate', 0.001, 0.01),
    ('model', 'model', 'mlp', 'cnn'),
  )
  def test_fixed_flag_changed_on_resume_is_refused_naming_both(
    self, name, old, new
  ):
    run_record.write(_config(self.model_dir, **{name: old}), self.model_dir)
    with self.assertRaisesRegex(
      errors.ResumeMismatchError,
      rf'holds a run with {name}={old!r}, not {new!r}; pass '
      rf'--{name}={old!r} to resume it',
    ):
      run_record.check(_config(self.model_dir, **{name: new}), self.model_dir)

  def test_flags_that_may_change_on_resume_are_accepted(self):
    run_record.write(_config(self.model_dir), self.model_dir)
    saved = run_record.check(
      _config(
        self.model_dir,
        train_steps=99,
        checkpoint_every=3,
        log_every=5,
        export_dir='/elsewhere',
      ),
      self.model_dir,
    )
    self.assertEqual(saved['seed'], 0)
    self.assertEqual(saved['learning_rate'], 0.001)

  def test_record_of_older_graph_prune_is_checked_against_its_first_run(self):
    # Older records hold model, data and hparams at the top only.
    record = run_record.identity(_config(self.model_dir))
    old = {k: record[k] for k in ('model', 'data', 'hparams')}
    old['first_run'] = dict(seed=0, batch_size=64, learning_rate=0.001)
    with open(os.path.join(self.model_dir, run_record.CONFIG_FILE), 'w') as f:
      json.dump(old, f)
    run_record.check(_config(self.model_dir), self.model_dir)
    with self.assertRaisesRegex(errors.ResumeMismatchError, 'seed=0, not 3'):
      run_record.check(_config(self.model_dir, seed=3), self.model_dir)

  def test_checkpoints_without_a_record_are_refused(self):
    tf.train.Checkpoint(v=tf.Variable(1.0)).save(
      os.path.join(self.model_dir, 'ckpt')
    )
    with self.assertRaisesRegex(
      errors.ResumeMismatchError, r'holds checkpoints \(ckpt-1\) but no '
    ):
      run_record.check(_config(self.model_dir), self.model_dir)

  def test_empty_dir_has_no_record(self):
    self.assertIsNone(run_record.check(_config(self.model_dir), self.model_dir))

  def test_model_dir_that_is_a_file_is_refused(self):
    path = os.path.join(self.model_dir, 'file')
    with open(path, 'w') as f:
      f.write('x')
    with self.assertRaisesRegex(errors.ConfigError, 'is a file, not a dir'):
      run_record.prepare(path)


class RecordWrittenAfterBuildTest(tf.test.TestCase):
  def test_failed_build_records_nothing_and_the_right_flags_run(self):
    model_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    data = os.path.join(model_dir, 'flat.npz')
    rng = np.random.default_rng(0)
    np.savez(
      data,
      x_train=rng.random((8, 6), np.float32),
      y_train=np.arange(8) % 2,
      x_test=rng.random((4, 6), np.float32),
      y_test=np.arange(4) % 2,
    )
    run_dir = os.path.join(model_dir, 'run')
    # A cnn cannot take flat inputs: the build fails ...
    with self.assertRaisesRegex(errors.UnknownModelError, 'use --model=mlp'):
      experiment.train(
        _config(run_dir, model='cnn', data=data), log=lambda line: None
      )
    # ... and records nothing, so the right --model is not locked out.
    self.assertFalse(
      os.path.exists(os.path.join(run_dir, run_record.CONFIG_FILE))
    )
    experiment.train(
      _config(run_dir, model='mlp', data=data), log=lambda line: None
    )
    with open(os.path.join(run_dir, run_record.CONFIG_FILE)) as f:
      self.assertEqual(json.load(f)['model'], 'mlp')


if __name__ == '__main__':
  tf.test.main()
