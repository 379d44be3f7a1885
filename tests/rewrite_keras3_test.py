"""End-to-end tests of the graph pass on Keras 3 models.

Each case traces a small model, masks every prunable weight with a random
~50% mask, and checks against the reference obtained by running the
*original* graph with every masked weight set to `weight * mask`:
  * outputs are equal;
  * gradients w.r.t. every trainable variable equal the reference gradient
    (times the mask for masked weights), so they are 0 at masked positions.
"""

import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from graph_prune import passes as rewrite
from graph_prune.model import tracing

L = keras.layers


def masks_for(scan, seed=0):
  """~50% random masks (never all ones or all zeros), keyed by weight name."""
  rs = np.random.RandomState(seed)
  masks = {}
  for w in scan.candidates:
    m = (rs.rand(*w.shape) > 0.5).astype(w.dtype.as_numpy_dtype)
    m.flat[0], m.flat[-1] = 0, 1
    masks[w.name] = tf.Variable(m, trainable=False, name=w.name + '/mask')
  return masks


def random_inputs(signature, seed=0):
  rs = np.random.RandomState(seed)

  def one(spec):
    shape = [2 if d is None else d for d in spec.shape]
    if spec.dtype.is_integer:
      return tf.constant(rs.randint(0, 7, size=shape), spec.dtype)
    return tf.constant(rs.randn(*shape), spec.dtype)

  return tf.nest.map_structure(one, list(signature))


def loss_of(outputs):
  return tf.add_n(
    [
      tf.reduce_sum(tf.square(tf.cast(o, tf.float32)))
      for o in tf.nest.flatten(outputs)
    ]
  )


def reference(traced, scan, masks, inputs):
  """Outputs and gradients of the original graph at weight * mask."""
  variables = [v for v in traced.variables if v.trainable]
  saved = {w.name: w.variable.numpy() for w in scan.candidates}
  mask_of = {}
  for w in scan.candidates:
    if w.name in masks:
      w.variable.assign(saved[w.name] * masks[w.name].numpy())
      mask_of[id(w.variable)] = masks[w.name].numpy()
  try:
    with tf.GradientTape() as tape:
      outputs = traced.concrete_function(*inputs)
      loss = loss_of(outputs)
    grads = tape.gradient(loss, variables)
  finally:
    for w in scan.candidates:
      w.variable.assign(saved[w.name])
  grads = [
    None
    if g is None
    else tf.convert_to_tensor(g).numpy() * mask_of.get(id(v), 1.0)
    for v, g in zip(variables, grads)
  ]
  return tf.nest.map_structure(lambda t: t.numpy(), outputs), grads, variables


def _tf_variable(v):
  return v if isinstance(v, tf.Variable) else v.value  # Keras 3 variable


class PassTestCase(tf.test.TestCase, parameterized.TestCase):
  """Helpers shared by the end-to-end tests."""

  def prune(self, graph_fn, input_signature=None, training=False):
    traced = tracing.trace(graph_fn, input_signature, training=training)
    scan = rewrite.find_weights(traced)
    masks = masks_for(scan)
    result = rewrite.insert_masks(traced, masks)
    fn, report = result.graph, result.report
    return traced, scan, masks, fn, report

  def check_against_reference(
    self, traced, scan, masks, fn, tape_vars=None, atol=1e-5
  ):
    inputs = random_inputs(traced.input_signature)
    want_out, want_grads, variables = reference(traced, scan, masks, inputs)
    with tf.GradientTape() as tape:
      outputs = fn(*inputs)
      loss = loss_of(outputs)
    if tape_vars is None:
      grads = tape.gradient(loss, variables)
    else:  # the user's variables (e.g. Keras ones), reordered to `variables`
      tape_grads = tape.gradient(loss, tape_vars)
      by_handle = {
        id(_tf_variable(v).handle): g for v, g in zip(tape_vars, tape_grads)
      }
      self.assertLen(by_handle, len(variables))
      grads = [by_handle[id(v.handle)] for v in variables]
    self.assertAllClose(
      want_out, tf.nest.map_structure(lambda t: t.numpy(), outputs), atol=atol
    )
    self.assertLen(grads, len(want_grads))
    for v, g, want in zip(variables, grads, want_grads):
      if want is None:
        continue
      self.assertIsNotNone(g, msg=f'no gradient for {v.name}')
      self.assertAllClose(
        want, tf.convert_to_tensor(g), atol=atol, msg=f'gradient of {v.name}'
      )
    for w in scan.candidates:  # masked positions get exactly zero gradient
      i = [id(v) for v in variables].index(id(w.variable))
      g = tf.convert_to_tensor(grads[i]).numpy()
      self.assertAllEqual(
        g[masks[w.name].numpy() == 0],
        np.zeros_like(g[masks[w.name].numpy() == 0]),
      )
    unmasked = traced.concrete_function(*inputs)
    self.assertNotAllClose(
      want_out,
      tf.nest.map_structure(lambda t: t.numpy(), unmasked),
      msg='masks had no effect',
    )
    return inputs

  def check_saved_model(self, traced, masks, fn, inputs):
    module = tf.Module()
    module.variables_ = list(traced.variables)
    module.masks = list(masks.values())
    module.__call__ = fn
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'sm')
    tf.saved_model.save(module, path)
    loaded = tf.saved_model.load(path)
    self.assertIn('serving_default', loaded.signatures)
    self.assertAllClose(fn(*inputs), loaded(*inputs))


