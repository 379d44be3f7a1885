"""Tests of the training loop, resuming, evaluation, exports and reports."""

import glob
import json
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.train import datasets
from graph_prune.train import experiment
from graph_prune.train import loop
from graph_prune.train import models
from graph_prune.train import summary

_SPEC = (
  'target_sparsity=0.8,begin_pruning_step=0,end_pruning_step=24,'
  'sparsity_function_begin_step=0,sparsity_function_end_step=20,'
  'pruning_frequency=4'
)


def _small_data(n=192):
  data = datasets.load_digits()
  return data.x_train[:n], data.y_train[:n]


def _run(seed=0, spec=_SPEC, model_name='cnn'):
  model = models.build(model_name, (8, 8), 10, seed=seed)
  pruned = graph_prune.apply_pruning(model, spec) if spec else None
  return loop.Run(model, pruned, keras.optimizers.Adam(1e-3))


def _events(logdir):
  tags = {}
  for path in glob.glob(os.path.join(logdir, 'events*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(
          (event.step, float(tf.make_ndarray(value.tensor)))
        )
  return tags


class BatchesTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('divides', 10, 5), ('straddles', 10, 4), ('larger_than_data', 3, 7)
  )
  def test_each_epoch_visits_every_example_once(self, n, batch_size):
    batches = loop.Batches(np.arange(n), np.arange(n), batch_size, seed=1)
    steps = 3 * n // np.gcd(n, batch_size)
    seen = np.concatenate([batches.indices(s) for s in range(steps)])
    for epoch in seen.reshape(-1, n):
      np.testing.assert_array_equal(np.sort(epoch), np.arange(n))

  def test_batch_depends_on_seed_and_step_only(self):
    x = np.arange(50) * 10
    a = loop.Batches(x, x, 8, seed=3)
    sequential = [a.batch(s)[0] for s in range(20)]
    b = loop.Batches(x, x, 8, seed=3)
    for s in (17, 2, 19, 0):
      np.testing.assert_array_equal(b.batch(s)[0], sequential[s])
    c = loop.Batches(x, x, 8, seed=4)
    self.assertFalse(np.array_equal(c.batch(0)[0], sequential[0]))


