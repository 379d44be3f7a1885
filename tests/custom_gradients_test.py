"""Tests of graph_prune.passes.custom_gradients, alone and through pruning.

The pass on FunctionDefs: custom-gradient IdentityN nodes lose their gradient
attr and their unread variable inputs, the input is not modified. Through
`apply_pruning` (Keras 3 swish, `tf.recompute_grad`): a training step's
gradients equal the unpruned model's gradient at `weight * mask` (times the
mask), computed by the original graph with its own custom gradients or in
NumPy; SavedModel export works with and without
`experimental_custom_gradients` and `export_saved_model` reloads with the
same outputs.
"""

import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune.passes import custom_gradients

SPEC = tf.TensorSpec([None, 6], tf.float32)
END = tf.constant(10**6, tf.int64)  # a step past every schedule's end


def swish_model():
  keras.utils.set_random_seed(1)
  return keras.Sequential(
    [
      keras.Input((6,)),
      keras.layers.Dense(8, activation='swish'),
      keras.layers.Dense(3, activation='silu'),
    ]
  )


def gradient_attrs(fdef):
  return [
    n.attr[custom_gradients.GRADIENT_ATTR].s
    for n in fdef.node_def
    if custom_gradients.GRADIENT_ATTR in n.attr
  ]


class ForwardGradientsPassTest(tf.test.TestCase):
  def test_silu_loses_its_python_gradient_and_input_is_unchanged(self):
    fn = tf.function(lambda x: tf.nn.silu(x) * 2.0, input_signature=[SPEC])
    fdef = fn.get_concrete_function().function_def
    before = fdef.SerializeToString()
    self.assertLen(gradient_attrs(fdef), 1)
    result = custom_gradients.forward_gradients(fdef)
    self.assertTrue(result.changed)
    self.assertLen(result.report, 1)
    self.assertEqual(gradient_attrs(result.graph), [])
    self.assertEqual(fdef.SerializeToString(), before)

    def ops(f):
      return sorted(n.op for n in f.node_def)

    self.assertEqual(ops(result.graph), ops(fdef))

  def test_recompute_grad_keeps_its_inputs(self):
    w = tf.Variable(tf.ones([6, 2]))
    block = tf.recompute_grad(lambda x: tf.matmul(x, w))
    fn = tf.function(block, input_signature=[SPEC])
    fdef = fn.get_concrete_function().function_def
    (node,) = [
      n for n in fdef.node_def if custom_gradients.is_custom_gradient(n)
    ]
    new = custom_gradients.forward_gradients(fdef).graph
    (plain,) = [n for n in new.node_def if n.name == node.name]
    self.assertFalse(custom_gradients.is_custom_gradient(plain))
    self.assertEqual(list(plain.input), list(node.input))
    self.assertEqual(gradient_attrs(new), [])

  def test_library_functions_lose_their_python_gradients(self):
    inner = tf.function(lambda h: tf.nn.silu(h) * 2.0)
    fn = tf.function(lambda x: inner(x) + 1.0, input_signature=[SPEC])
    cf = fn.get_concrete_function()
    library = {
      f.signature.name: f for f in cf.graph.as_graph_def().library.function
    }
    before = {k: f.SerializeToString() for k, f in library.items()}
    self.assertEqual(gradient_attrs(cf.function_def), [])  # only nested
    result = custom_gradients.forward_library(library)
    self.assertTrue(result.changed)
    self.assertLen(result.report, 1)
    self.assertEqual(set(result.graph), set(library))
    for f in result.graph.values():
      self.assertEqual(gradient_attrs(f), [])
    self.assertEqual(
      {k: f.SerializeToString() for k, f in library.items()}, before
    )

  def test_no_custom_gradient_returns_the_input(self):
    fn = tf.function(lambda x: tf.nn.relu(x), input_signature=[SPEC])
    fdef = fn.get_concrete_function().function_def
    result = custom_gradients.forward_gradients(fdef)
    self.assertFalse(result.changed)
    self.assertIs(result.graph, fdef)


class PrunedCustomGradientsTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = swish_model()
    cls.pruned = graph_prune.apply_pruning(cls.model, 'target_sparsity=0.5')
    cls.pruned.mask_update(END)
    cls.x = tf.constant(np.random.RandomState(0).randn(5, 6), tf.float32)

  def reference_gradients(self):
    """The unpruned model's gradients at weight * mask, times the mask."""
    masks = {
      w.ref(): m.numpy() for w, m in zip(self.pruned.weights, self.pruned.masks)
    }
    saved = [v.numpy() for v in self.model.trainable_variables]
    variables = [v.value for v in self.model.trainable_variables]
    try:
      for v in variables:
        if v.ref() in masks:
          v.assign(v.numpy() * masks[v.ref()])
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(self.model(self.x, training=True)))
      grads = tape.gradient(loss, variables)
      return loss.numpy(), [
        g.numpy() * masks.get(v.ref(), 1.0) for g, v in zip(grads, variables)
      ]
    finally:
      for v, s in zip(variables, saved):
        v.assign(s)

  @parameterized.named_parameters(
    ('eager', False),
    ('tf_function', True),
  )
  def test_training_gradients_equal_unpruned_at_masked_weights(self, compiled):
    variables = self.model.trainable_variables

    def step(x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(self.pruned(x, training=True)))
      return loss, tape.gradient(loss, variables)

    if compiled:
      step = tf.function(step)
    loss, grads = step(self.x)
    ref_loss, ref_grads = self.reference_gradients()
    self.assertAllClose(loss, ref_loss, rtol=1e-6)
    self.assertLen(grads, 4)
    for g, r in zip(grads, ref_grads):
      self.assertIsNotNone(g)
      self.assertAllClose(g, r, rtol=1e-5, atol=1e-6)
    masks = [m.numpy() for m in self.pruned.masks]
    self.assertAllEqual(
      grads[0].numpy()[masks[0] == 0], np.zeros(np.sum(masks[0] == 0))
    )

  @parameterized.named_parameters(
    ('custom_gradients_saved', True),
    ('custom_gradients_not_saved', False),
  )
  def test_saved_model_round_trip(self, save_gradients):
    path = os.path.join(self.get_temp_dir(), f'pruned_{save_gradients}')
    options = tf.saved_model.SaveOptions(
      experimental_custom_gradients=save_gradients
    )
    tf.saved_model.save(self.pruned, path, options=options)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(loaded(self.x), self.pruned(self.x), atol=1e-6)
    x = tf.Variable(self.x)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(loaded(x)))
    with tf.GradientTape() as ref_tape:
      ref_loss = tf.reduce_sum(tf.square(self.pruned(x)))
    self.assertAllClose(loss, ref_loss, rtol=1e-6)
    self.assertAllClose(
      tape.gradient(loss, x), ref_tape.gradient(ref_loss, x), atol=1e-5
    )

  def test_export_saved_model_folds_masks(self):
    path = os.path.join(self.get_temp_dir(), 'stripped')
    graph_prune.export_saved_model(self.pruned, path)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(loaded(self.x), self.pruned(self.x), atol=1e-6)


class NestedCustomGradientsTest(tf.test.TestCase, parameterized.TestCase):
  """silu inside a function the model's graph calls (not traced inline)."""

  @parameterized.named_parameters(
    ('nested_tf_function', 'call'),
    ('while_loop_body', 'while'),
  )
  def test_training_gradient_matches_numpy(self, where):
    rs = np.random.RandomState(4)
    w = tf.Variable(rs.randn(6, 4).astype(np.float32), name='nested/w')
    inner = tf.function(lambda h: tf.nn.silu(h))

    def body(i, h):
      return i + 1, tf.nn.silu(h)

    @tf.function(input_signature=[SPEC])
    def fn(x):
      h = tf.matmul(x, w)
      if where == 'call':
        return inner(h)
      return tf.while_loop(lambda i, h: i < 1, body, [0, h])[1]

    pruned = graph_prune.apply_pruning(fn, 'target_sparsity=0.5')
    pruned.mask_update(END)
    mask = pruned.masks[0].numpy()
    x = rs.randn(3, 6).astype(np.float32)

    @tf.function
    def step(x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pruned(x))
      return loss, tape.gradient(loss, w)

    loss, grad = step(tf.constant(x))
    z = x @ (w.numpy() * mask)
    sigmoid = 1.0 / (1.0 + np.exp(-z))
    # d/dW sum(silu(x W*M)) = x^T silu'(z) * M, silu' = s + z s (1 - s).
    expected = x.T @ (sigmoid + z * sigmoid * (1.0 - sigmoid)) * mask
    self.assertAllClose(loss, np.sum(z * sigmoid), rtol=1e-5)
    self.assertAllClose(grad, expected, rtol=1e-5, atol=1e-5)
    path = os.path.join(self.get_temp_dir(), where)
    tf.saved_model.save(pruned, path)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(loaded(x), pruned(x), atol=1e-6)


class RecomputeGradTest(tf.test.TestCase):
  def test_weight_read_in_recompute_grad_is_masked_with_numpy_gradient(self):
    rs = np.random.RandomState(3)
    w = tf.Variable(rs.randn(6, 4).astype(np.float32), name='block/w')
    block = tf.recompute_grad(lambda x: tf.matmul(x, w))
    fn = tf.function(block, input_signature=[SPEC])
    pruned = graph_prune.apply_pruning(fn, 'target_sparsity=0.5')
    self.assertEqual(pruned.weight_names, ['block/w'])
    pruned.mask_update(END)
    mask = pruned.masks[0].numpy()
    self.assertEqual(mask.sum(), 12)
    x = rs.randn(3, 6).astype(np.float32)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(pruned(tf.constant(x))))
    grad = tape.gradient(loss, w)
    effective = w.numpy() * mask
    expected = 2.0 * x.T @ (x @ effective) * mask  # d/dW sum((x W*M)^2)
    self.assertAllClose(loss, np.sum(np.square(x @ effective)), rtol=1e-5)
    self.assertAllClose(grad, expected, rtol=1e-5, atol=1e-5)

  def test_non_derivative_custom_gradient_becomes_the_derivative(self):
    # Documented: a custom gradient that is not the forward's derivative
    # (here: zero) is replaced by TF's gradient of the forward computation.
    @tf.custom_gradient
    def no_gradient(x):
      return tf.identity(x), lambda dy: tf.zeros_like(dy)

    w = tf.Variable(np.eye(6, 2, dtype=np.float32), name='w')
    fn = tf.function(
      lambda x: no_gradient(tf.matmul(x, w)), input_signature=[SPEC]
    )
    pruned = graph_prune.apply_pruning(fn, 'target_sparsity=0.5')
    x = tf.ones([1, 6])
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(pruned(x))
    self.assertAllClose(tape.gradient(loss, w), np.ones([6, 2]))


if __name__ == '__main__':
  tf.test.main()
