"""The export writes folded weights into the checkpoint a chunk at a time.

`export_saved_model` makes its folded variables without values and writes
`weight * mask` into the SavedModel's checkpoint afterwards, in parts no
bigger than the largest folded weight (issue 23's memory bound). Values are
compared with NumPy's weight * mask; the parts' sizes with the weights'
bytes; the fingerprint with one TensorFlow computes from the files.
"""

import os
import shutil
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.export import folded_checkpoint


def _mlp(widths):
  keras.utils.set_random_seed(0)
  layers = [keras.Input((widths[0],))]
  layers += [keras.layers.Dense(w, use_bias=False) for w in widths[1:]]
  return keras.Sequential(layers)


def _checkpoint_values(path):
  reader = tf.train.load_checkpoint(
    os.path.join(path, 'variables', 'variables')
  )
  return {
    key: reader.get_tensor(key)
    for key in reader.get_variable_to_shape_map()
    if key.endswith('VARIABLE_VALUE')
  }


class FoldedCheckpointTest(tf.test.TestCase):
  def tmp(self, name):
    return os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), name)

  def test_export_saves_parts_no_bigger_than_the_largest_weight(self):
    # Kernels of 24x16, 16x8, 8x8 and 8x4 floats: 1536, 512, 256 and 128
    # bytes; parts of at most 1536 bytes: [24x16] and [16x8, 8x8, 8x4].
    model = _mlp([24, 16, 8, 8, 4])
    pruned = graph_prune.apply_pruning(
      model, 'target_sparsity=0.5,sparsity_function_end_step=1'
    )
    pruned.mask_update(1)
    want = {
      w.shape: np.where(m.numpy() == 0, 0, w.numpy() * m.numpy())
      for w, m in zip(pruned.weights, pruned.masks)
    }
    x = np.random.RandomState(1).standard_normal((3, 24)).astype('float32')
    y = pruned(x).numpy()
    parts = []
    save = tf.raw_ops.SaveV2

    def recording_save(**kwargs):
      parts.append([t.shape.num_elements() * 4 for t in kwargs['tensors']])
      return save(**kwargs)

    path = self.tmp('out')
    with mock.patch.object(tf.raw_ops, 'SaveV2', recording_save):
      graph_prune.export_saved_model(pruned, path)
    self.assertEqual([[1536], [512, 256, 128]], parts)
    values = _checkpoint_values(path)
    self.assertLen(values, 4)
    for value in values.values():
      self.assertAllEqual(want[value.shape], value)
      self.assertFalse(np.any(np.signbit(value[value == 0])))
    loaded = tf.saved_model.load(path)
    (got,) = loaded.signatures['serving_default'](tf.constant(x)).values()
    self.assertAllClose(y, got, rtol=1e-6, atol=1e-6)

  def test_fingerprint_matches_the_written_checkpoint(self):
    pruned = graph_prune.apply_pruning(
      _mlp([8, 6, 4]), 'target_sparsity=0.5,sparsity_function_end_step=1'
    )
    pruned.mask_update(1)
    path = self.tmp('out')
    graph_prune.export_saved_model(pruned, path)
    copy = self.tmp('copy')
    shutil.copytree(path, copy)
    os.remove(os.path.join(copy, 'fingerprint.pb'))
    _tf_internal.write_fingerprint(copy)
    read = tf.saved_model.experimental.read_fingerprint
    self.assertEqual(read(copy).checkpoint_hash, read(path).checkpoint_hash)

  def test_write_refuses_a_checkpoint_that_holds_the_value(self):
    weight = tf.Variable([[1.0, -2.0], [3.0, -4.0]])
    mask = tf.Variable([[1.0, 0.0], [0.0, 1.0]])
    folds = folded_checkpoint.DeferredFolds()
    module = tf.Module()
    module.model_variables = [folds.variable(weight, mask, 'w')]
    self.assertFalse(module.model_variables[0].is_initialized())
    path = self.tmp('out')
    tf.saved_model.save(module, path)
    paths = {id(module.model_variables[0]): ('model_variables', '0')}
    folds.write(path, paths)
    (value,) = _checkpoint_values(path).values()
    self.assertAllEqual([[1.0, 0.0], [0.0, -4.0]], value)
    self.assertFalse(np.signbit(value[0, 1]))
    with self.assertRaisesRegex(errors.StripError, "'w'.*holds a value"):
      folds.write(path, paths)


if __name__ == '__main__':
  tf.test.main()
