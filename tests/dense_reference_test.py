"""Tests of graph_prune/export/dense_reference.py.

A 6-8-3 ReLU MLP (Keras 3) is pruned to 50% and saved with
`graph_prune.save_pruned`. The dense reference exported from the loaded
SavedModel must compute the *unpruned* model (checked against NumPy on the
model's own unmasked kernels and biases) and leave the loaded masks as
they were.
`strip_saved_model`'s report carries its size and shows every size as a
share of its gzipped size.
"""

import os
import re

import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune.export import dense_reference
from graph_prune.export import sizes
from graph_prune.export.stripped_model import PruningVariables

L = keras.layers
X = np.random.RandomState(0).standard_normal((4, 6)).astype(np.float32)


class DenseReferenceTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    keras.utils.set_random_seed(0)
    cls.model = keras.Sequential(
      [keras.Input((6,)), L.Dense(8, activation='relu'), L.Dense(3)]
    )
    cls.pruned = graph_prune.apply_pruning(
      cls.model,
      'target_sparsity=0.5,begin_pruning_step=0,end_pruning_step=1,'
      'sparsity_function_end_step=1',
    )
    cls.pruned.mask_update(1)

  def setUp(self):
    super().setUp()
    self.saved = os.path.join(self.get_temp_dir(), 'pruned')
    graph_prune.save_pruned(self.pruned, self.saved)

  def test_computes_the_unpruned_model_and_restores_the_masks(self):
    loaded = tf.saved_model.load(self.saved)
    masks = list(loaded.masks)
    masks_before = [m.numpy() for m in masks]
    self.assertTrue(any(np.any(m == 0) for m in masks_before))
    path = os.path.join(self.get_temp_dir(), 'dense')
    dense_reference.export_dense(
      loaded, PruningVariables.of([loaded]), ['serving_default'], path
    )
    w1, b1, w2, b2 = [v.numpy() for v in self.model.weights]
    want = np.maximum(X @ w1 + b1, 0) @ w2 + b2
    (got,) = (
      tf.saved_model.load(path)
      .signatures['serving_default'](tf.constant(X))
      .values()
    )
    self.assertAllClose(got, want, atol=1e-5)
    for before, mask in zip(masks_before, loaded.masks):
      self.assertAllEqual(mask.numpy(), before)

  def test_strip_report_is_relative_to_the_dense_size(self):
    out = os.path.join(self.get_temp_dir(), 'stripped')
    report = graph_prune.strip_saved_model(self.saved, out)
    self.assertIsInstance(report.dense_size, sizes.Size)
    text = report.to_text()
    self.assertIn('% of the dense gzipped', text)
    row = re.search(r'stripped SavedModel .* ([\d.]+)%$', text, re.M)
    share = report.output_size.gzipped / report.dense_size.gzipped
    self.assertAlmostEqual(float(row.group(1)) / 100, share, places=4)
    self.assertRegex(text, r'dense SavedModel .* 100\.00%')
    skipped = graph_prune.strip_saved_model(
      self.saved, out + '_2', dense_reference=False
    )
    self.assertIsNone(skipped.dense_size)
    self.assertNotIn('dense SavedModel', skipped.to_text())


if __name__ == '__main__':
  tf.test.main()