def _sequential_mlp():
  return keras.Sequential(
    [keras.Input((6,)), L.Dense(5, activation='relu'), L.Dense(4)]
  )


def _functional_cnn():
  x = keras.Input((8, 8, 3))
  y = L.Conv2D(4, 3, activation='relu')(x)
  y = L.DepthwiseConv2D(3, depth_multiplier=2)(y)
  y = L.Flatten()(y)
  return keras.Model(x, L.Dense(3)(y))


class SubclassedModel(keras.Model):
  def __init__(self):
    super().__init__()
    self.a = L.Dense(5, activation='tanh')
    self.b = L.Dense(2)

  def call(self, x):
    return self.b(self.a(x)) + self.a(x)[:, :2]  # `a` read twice: one mask


def _subclassed():
  model = SubclassedModel()
  model(tf.zeros([1, 6]))
  return model


def _embedding():
  x = keras.Input((4,), dtype='int32')
  y = L.Embedding(7, 3)(x)
  return keras.Model(x, L.Dense(2)(L.Flatten()(y)))


def _time_distributed():
  return keras.Sequential([keras.Input((3, 5)), L.TimeDistributed(L.Dense(4))])


def _attention():
  x = keras.Input((3, 4))
  y = L.MultiHeadAttention(num_heads=2, key_dim=2)(x, x)
  return keras.Model(x, y)


def _conv_transpose():
  return keras.Sequential(
    [
      keras.Input((4, 4, 2)),
      L.Conv2DTranspose(3, 3, strides=2),
      L.Flatten(),
      L.Dense(2),
    ]
  )


def _conv1d():
  return keras.Sequential(
    [keras.Input((6, 3)), L.Conv1D(4, 3), L.Flatten(), L.Dense(2)]
  )


def _dict_inputs():
  a, b = keras.Input((3,), name='a'), keras.Input((2,), name='b')
  y = L.Concatenate()([L.Dense(4)(a), b])
  return keras.Model({'a': a, 'b': b}, {'out': L.Dense(2)(y), 'aux': y})


def _mixed_precision():
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    return keras.Sequential([keras.Input((5,)), L.Dense(4), L.Dense(3)])
  finally:
    keras.mixed_precision.set_global_policy('float32')


def _rnn(layer):
  return lambda: keras.Sequential([keras.Input((4, 3)), layer()])


MODELS = dict(
  sequential_mlp=_sequential_mlp,
  functional_cnn=_functional_cnn,
  subclassed=_subclassed,
  embedding=_embedding,
  time_distributed=_time_distributed,
  multi_head_attention=_attention,
  conv2d_transpose=_conv_transpose,
  conv1d=_conv1d,
  dict_inputs_and_outputs=_dict_inputs,
  mixed_precision=_mixed_precision,
  lstm=_rnn(lambda: L.LSTM(3)),
  gru=_rnn(lambda: L.GRU(3)),
  bidirectional_lstm=_rnn(lambda: L.Bidirectional(L.LSTM(2))),
)

# Weight-consuming op each model must show for its weights.
EXPECTED_OPS = dict(
  functional_cnn={'Conv2D', 'DepthwiseConv2dNative', 'MatMul'},
  embedding={'GatherV2', 'ResourceGather', 'MatMul'},
  # Keras 3 on TF lowers EinsumDense to BatchMatMulV2 or Einsum.
  multi_head_attention={'Einsum', 'BatchMatMulV2'},
  conv2d_transpose={'Conv2DBackpropInput'},
  conv1d={'Conv2D'},
)


