"""End-to-end tests of the graph pass on tf_keras (Keras 2) models.

tf_keras RNNs run their loop in a nested function called through a
`PartitionedCall` tagged `api_implements`; the pass must inline it (so no
cuDNN/standard swap can bring back the unmasked version and the gradient
does not fall back to SymbolicGradient).
"""

from absl.testing import parameterized
import rewrite_keras3_test as common  # shared checks (not a test here)
import tensorflow as tf
import tf_keras

import graph_prune

L = tf_keras.layers


def _sequential():
  return tf_keras.Sequential(
    [L.Dense(5, activation='relu', input_shape=(6,)), L.Dense(3)]
  )


def _cnn():
  x = tf_keras.Input((6, 6, 2))
  y = L.Conv2D(3, 3)(x)
  y = L.DepthwiseConv2D(2)(y)
  return tf_keras.Model(x, L.Dense(2)(L.Flatten()(y)))


def _lstm():
  return tf_keras.Sequential([L.LSTM(3, input_shape=(4, 3)), L.Dense(2)])


def _gru():
  return tf_keras.Sequential([L.GRU(3, input_shape=(4, 3))])


class _Subclassed(tf_keras.Model):
  def __init__(self):
    super().__init__()
    self.d = L.Dense(3)

  def call(self, x):
    return self.d(x)


def _subclassed():
  model = _Subclassed()
  model(tf.zeros([1, 4]))
  return model


MODELS = dict(
  sequential=_sequential, cnn=_cnn, lstm=_lstm, gru=_gru, subclassed=_subclassed
)


class TfKerasTest(common.PassTestCase):
  def setUp(self):
    super().setUp()
    tf_keras.utils.set_random_seed(2)

  @parameterized.named_parameters(*sorted(MODELS.items()))
  def test_outputs_and_gradients_match_masked_reference(self, make):
    model = make()
    traced, scan, masks, fn, _ = self.prune(model)
    self.assertNotEmpty(scan.candidates)
    self.check_against_reference(
      traced, scan, masks, fn, tape_vars=model.trainable_variables
    )

  def test_lstm_recurrent_kernel_masked_and_saved_model(self):
    model = _lstm()
    traced, scan, masks, fn, report = self.prune(model)
    recurrent = [
      w for w in scan.candidates if w.name == 'lstm/lstm_cell/recurrent_kernel'
    ]
    self.assertLen(recurrent, 1)
    self.assertTrue(
      any(
        'PartitionedCall::' in p and 'while_body' in p
        for _, p in recurrent[0].consumers
      )
    )
    graph = fn.get_concrete_function().graph.as_graph_def()
    self.assertFalse(
      [
        n.name
        for n in graph.node
        if n.op in ('PartitionedCall', 'StatefulPartitionedCall')
      ]
    )
    self.assertFalse(
      [
        f.signature.name
        for f in graph.library.function
        if 'api_implements' in f.attr
        and f.signature.name in {n for _, n in report.functions}
      ]
    )
    inputs = self.check_against_reference(traced, scan, masks, fn)
    self.check_saved_model(traced, masks, fn, inputs)

  def test_training_step_with_adam(self):
    model = _lstm()
    traced, scan, masks, fn, _ = self.prune(model)
    x = common.random_inputs(traced.input_signature)
    optimizer = tf_keras.optimizers.Adam(0.01)
    before = {w.name: w.variable.numpy() for w in scan.candidates}

    @tf.function
    def train_step(x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fn(*x) ** 2)
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(3):
      train_step(x)
    for w in scan.candidates:
      zero = masks[w.name].numpy() == 0
      self.assertAllEqual(before[w.name][zero], w.variable.numpy()[zero])
      self.assertNotAllClose(before[w.name], w.variable.numpy())


class TfKerasTrainingModeTest(tf.test.TestCase):
  """`pruned(x, training=True)` on a tf_keras model with batch norm/dropout."""

  def test_training_mode(self):
    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential(
      [
        L.Dense(8, input_shape=(6,)),
        L.BatchNormalization(),
        L.Dropout(0.5),
        L.Dense(3),
      ]
    )
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    x = tf.random.stateless_normal([16, 6], seed=[1, 2])
    bn = model.layers[1]
    mean = bn.moving_mean.numpy()
    self.assertAllClose(pruned(x), model(x, training=False), atol=1e-6)
    self.assertAllEqual(bn.moving_mean, mean)

    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(pruned(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    self.assertNotIn(None, grads)
    # The moving mean moved as Keras moves it (dropout comes after it).
    updated = bn.moving_mean.numpy()
    bn.moving_mean.assign(mean)
    model(x, training=True)
    self.assertAllClose(updated, bn.moving_mean, atol=1e-6)
    self.assertNotAllClose(updated, mean)
    self.assertNotAllClose(pruned(x, training=True), pruned(x))


if __name__ == '__main__':
  tf.test.main()
