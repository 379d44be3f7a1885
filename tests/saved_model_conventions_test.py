"""Tests of graph_prune/model/saved_model_conventions.py on both exports.

A functional Keras 3 model with a named input ('features') is pruned to
50%. Its SavedModels, as a user writes them (`tf.saved_model.save(pruned)`),
as `export_saved_model` writes the stripped one and as `strip_saved_model`
does, are loaded with `tf.saved_model.load`; each must have what a Keras 3
`model.export()` artifact has: `variables`, `trainable_variables` and
`non_trainable_variables` (checked against the variables each export must
hold: the model's 4, plus 2 masks, 2 thresholds and the step for the pruned
one; the 2 unpruned biases for the stripped one), a `serve` endpoint giving
`pruned(x)`, a `serving_default` signature (and `serve` for the stripped
exports) whose input is named after the model's input. A checkpoint is
unchanged (no saved-only lists), and `saved_model_cli show --all` runs.
`graph_prune.save_pruned` writes both `serve` and `serving_default`; its
strip has both again with each folded kernel one constant in the whole
SavedModel (counted in saved_model.pb), as for a single-signature input.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import graph_prune

L = keras.layers
X = np.random.RandomState(0).standard_normal((4, 6)).astype(np.float32)


def _kernel_constants(path):
  """{shape: count} of the rank-2 float constants in saved_model.pb."""
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
    proto.ParseFromString(f.read())
  graph = proto.meta_graphs[0].graph_def
  nodes = list(graph.node)
  for function in graph.library.function:
    nodes += function.node_def
  counts = {}
  for node in nodes:
    if node.op != 'Const':
      continue
    tensor = node.attr['value'].tensor
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    if len(shape) == 2 and tensor.dtype == tf.float32.as_datatype_enum:
      counts[shape] = counts.get(shape, 0) + 1
  return counts


def _kernel_variables(path):
  """{shape: count} of the rank-2 variables in the SavedModel's checkpoint."""
  reader = tf.train.load_checkpoint(
    os.path.join(path, 'variables', 'variables')
  )
  counts = {}
  for key, shape in reader.get_variable_to_shape_map().items():
    if key.endswith('VARIABLE_VALUE') and len(shape) == 2:
      counts[tuple(shape)] = counts.get(tuple(shape), 0) + 1
  return counts


def _model():
  x = keras.Input((6,), name='features')
  return keras.Model(x, L.Dense(3)(L.Dense(8, activation='relu')(x)))


class SavedModelConventionsTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    keras.utils.set_random_seed(0)
    cls.model = _model()
    cls.pruned = graph_prune.apply_pruning(
      cls.model,
      'target_sparsity=0.5,begin_pruning_step=0,end_pruning_step=1,'
      'sparsity_function_end_step=1',
    )
    cls.pruned.mask_update(1)
    cls.want = cls.pruned(tf.constant(X)).numpy()
    root = tf.io.gfile.join(
      os.environ.get('TMPDIR', '/tmp'), f'conventions_{os.getpid()}'
    )
    cls.paths = {
      'pruned': os.path.join(root, 'pruned'),
      'exported': os.path.join(root, 'exported'),
      'stripped': os.path.join(root, 'stripped'),
    }
    cls.paths['saved'] = os.path.join(root, 'saved')
    cls.paths['saved_stripped'] = os.path.join(root, 'saved_stripped')
    tf.saved_model.save(cls.pruned, cls.paths['pruned'])
    graph_prune.export_saved_model(cls.pruned, cls.paths['exported'])
    graph_prune.strip_saved_model(cls.paths['pruned'], cls.paths['stripped'])
    graph_prune.save_pruned(cls.pruned, cls.paths['saved'])
    cls.saved_report = graph_prune.strip_saved_model(
      cls.paths['saved'], cls.paths['saved_stripped']
    )

  def test_save_pruned_has_both_signatures(self):
    loaded = tf.saved_model.load(self.paths['saved'])
    self.assertLen(loaded.variables, 4 + 2 + 2 + 1)
    self.assertAllClose(loaded.serve(tf.constant(X)), self.want, atol=1e-6)
    self.assert_signature(loaded, ('serve', 'serving_default'))

  def test_stripping_both_signatures_stores_the_weights_once(self):
    loaded = tf.saved_model.load(self.paths['saved_stripped'])
    self.assert_signature(loaded, ('serve', 'serving_default'))
    self.assertEqual(self.saved_report.signatures, ('serve', 'serving_default'))
    # Each folded kernel is one variable in the whole SavedModel, as in the
    # strip of a single-signature SavedModel, and no constant.
    for kind in ('stripped', 'saved_stripped'):
      self.assertEqual(
        _kernel_variables(self.paths[kind]), {(6, 8): 1, (8, 3): 1}, kind
      )
      self.assertEqual(_kernel_constants(self.paths[kind]), {}, kind)

  def test_pruned_export(self):
    loaded = tf.saved_model.load(self.paths['pruned'])
    self.assertLen(loaded.variables, 4 + 2 + 2 + 1)
    self.assertLen(loaded.trainable_variables, 4)
    self.assertLen(loaded.non_trainable_variables, 5)
    self.assertCountEqual(
      [v.shape.as_list() for v in loaded.trainable_variables],
      [[6, 8], [8], [8, 3], [3]],
    )
    masks = [v.numpy() for v in self.pruned.masks]
    loaded_values = [v.numpy() for v in loaded.non_trainable_variables]
    for mask in masks:
      self.assertTrue(
        any(
          v.shape == mask.shape and np.array_equal(v, mask)
          for v in loaded_values
        )
      )
    self.assertAllClose(loaded.serve(tf.constant(X)), self.want, atol=1e-6)
    self.assert_signature(loaded, ('serving_default',))

  def test_stripped_exports(self):
    for kind in ('exported', 'stripped'):
      loaded = tf.saved_model.load(self.paths[kind])
      # Masked kernels are fixed (non-trainable) variables; the biases stay
      # the model's trainable ones.
      self.assertCountEqual(
        [v.shape.as_list() for v in loaded.variables],
        [[6, 8], [8], [8, 3], [3]],
      )
      self.assertCountEqual(
        [v.shape.as_list() for v in loaded.trainable_variables], [[8], [3]]
      )
      self.assertCountEqual(
        [v.shape.as_list() for v in loaded.non_trainable_variables],
        [[6, 8], [8, 3]],
      )
      served = loaded.serve(tf.constant(X))
      if isinstance(served, dict):  # strip_saved_model: the signature's
        (served,) = served.values()
      self.assertAllClose(served, self.want, atol=1e-6)
      self.assert_signature(loaded, ('serve', 'serving_default'))

  def assert_signature(self, loaded, keys):
    self.assertCountEqual(loaded.signatures.keys(), keys)
    for key in keys:
      signature = loaded.signatures[key]
      self.assertEqual(
        list(signature.structured_input_signature[1]), ['features']
      )
      (output,) = signature(features=tf.constant(X)).values()
      self.assertAllClose(output, self.want, atol=1e-6)

  def test_checkpoint_has_no_saved_model_lists(self):
    prefix = tf.train.Checkpoint(pruned=self.pruned).write(
      os.path.join(self.get_temp_dir(), 'ckpt')
    )
    names = [name for name, _ in tf.train.list_variables(prefix)]
    self.assertNotEmpty(names)
    self.assertFalse(any('trainable_variables' in n for n in names))

  def test_saved_model_cli_reads_them(self):
    cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    for kind in ('pruned', 'stripped'):
      result = subprocess.run(
        [cli, 'show', '--all', '--dir', self.paths[kind]],
        capture_output=True,
        text=True,
        check=False,
      )
      self.assertEqual(result.returncode, 0, result.stderr[-2000:])
      self.assertIn("signature_def['serving_default']", result.stdout)
      self.assertIn("inputs['features']", result.stdout)


if __name__ == '__main__':
  tf.test.main()
