"""Tests of graph_prune/train/artifacts.py and the run's TFLite exports.

One short in-process run of the training experiment (the small built-in CNN,
10 steps, pruned to 80%) with `export_tflite=('none', 'int8')`. Checked: the
TFLite files are where the layout says; every export's test accuracy,
measured by running that artifact, matches the accuracy the run computed
with the pruned model itself (float exports: to one test example; int8:
within 5 points); the dense reference has the size of the model's own
`tf.saved_model.save`; the final table has one row per export with its share
of the dense gzipped size (recomputed here) and its accuracy; an unknown
mode is a ConfigError.
"""

import os
import re
import tempfile

import numpy as np
import tensorflow as tf

from graph_prune.export import sizes
from graph_prune.train import artifacts
from graph_prune.train import datasets
from graph_prune.train import errors
from graph_prune.train import experiment
from graph_prune.train import summary

_SPEC = (
  'target_sparsity=0.8,begin_pruning_step=0,end_pruning_step=5,'
  'sparsity_function_begin_step=0,sparsity_function_end_step=5,'
  'pruning_frequency=5'
)


class ArtifactsTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model_dir = tempfile.mkdtemp()
    config = experiment.TrainConfig(
      model='cnn',
      hparams=_SPEC,
      train_steps=10,
      batch_size=16,
      model_dir=cls.model_dir,
      checkpoint_every=10,
      log_every=10,
      export_tflite=('none', 'int8'),
    )
    cls.result = experiment.train(config, log=lambda line: None)
    cls.examples = 360  # the embedded digits' test split

  def test_tflite_files_in_the_layout(self):
    kinds = [e.kind for e in self.result.exports]
    self.assertEqual(
      kinds, ['pruned', 'stripped', 'tflite-none', 'tflite-int8']
    )
    for mode in ('none', 'int8'):
      path = os.path.join(
        self.model_dir, 'export', 'tflite', '10', f'{mode}.tflite'
      )
      self.assertTrue(os.path.isfile(path))
      (e,) = [e for e in self.result.exports if e.kind == f'tflite-{mode}']
      self.assertEqual(e.path, path)
      self.assertEqual(e.raw_bytes, os.path.getsize(path))

  def test_accuracy_of_each_artifact(self):
    want = self.result.test_accuracy
    for e in self.result.exports:
      tolerance = 0.05 if e.kind == 'tflite-int8' else 1.01 / self.examples
      self.assertAllClose(e.test_accuracy, want, atol=tolerance, msg=e.kind)

  def test_dense_reference_is_the_models_saved_model(self):
    dense = self.result.dense_export
    path = os.path.join(self.get_temp_dir(), 'dense')
    tf.saved_model.save(self.result.model, path)
    size = sizes.measure(path)
    self.assertAllClose(dense.raw_bytes, size.raw, rtol=0.01)
    self.assertAllClose(dense.gzip_bytes, size.gzipped, rtol=0.01)
    self.assertIsNone(dense.test_accuracy)

  def test_final_table(self):
    r = self.result
    table = summary.final_table(
      r.counts, r.test_loss, r.test_accuracy, r.exports, dense=r.dense_export
    )
    rows = {line.split()[0]: line for line in table.splitlines()}
    self.assertRegex(rows['dense'], r' 100\.0% +- ')
    for e in r.exports:
      share = e.gzip_bytes / r.dense_export.gzip_bytes
      self.assertRegex(
        rows[e.kind],
        rf' {re.escape(f"{share:.1%}")} +{e.test_accuracy:.4f}  '
        rf'{re.escape(e.path)}$',
      )

  def test_unknown_mode_is_a_config_error(self):
    with self.assertRaisesRegex(errors.ConfigError, "'int4'.*none,dynamic"):
      experiment.TrainConfig(export_tflite=('int4',))

  def test_accuracy_counts_matching_labels(self):
    # Labels that are the artifact's own predictions: accuracy 1; shifted
    # by one class: 0; half of each: 0.5.
    (stripped,) = [e for e in self.result.exports if e.kind == 'stripped']
    (tfl,) = [e for e in self.result.exports if e.kind == 'tflite-none']
    x = datasets.load().x_test[:10]
    loaded = tf.saved_model.load(stripped.path)
    signature = loaded.signatures['serving_default']
    (name,) = signature.structured_input_signature[1]
    (logits,) = signature(**{name: tf.constant(x)}).values()
    labels = logits.numpy().argmax(1)
    wrong = (labels + 1) % 10
    half = np.where(np.arange(10) < 5, labels, wrong)
    for e in (stripped, tfl):
      self.assertEqual(artifacts.accuracy(e.path, x, labels), 1.0)
      self.assertEqual(artifacts.accuracy(e.path, x, wrong), 0.0)
      self.assertEqual(artifacts.accuracy(e.path, x, half), 0.5)


if __name__ == '__main__':
  tf.test.main()
