"""Tests of one-shot pruning in the training binary (`--oneshot`).

The binary runs in subprocesses on the small `cnn` (its one-shot pruning
takes a second; the MLP's 1000-wide layers take many); exported weights are
read from the SavedModels' variables and checked in NumPy. The pieces the
binary maps its flags to (the config's checks, fixed-mask training, the run
record) are tested in process.
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

import graph_prune
from graph_prune.train import errors
from graph_prune.train import experiment
from graph_prune.train import loop
from graph_prune.train import oneshot_stage
from graph_prune.train import run_record

_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
_TIMEOUT = 300
# The depthwise kernel is pruned channel by channel (9 weights each), so its
# sparsity is not exactly the target: left dense here, with the logits.
_SPEC = 'target_sparsity=0.75,do_not_prune=[logits,depthwise_1]'
_PRUNED = ('conv_1', 'pointwise_1', 'dense_1')


def _command(*flags):
  return [sys.executable, '-m', 'graph_prune.train', *flags]


def _run(*flags):
  return subprocess.run(
    _command(*flags),
    capture_output=True,
    text=True,
    env=_ENV,
    timeout=_TIMEOUT,
    check=False,
  )


# The cnn's kernels on 8x8 digits, told apart by their shapes (checkpoint
# keys are object paths, not layer names).
_SHAPES = {
  (3, 3, 1, 32): 'conv_1',
  (3, 3, 32, 1): 'depthwise_1',
  (1, 1, 32, 64): 'pointwise_1',
  (1024, 128): 'dense_1',
  (128, 10): 'logits',
}


def _kernels(path):
  """{layer name: kernel} of a checkpoint or a SavedModel's variables."""
  reader = tf.train.load_checkpoint(path)
  out = {}
  for key, shape in reader.get_variable_to_shape_map().items():
    model = key.startswith(('model_variables/', 'optimizer/_trainable_'))
    if model and tuple(shape) in _SHAPES:
      out[_SHAPES[tuple(shape)]] = reader.get_tensor(key)
  return out


def _masks(path):
  """{layer name: mask} of a checkpoint of a pruned run."""
  reader = tf.train.load_checkpoint(path)
  return {
    _SHAPES[tuple(shape)]: reader.get_tensor(key)
    for key, shape in reader.get_variable_to_shape_map().items()
    if key.startswith('pruned/masks/') and key.endswith('VALUE')
  }


def _exported(model_dir, kind, step):
  return _kernels(
    os.path.join(model_dir, 'export', kind, str(step), 'variables', 'variables')
  )