class FitTest(tf.test.TestCase):
  def test_diverged_weight_fails_the_step_with_a_graph_prune_error(self):
    # What a too-high learning rate ends in: a NaN weight. The step's mask
    # update (at step 1: frequency 1) refuses it, naming the weight.
    x, y = _small_data(16)
    run = _run(
      spec='target_sparsity=0.5,end_pruning_step=9,pruning_frequency=1'
    )
    kernel = run.pruned.weights[1]
    kernel.assign(tf.fill(kernel.shape, np.nan))
    with self.assertRaisesRegex(
      errors.NonFiniteWeightError,
      r"weight '.+' holds NaN or Inf.*lower the learning rate",
    ):
      run.train_step(x, y)
    self.assertEqual(int(run.pruned.last_mask_update_step.numpy()), 0)

  def test_resumed_run_equals_uninterrupted_run(self):
    x, y = _small_data()
    uninterrupted = _run()
    loop.fit(uninterrupted, loop.Batches(x, y, 16, seed=5), 30, log=None)

    model_dir = tempfile.mkdtemp()
    first = _run()
    progress = loop.fit(
      first,
      loop.Batches(x, y, 16, seed=5),
      30,
      model_dir=model_dir,
      checkpoint_every=5,
      log=None,
      stop_after=13,
    )
    self.assertEqual(progress.end_step, 13)
    self.assertEqual(
      [os.path.basename(p) for p in progress.checkpoints],
      ['ckpt-5', 'ckpt-10', 'ckpt-13'],
    )
    resumed = _run()
    self.assertEqual(
      resumed.restore(model_dir), os.path.join(model_dir, 'ckpt-13')
    )
    self.assertEqual(resumed.step, 13)
    self.assertEqual(int(resumed.pruned.last_mask_update_step.numpy()), 12)
    progress = loop.fit(
      resumed,
      loop.Batches(x, y, 16, seed=5),
      30,
      model_dir=model_dir,
      checkpoint_every=5,
      log=None,
    )
    self.assertEqual((progress.start_step, progress.end_step), (13, 30))

    sparsity = uninterrupted.pruned.sparsity().overall
    self.assertAllClose(sparsity, 0.8, atol=0.01)
    for a, b in zip(uninterrupted.pruned.masks, resumed.pruned.masks):
      self.assertAllEqual(a, b)
    for a, b in zip(uninterrupted.model.weights, resumed.model.weights):
      self.assertAllClose(a, b, atol=1e-6)
    # Every checkpoint is still there.
    self.assertEqual(
      sorted(
        int(p[len(model_dir) + 6 : -len('.index')])
        for p in glob.glob(os.path.join(model_dir, 'ckpt-*.index'))
      ),
      [5, 10, 13, 15, 20, 25, 30],
    )

  def test_progress_lines_and_summaries(self):
    x, y = _small_data()
    run = _run()
    lines = []
    model_dir = tempfile.mkdtemp()
    progress = loop.fit(
      run,
      loop.Batches(x, y, 16),
      24,
      model_dir=model_dir,
      log_every=8,
      log=lines.append,
    )
    steps = [line for line in lines if line.startswith('step')]
    self.assertLen(steps, 3)
    self.assertRegex(
      steps[-1],
      r'^step +24/24 +loss \d\.\d{4} +accuracy '
      r'\d\.\d{4} +sparsity 0\.80\d\d +[\d.]+ steps/s$',
    )
    self.assertEqual([h[0] for h in progress.history], [8, 16, 24])
    tags = _events(model_dir)
    self.assertEqual([s for s, _ in tags['train/loss']], [8, 16, 24])
    self.assertIn('train/accuracy', tags)
    for name in run.pruned.weight_names:
      self.assertAllClose(tags[f'{name}/sparsity'][-1][1], 0.8, atol=0.01)
      self.assertIn(f'{name}/threshold', tags)

  def test_dense_run_trains(self):
    x, y = _small_data()
    run = _run(spec='')
    before = loop.evaluate(run.forward, x, y)
    loop.fit(run, loop.Batches(x, y, 32), 40, log=None)
    after = loop.evaluate(run.forward, x, y)
    self.assertLess(after[0], before[0])
    self.assertGreater(after[1], 0.5)

  def test_checkpoint_of_another_model_is_refused(self):
    x, y = _small_data(32)
    model_dir = tempfile.mkdtemp()
    loop.fit(_run(), loop.Batches(x, y, 16), 2, model_dir=model_dir, log=None)
    with self.assertRaisesRegex(
      errors.ResumeError, r'ckpt-2 does not fit.*--model_dir'
    ):
      _run(model_name='lstm').restore(model_dir)

  def test_evaluate_matches_numpy(self):
    x, y = _small_data(50)
    w = np.random.RandomState(0).randn(64, 10).astype(np.float32)
    logits = x.reshape(-1, 64) @ w

    def forward(xb):
      return tf.matmul(tf.reshape(xb, [-1, 64]), w)

    loss, accuracy = loop.evaluate(forward, x, y, batch_size=16)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    self.assertAllClose(loss, -log_p[np.arange(50), y].mean(), rtol=1e-5)
    self.assertAllClose(accuracy, np.mean(logits.argmax(-1) == y))