class Keras3Test(PassTestCase):
  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(1)

  @parameterized.named_parameters(*sorted(MODELS.items()))
  def test_outputs_and_gradients_match_masked_reference(self, make):
    model = make()
    traced, scan, masks, fn, report = self.prune(model)
    self.assertNotEmpty(scan.candidates)
    self.assertEqual(
      [m.name for m in report.masked], [w.name for w in scan.candidates]
    )
    # Gradients w.r.t. the Keras variables the user holds.
    self.check_against_reference(
      traced,
      scan,
      masks,
      fn,
      tape_vars=model.trainable_variables,
      atol=1e-2 if 'mixed' in self._testMethodName else 1e-5,
    )
    ops = {op for w in scan.candidates for op, _ in w.consumers}
    name = self._testMethodName.split('_match_masked_reference_')[-1]
    if name in EXPECTED_OPS:
      self.assertTrue(ops & EXPECTED_OPS[name], msg=f'{ops}')

  def test_gradients_wrt_keras_variables(self):
    model = _sequential_mlp()
    traced, scan, masks, fn, _ = self.prune(model)
    x = random_inputs(traced.input_signature)
    with tf.GradientTape() as tape:
      loss = loss_of(fn(*x))
    grads = tape.gradient(loss, model.trainable_variables)
    self.assertLen(grads, 4)
    self.assertTrue(all(g is not None for g in grads))
    kernel_grad = grads[0].numpy()
    self.assertAllEqual(
      kernel_grad[masks[scan.candidates[0].name].numpy() == 0],
      np.zeros(int((masks[scan.candidates[0].name].numpy() == 0).sum())),
    )

  @parameterized.named_parameters(('lstm', 'lstm'), ('gru', 'gru'))
  def test_recurrent_kernel_is_masked_inside_while_body(self, kind):
    model = MODELS[kind]()
    traced, scan, masks, fn, report = self.prune(model)
    recurrent = [
      w for w in scan.candidates if w.name.endswith('/recurrent_kernel')
    ]
    self.assertLen(recurrent, 1)
    in_body = [
      p
      for op, p in recurrent[0].consumers
      if op == 'MatMul' and '_while_body_' in p
    ]
    self.assertNotEmpty(in_body, msg=str(recurrent[0].consumers))
    self.assertTrue(
      any('_while_body_' in old and old != new for old, new in report.functions)
    )
    # Zero every recurrent weight: fn must equal a run with recurrent = 0.
    masks[recurrent[0].name].assign(tf.zeros(recurrent[0].shape))
    self.check_against_reference(traced, scan, masks, fn)

  def test_training_step_in_user_tf_function(self):
    model = _rnn(lambda: L.LSTM(3))()
    traced, scan, masks, fn, _ = self.prune(model)
    x = random_inputs(traced.input_signature)
    optimizer = keras.optimizers.SGD(0.1)
    before = {w.name: w.variable.numpy() for w in scan.candidates}

    @tf.function
    def train_step(x):
      with tf.GradientTape() as tape:
        loss = loss_of(fn(*x))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return loss

    for _ in range(2):
      train_step(x)
    for w in scan.candidates:
      zero = masks[w.name].numpy() == 0
      self.assertAllEqual(before[w.name][zero], w.variable.numpy()[zero])
      self.assertNotAllClose(before[w.name], w.variable.numpy())

  @parameterized.named_parameters(
    ('mlp', 'sequential_mlp'), ('cnn', 'functional_cnn'), ('lstm', 'lstm')
  )
  def test_saved_model_and_checkpoint_round_trip(self, kind):
    traced, scan, masks, fn, _ = self.prune(MODELS[kind]())
    inputs = random_inputs(traced.input_signature)
    self.check_saved_model(traced, masks, fn, inputs)
    ckpt = tf.train.Checkpoint(
      masks=list(masks.values()), variables=list(traced.variables)
    )
    path = ckpt.write(os.path.join(self.get_temp_dir(), f'ckpt_{kind}'))
    expected = fn(*inputs)
    for m in masks.values():
      m.assign(tf.ones_like(m))
    self.assertNotAllClose(expected, fn(*inputs))
    ckpt.read(path).assert_consumed()
    self.assertAllClose(expected, fn(*inputs))

  def test_training_mode_runs_dropout_and_batch_norm_updates(self):
    model = keras.Sequential(
      [
        keras.Input((4,)),
        L.Dense(6),
        L.BatchNormalization(),
        L.Dropout(0.5),
        L.Dense(2),
      ]
    )
    traced, scan, masks, fn, _ = self.prune(model, training=True)
    self.assertLen(scan.candidates, 2)
    bn_mean = [
      v for v in model.non_trainable_variables if 'moving_mean' in v.path
    ][0]
    before = bn_mean.numpy()
    x = random_inputs(traced.input_signature)
    out1, out2 = fn(*x), fn(*x)
    self.assertNotAllClose(before, bn_mean.numpy())  # BN updated its stats
    self.assertNotAllClose(out1, out2)  # dropout is random in training
    with tf.GradientTape() as tape:
      loss = loss_of(fn(*x))
    grads = tape.gradient(loss, model.trainable_variables)
    self.assertTrue(all(g is not None for g in grads))


if __name__ == '__main__':
  tf.test.main()