class OneShotBinaryTest(tf.test.TestCase):
  def test_sparsegpt_then_fixed_mask_finetuning(self):
    model_dir = os.path.join(tempfile.mkdtemp(), 'run')
    done = _run(
      '--model=cnn',
      f'--model_dir={model_dir}',
      '--train_steps=20',
      '--finetune_steps=10',
      # Checkpoints: 20 (dense), 21 (one step after the prune) and 30.
      '--checkpoint_every=21',
      '--batch_size=32',
      '--log_every=0',
      '--oneshot=sparsegpt',
      '--calibration_samples=64',
      f'--hparams={_SPEC}',
    )
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    for layer in _PRUNED:
      self.assertRegex(
        done.stdout,
        rf'sparsegpt cnn/{layer}/[a-z_]*kernel: sparsity 0\.7500, '
        r'reconstruction error \d',
      )
    self.assertIn('fine-tuning with fixed masks to step 30', done.stdout)
    masks = _masks(os.path.join(model_dir, 'ckpt-21'))
    self.assertCountEqual(masks, _PRUNED)
    for layer, mask in _masks(os.path.join(model_dir, 'ckpt-30')).items():
      self.assertAllEqual(mask, masks[layer])  # no update after the prune
    early = _kernels(os.path.join(model_dir, 'ckpt-21'))
    exported = _exported(model_dir, 'stripped', 30)
    for layer in _PRUNED:
      w, mask = exported[layer], masks[layer]
      self.assertEqual((mask == 0).sum(), 0.75 * w.size, layer)
      self.assertAllEqual(w[mask == 0], np.zeros((mask == 0).sum()))
      # Nine steps moved the kept weights (all but dead units' inputs).
      moved = np.abs(w - early[layer])[mask == 1] > 0
      self.assertGreater(moved.mean(), 0.5, layer)
    for layer in ('depthwise_1', 'logits'):  # left dense
      self.assertEqual((exported[layer] == 0).sum(), 0)
    with open(os.path.join(model_dir, run_record.CONFIG_FILE)) as f:
      record = json.load(f)
    self.assertEqual(
      (record['oneshot'], record['calibration_samples'], record['train_steps']),
      ('sparsegpt', 64, 20),
    )

  def test_bad_oneshot_flags_exit_with_one_line(self):
    cases = {
      'unknown': (
        ['--oneshot=obs'],
        r'^train\.py: flag --oneshot=obs: value should be one of '
        r'<weight\|wanda\|sparsegpt>$',
      ),
      'gradient_option': (
        ['--oneshot=sparsegpt', '--hparams=prune_option=first_order_gradient'],
        r'^train\.py: --oneshot=sparsegpt conflicts with '
        r'prune_option=first_order_gradient in --hparams; drop',
      ),
    }
    runs = {
      name: subprocess.Popen(
        _command(f'--model_dir={tempfile.mkdtemp()}', *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_ENV,
      )
      for name, (flags, _) in cases.items()
    }
    for name, run in runs.items():
      _, err = run.communicate(timeout=_TIMEOUT)
      with self.subTest(name):
        self.assertEqual(run.returncode, 1, err)
        self.assertNotIn('Traceback', err)
        ours = [line for line in err.splitlines() if 'train.py:' in line]
        self.assertLen(ours, 1, err)
        self.assertEqual(err.strip().splitlines()[-1], ours[0])
        self.assertRegex(ours[0], cases[name][1])


class OneShotConfigTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('unknown', dict(oneshot='obs'), r"Unknown oneshot='obs'; pass one of"),
    (
      'gradient_option',
      dict(oneshot='wanda', hparams='prune_option=second_order_gradient'),
      'conflicts with prune_option=second_order_gradient',
    ),
    (
      'other_oneshot_option',
      dict(oneshot='wanda', hparams='prune_option=sparsegpt'),
      'conflicts with prune_option=sparsegpt',
    ),
    (
      'global',
      dict(oneshot='sparsegpt', hparams='pruning_scope=global'),
      'sets pruning_scope=global; pass pruning_scope=layer',
    ),
    (
      'units',
      dict(oneshot='wanda', hparams='granularity=unit'),
      'sets granularity=unit; pass granularity=weight',
    ),
    (
      'blocks',
      dict(oneshot='sparsegpt', hparams='block_height=2'),
      'sets block_height=2; pass block_height=1',
    ),
    (
      'no_samples',
      dict(oneshot='wanda', calibration_samples=0),
      'calibration_samples=0 is too small',
    ),
    (
      'negative_finetune',
      dict(oneshot='wanda', finetune_steps=-1),
      'finetune_steps=-1 is negative',
    ),
    (
      'finetune_alone',
      dict(finetune_steps=5),
      'finetune_steps=5 needs oneshot',
    ),
    (
      'option_alone',
      dict(hparams='prune_option=sparsegpt'),
      'pass --oneshot=sparsegpt',
    ),
    (
      'mirrored',
      dict(oneshot='weight', strategy='mirrored'),
      'runs on one device, not under strategy=mirrored',
    ),
  )
  def test_bad_config(self, kwargs, message):
    with self.assertRaisesRegex(errors.ConfigError, message):
      experiment.TrainConfig(**kwargs)

  def test_good_configs(self):
    self.assertEqual(experiment.TrainConfig(train_steps=7).end_step, 7)
    config = experiment.TrainConfig(
      oneshot='weight',
      hparams='pruning_scope=global,granularity=unit,prune_option=weight',
      train_steps=7,
      finetune_steps=3,
    )
    self.assertEqual(config.end_step, 10)
    h = oneshot_stage.oneshot_hparams('target_sparsity=0.6', 'sparsegpt')
    self.assertEqual((h.prune_option, h.target_sparsity), ('sparsegpt', 0.6))

  def test_calibration_examples(self):
    x = np.arange(50).reshape(10, 5)
    self.assertIs(oneshot_stage.calibration_examples(x, 10, 0), x)
    picked = oneshot_stage.calibration_examples(x, 4, 3)
    rows = picked[:, 0] // 5
    self.assertLen(np.unique(rows), 4)
    self.assertAllEqual(rows, np.sort(rows))  # the order of x
    self.assertAllEqual(picked, x[rows])
    self.assertAllEqual(oneshot_stage.calibration_examples(x, 4, 3), picked)


