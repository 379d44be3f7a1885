"""Tests of the in-place import: graph_prune.passes.tape_ops, insert.call.

Inside a traced function that a tape differentiates, a pruned model's graph
is imported in place and its ops recorded on the tape. Gradients are checked
against NumPy's closed form, or (second order, forward mode, batch norm)
against a plain Keras twin whose kernels hold `weight * mask`.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune.passes import tape_ops

_CALL_OPS = ('PartitionedCall', 'StatefulPartitionedCall')


def _op_types(concrete_function):
  return [op.type for op in concrete_function.graph.get_operations()]


def _random_masks(pruned, seed):
  """Sets every mask to a random 0/1 pattern; returns them in order."""
  rng = np.random.default_rng(seed)
  masks = []
  for w in pruned.pruned_weights:
    mask = (rng.random(w.mask.shape) < 0.5).astype(np.float32)
    w.mask.assign(mask)
    masks.append(mask)
  return masks


def _mlp(seed=1):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential(
    [
      keras.Input((4,)),
      keras.layers.Dense(5, activation='tanh'),
      keras.layers.Dense(2),
    ]
  )
  return model, graph_prune.apply_pruning(model, 'target_sparsity=0.5')


def _mask_of(variable, pruned):
  """The mask of a model variable (a Keras variable wraps a tf.Variable)."""
  for w in pruned.pruned_weights:
    if w.weight is variable or w.weight is getattr(variable, 'value', None):
      return w.mask.numpy()
  return None


def _twin(model, pruned):
  """A plain copy of `model` whose kernels are `kernel * mask`."""
  twin = keras.models.clone_model(model)
  for mine, theirs in zip(model.weights, twin.weights):
    mask = _mask_of(mine, pruned)
    theirs.assign(mine.numpy() if mask is None else mine.numpy() * mask)
  return twin


def _kernel_masks(model, pruned):
  return [_mask_of(v, pruned) for v in model.trainable_variables]


class InPlaceTest(tf.test.TestCase, parameterized.TestCase):
  def test_training_step_imports_the_graph_in_place(self):
    model, pruned = _mlp()
    x = tf.random.normal((3, 4))

    @tf.function
    def step(x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pruned(x, training=True))
      return tape.gradient(loss, model.trainable_variables)

    types = _op_types(step.get_concrete_function(x))
    # The forward MatMuls sit in the step's own graph, not in a callee.
    self.assertGreaterEqual(types.count('MatMul'), 2)
    self.assertEmpty([t for t in types if t in _CALL_OPS])

  def test_serving_trace_keeps_the_call(self):
    # Without a tape the call stays: strip folds the masks in its callee.
    _, pruned = _mlp()
    serve = tf.function(lambda x: pruned(x, training=True))
    types = _op_types(serve.get_concrete_function(tf.TensorSpec([3, 4])))
    self.assertNotIn('MatMul', types)
    self.assertNotEmpty([t for t in types if t in _CALL_OPS])

  def test_gradients_equal_numpy(self):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    (mask,) = _random_masks(pruned, seed=3)
    # Closed over, not an argument: an eager input is captured in place.
    x = tf.random.normal((6, 4))
    c = np.random.default_rng(4).normal(size=(6, 3)).astype(np.float32)

    @tf.function
    def step():
      with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(pruned(x, training=True) * c)
      return tape.gradient(loss, model.trainable_variables + [x])

    self.assertEmpty(
      [t for t in _op_types(step.get_concrete_function()) if t in _CALL_OPS]
    )
    kernel, bias = model.get_weights()
    d_kernel, d_bias, d_x = [g.numpy() for g in step()]
    self.assertAllClose(x.numpy().T @ c * mask, d_kernel, rtol=1e-5, atol=1e-6)
    self.assertAllClose(c.sum(0), d_bias, rtol=1e-5, atol=1e-6)
    self.assertAllClose(c @ (kernel * mask).T, d_x, rtol=1e-5, atol=1e-6)

  def test_second_order_gradients_equal_the_twin(self):
    # A gradient penalty: d/dW of |dy/dx|^2 needs the outer tape to see
    # every op of the inner gradient.
    model, pruned = _mlp()
    _random_masks(pruned, seed=5)
    twin = _twin(model, pruned)
    x = tf.random.normal((3, 4))

    def penalty_grads(call, variables):
      @tf.function
      def step(x):
        with tf.GradientTape() as outer:
          with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(tf.sin(call(x)))
          penalty = tf.reduce_sum(inner.gradient(y, x) ** 2)
        return outer.gradient(penalty, variables)

      return step(x)

    got = penalty_grads(
      lambda x: pruned(x, training=True), model.trainable_variables
    )
    want = penalty_grads(twin, twin.trainable_variables)
    for g, w, mask in zip(got, want, _kernel_masks(model, pruned)):
      self.assertIsNotNone(g)
      # W' = W * M, so d/dW = d/dW' * M.
      expected = w.numpy() if mask is None else w.numpy() * mask
      self.assertAllClose(expected, g, rtol=1e-4, atol=1e-6)
    self.assertGreater(np.abs(got[0].numpy()).max(), 0.0)

  def test_forward_accumulator_equals_the_twin(self):
    model, pruned = _mlp()
    _random_masks(pruned, seed=6)
    twin = _twin(model, pruned)
    x = tf.random.normal((3, 4))
    tangent = tf.random.normal((3, 4))

    def jvp(call):
      @tf.function
      def step(x):
        # The tape makes the call import in place.
        with (
          tf.GradientTape(),
          tf.autodiff.ForwardAccumulator(x, tangent) as acc,
        ):
          y = call(x)
        return acc.jvp(y)

      return step(x)

    got = jvp(lambda x: pruned(x, training=True))
    self.assertAllClose(jvp(twin), got, rtol=1e-5, atol=1e-6)
    self.assertGreater(np.abs(got.numpy()).max(), 0.0)

  def test_batch_norm_statistics_update_as_the_twin(self):
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
      [
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(momentum=0.5),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
      ]
    )
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _random_masks(pruned, seed=8)
    twin = _twin(model, pruned)
    x = tf.random.normal((5, 6, 6, 2))

    def one_step(call, m):
      variables = m.trainable_variables

      @tf.function
      def step(x):
        with tf.GradientTape() as tape:
          loss = tf.reduce_sum(tf.square(call(x)))
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
          v.assign_sub(0.1 * g)

      step(x)

    one_step(lambda x: pruned(x, training=True), model)
    one_step(lambda x: twin(x, training=True), twin)
    bn, twin_bn = model.layers[1], twin.layers[1]
    self.assertGreater(np.abs(bn.moving_mean.numpy()).max(), 0.0)
    self.assertAllClose(twin_bn.moving_mean, bn.moving_mean, rtol=1e-5)
    self.assertAllClose(twin_bn.moving_variance, bn.moving_variance, rtol=1e-5)
    # The dense layer's kept weights took the same gradient step.
    mask = _kernel_masks(model, pruned)[-2]
    self.assertAllClose(
      twin.layers[-1].kernel.numpy() * mask,
      model.layers[-1].kernel.numpy() * mask,
      rtol=1e-4,
      atol=1e-6,
    )

  def test_loop_gradients_have_the_variables_shapes(self):
    # The LSTM reads its bias inside a While body, through the variable's
    # handle: the While's gradient for it has no static shape of its own.
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
      [keras.Input((3, 2)), keras.layers.LSTM(4), keras.layers.Dense(1)]
    )
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    _random_masks(pruned, seed=12)
    twin = _twin(model, pruned)
    x = tf.random.normal((2, 3, 2))

    def grads(call, variables):
      @tf.function
      def step(x):
        with tf.GradientTape() as tape:
          loss = tf.reduce_sum(call(x))
        grads = tape.gradient(loss, variables)
        return grads, [g.shape for g in grads]

      return step(x)

    got, shapes = grads(
      lambda x: pruned(x, training=True), model.trainable_variables
    )
    self.assertEqual(
      [tuple(v.shape) for v in model.trainable_variables],
      [tuple(s) for s in shapes],
    )
    want, _ = grads(twin, twin.trainable_variables)
    for g, w, mask in zip(got, want, _kernel_masks(model, pruned)):
      expected = w.numpy() if mask is None else w.numpy() * mask
      self.assertAllClose(expected, g, rtol=1e-4, atol=1e-6)

  def test_graph_without_recordable_gradients_keeps_the_call(self):
    # An op whose gradient override is registered nowhere cannot be recorded
    # (tf.gradients only fails if a gradient reaches it; here none does): the
    # pruned graph is called, and differentiated, as a function.
    class Module(tf.Module):
      def __init__(self):
        super().__init__()
        self.w = tf.Variable(
          np.random.default_rng(9).normal(size=(4, 3)).astype(np.float32)
        )

      @tf.function(input_signature=[tf.TensorSpec([None, 4])])
      def __call__(self, x):
        graph = tf.compat.v1.get_default_graph()
        with graph.gradient_override_map({'Sin': 'GraphPruneUnregistered'}):
          offset = tf.stop_gradient(tf.reduce_sum(tf.sin(x)))
        return 2.0 * tf.matmul(x, self.w) + offset

    module = Module()
    pruned = graph_prune.apply_pruning(module, 'target_sparsity=0.5')
    (mask,) = _random_masks(pruned, seed=10)
    x = tf.random.normal((2, 4))

    @tf.function
    def step(x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pruned(x))
      return tape.gradient(loss, module.w)

    types = _op_types(step.get_concrete_function(x))
    self.assertNotEmpty([t for t in types if t in _CALL_OPS])
    self.assertAllClose(
      2.0 * x.numpy().sum(0)[:, None] * np.ones((1, 3)) * mask,
      step(x),
      rtol=1e-5,
      atol=1e-6,
    )

  def test_mismatched_input_raises_as_the_function_does(self):
    _, pruned = _mlp()

    @tf.function
    def step(x):
      with tf.GradientTape():
        return pruned(x, training=True)

    with self.assertRaises((TypeError, ValueError)):
      step(tf.zeros((3, 5)))


class RecordableTest(tf.test.TestCase):
  def test_ops_with_gradients_and_without_outputs(self):
    v = tf.Variable(tf.ones((2, 2)))

    @tf.function
    def f(x):
      v.assign(v * 2.0)
      return tf.matmul(x, v.read_value())

    graph_def = f.get_concrete_function(tf.TensorSpec([2, 2])).graph
    self.assertTrue(tape_ops.recordable(graph_def.as_graph_def()))

  def test_op_without_gradient_and_without_float_outputs(self):
    # Keras 3's Dropout draws through StatelessRandomGetKeyCounter, which has
    # no registered gradient but only integer outputs.
    @tf.function
    def f(x):
      return x * tf.random.stateless_uniform([2], seed=[1, 2])

    graph_def = f.get_concrete_function(tf.TensorSpec([2])).graph.as_graph_def()
    self.assertIn(
      'StatelessRandomGetKeyCounter', [n.op for n in graph_def.node]
    )
    self.assertTrue(tape_ops.recordable(graph_def))

  def test_function_call_node(self):
    @tf.function
    def inner(x):
      return x * 2.0

    @tf.function
    def outer(x):
      return inner(x) + 1.0

    graph = outer.get_concrete_function(tf.TensorSpec([2])).graph
    self.assertFalse(tape_ops.recordable(graph.as_graph_def()))

  def test_gradient_override_without_registration(self):
    @tf.function
    def f(x):
      return tf.sin(x)

    graph_def = f.get_concrete_function(tf.TensorSpec([2])).graph.as_graph_def()
    (node,) = [n for n in graph_def.node if n.op == 'Sin']
    node.attr['_gradient_op_type'].s = b'NotRegisteredAnywhere'
    self.assertFalse(tape_ops.recordable(graph_def))

  def test_no_tape_records_nothing(self):
    graph = tf.Graph()
    with graph.as_default():
      y = tf.sin(tf.constant([1.0]))
    self.assertEqual(0, tape_ops.record([y.op]))


if __name__ == '__main__':
  tf.test.main()
