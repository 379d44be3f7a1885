"""Tests of train/versioned_export: staged exports, incomplete ones replaced
(issue 15, item 1)."""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune.train import versioned_export


def _pruned():
  keras.utils.set_random_seed(0)
  model = keras.Sequential(
    [keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)]
  )
  pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
  pruned.mask_update(200)
  return pruned


class VersionedExportTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pruned = _pruned()

  def test_incomplete_export_is_replaced_and_complete_one_kept(self):
    base = tempfile.mkdtemp(dir=self.get_temp_dir())
    # What a run killed while tf.saved_model.save wrote in place left.
    os.makedirs(os.path.join(base, 'pruned', '7', 'variables'))
    os.makedirs(os.path.join(base, 'stripped', '7'))
    lines = []
    first = versioned_export.export(self.pruned, base, 7, log=lines.append)
    self.assertEqual([e.written for e in first], [True, True])
    self.assertLen([line for line in lines if 'incomplete export' in line], 2)
    x = np.random.default_rng(0).random((4, 6), np.float32)
    for e in first:
      self.assertGreater(e.raw_bytes, 1000)
      loaded = tf.saved_model.load(e.path)
      self.assertAllClose(loaded(x), self.pruned(x), atol=1e-6)
      # Nothing but the versions is left: no staging folder.
      self.assertEqual(os.listdir(os.path.dirname(e.path)), ['7'])
    again = versioned_export.export(self.pruned, base, 7, log=lines.append)
    self.assertEqual([e.written for e in again], [False, False])
    self.assertEqual([e.raw_bytes for e in again], [e.raw_bytes for e in first])


if __name__ == '__main__':
  tf.test.main()