class TrainerTest(tf.test.TestCase):
  def _config(self, **kwargs):
    args = dict(
      model='cnn',
      hparams=_SPEC,
      train_steps=12,
      batch_size=16,
      checkpoint_every=6,
      log_every=6,
      model_dir=os.path.join(tempfile.mkdtemp(), 'run'),
    )
    args.update(kwargs)
    return experiment.TrainConfig(**args)

  def test_train_evaluates_exports_and_reports(self):
    config = self._config()
    lines = []
    result = experiment.train(config, log=lines.append)
    self.assertIsNone(result.resumed_from)
    self.assertEqual(result.progress.end_step, 12)
    data = datasets.load_digits()
    loss, accuracy = loop.evaluate(result.pruned, data.x_test, data.y_test)
    self.assertAllClose(
      (result.test_loss, result.test_accuracy), (loss, accuracy)
    )
    tags = _events(config.model_dir)
    self.assertEqual(tags['test/accuracy'], [(12, result.test_accuracy)])

    kinds = [e.kind for e in result.exports]
    self.assertEqual(kinds[0], 'pruned')
    x = data.x_test[:20]
    expected = result.pruned(x)
    for e in result.exports:
      self.assertEqual(
        e.path, os.path.join(config.model_dir, 'export', e.kind, '12')
      )
      loaded = tf.saved_model.load(e.path)
      outputs = loaded.signatures['serving_default'](tf.constant(x))
      self.assertAllClose(list(outputs.values())[0], expected, atol=1e-5)
      self.assertGreater(e.raw_bytes, e.gzip_bytes)
    if len(kinds) == 1:
      self.assertTrue(any('stripped export skipped' in line for line in lines))

    table = summary.final_table(
      result.counts, result.test_loss, result.test_accuracy, result.exports
    )
    self.assertIn('cnn/depthwise_1/kernel', table)
    self.assertIn(f'test accuracy {result.test_accuracy:.4f}', table)
    self.assertRegex(table, r'pruned +[\d.]+ (?:[KMG]i)?B +[\d.]+ (?:[KMG]i)?B')

    # A rerun resumes at the end: nothing to train, exports left alone.
    again = experiment.train(config, log=lines.append)
    self.assertEqual(
      again.resumed_from, os.path.join(config.model_dir, 'ckpt-12')
    )
    self.assertEqual(again.progress.end_step, 12)
    self.assertFalse(any(e.written for e in again.exports))
    self.assertAllClose(again.test_accuracy, result.test_accuracy)

  def test_model_dir_of_another_run_is_refused(self):
    config = self._config(train_steps=0)
    experiment.train(config, log=lambda line: None)
    with open(os.path.join(config.model_dir, experiment.CONFIG_FILE)) as f:
      self.assertEqual(json.load(f)['model'], 'cnn')
    other = self._config(
      model='lstm', train_steps=0, model_dir=config.model_dir
    )
    with self.assertRaisesRegex(
      errors.ConfigError,
      r"holds a run with model='cnn', not 'lstm'; "
      r"pass --model='cnn'",
    ):
      experiment.train(other, log=lambda line: None)

  def test_bad_config(self):
    with self.assertRaisesRegex(errors.UnknownModelError, "'vgg'"):
      experiment.TrainConfig(model='vgg')
    with self.assertRaisesRegex(graph_prune.HParamsError, 'target_sparsity'):
      experiment.TrainConfig(hparams='target_sparsity=1.0')
    with self.assertRaisesRegex(errors.ConfigError, 'batch_size=0'):
      experiment.TrainConfig(batch_size=0)


class ReportTest(tf.test.TestCase):
  def test_counts_match_numpy(self):
    model = models.build('cnn', (8, 8), 10)
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.75')
    pruned.mask_update(200)
    counts = summary.count_params(model, pruned)
    self.assertEqual(counts.dense_params, model.count_params())
    masked = {
      n: w.numpy() * m.numpy()
      for n, w, m in zip(pruned.weight_names, pruned.weights, pruned.masks)
    }
    others = sum(
      int(np.count_nonzero(v))
      for v in model.weights
      if not any(v.path in n for n in masked)
    )
    self.assertEqual(
      counts.nonzeros,
      others + sum(int(np.count_nonzero(v)) for v in masked.values()),
    )
    for row in counts.weights:
      self.assertAllClose(row.sparsity, 0.75, atol=0.01)


if __name__ == '__main__':
  tf.test.main()