class FixedMaskTrainingTest(tf.test.TestCase):
  def _run(self, update_masks):
    model = keras.Sequential(
      [
        keras.Input((6,)),
        keras.layers.Dense(
          4, kernel_initializer=keras.initializers.GlorotUniform(0)
        ),
      ]
    )
    # Updates (to 50%) at every step unless the masks are fixed.
    pruned = graph_prune.apply_pruning(
      model,
      'target_sparsity=0.5,initial_sparsity=0.5,begin_pruning_step=0,'
      'pruning_frequency=1,sparsity_function_end_step=1',
    )
    mask = np.zeros((6, 4), np.float32)
    mask[:3] = 1
    pruned.masks[0].assign(mask)
    run = loop.Run(
      model, pruned, keras.optimizers.SGD(0.1), update_masks=update_masks
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8).astype(np.int32)
    before = model.weights[0].numpy()
    for _ in range(3):
      run.train_step(x, y)
    return mask, pruned.masks[0].numpy(), before, model.weights[0].numpy()

  def test_fixed_masks_stay_and_only_kept_weights_learn(self):
    mask, after_mask, before, after = self._run(update_masks=False)
    self.assertAllEqual(after_mask, mask)
    # SGD: a masked weight gets no gradient, so it does not move at all.
    self.assertAllEqual(after[3:], before[3:])
    self.assertGreater(np.abs(after[:3] - before[:3]).min(), 0)

  def test_scheduled_updates_replace_the_masks(self):
    mask, after_mask, _, after = self._run(update_masks=True)
    self.assertEqual(after_mask.sum(), 12)
    # |w|'s mask of the trained weight, not the one set by hand.
    self.assertNotAllEqual(after_mask, mask)
    self.assertAllEqual(
      after_mask, (np.abs(after) >= np.median(np.abs(after))).astype(np.float32)
    )


class OneShotRecordTest(tf.test.TestCase):
  def _record(self, **kwargs):
    model_dir = tempfile.mkdtemp()
    run_record.write(experiment.TrainConfig(**kwargs), model_dir)
    return model_dir

  def test_oneshot_runs_fix_method_samples_and_prune_step(self):
    base = dict(oneshot='sparsegpt', calibration_samples=64, train_steps=20)
    model_dir = self._record(**base)
    # Fine-tuning may grow.
    run_record.check(
      experiment.TrainConfig(**base, finetune_steps=9), model_dir
    )
    for change, message in (
      (dict(oneshot='wanda'), "oneshot='sparsegpt', not 'wanda'; pass"),
      (dict(oneshot=None), "oneshot='sparsegpt', not None; pass"),
      (dict(calibration_samples=65), 'calibration_samples=64, not 65'),
      (dict(train_steps=30), 'train_steps=20, not 30; pass --train_steps=20'),
    ):
      with (
        self.subTest(str(change)),
        self.assertRaisesRegex(errors.ResumeMismatchError, message),
      ):
        run_record.check(
          experiment.TrainConfig(**dict(base, **change)), model_dir
        )

  def test_gradual_records_refuse_oneshot_and_ignore_samples(self):
    model_dir = self._record(train_steps=20)
    run_record.check(
      experiment.TrainConfig(train_steps=40, calibration_samples=7), model_dir
    )
    with self.assertRaisesRegex(
      errors.ResumeMismatchError, "oneshot=None, not 'wanda'; drop --oneshot"
    ):
      run_record.check(experiment.TrainConfig(oneshot='wanda'), model_dir)
    # A record written before --oneshot existed reads as a gradual run's.
    path = os.path.join(model_dir, run_record.CONFIG_FILE)
    with open(path) as f:
      record = json.load(f)
    del record['oneshot'], record['calibration_samples']
    del record['first_run']['finetune_steps']
    with open(path, 'w') as f:
      json.dump(record, f)
    run_record.check(experiment.TrainConfig(train_steps=40), model_dir)
    with self.assertRaisesRegex(errors.ResumeMismatchError, 'oneshot=None'):
      run_record.check(experiment.TrainConfig(oneshot='weight'), model_dir)


if __name__ == '__main__':
  tf.test.main()
