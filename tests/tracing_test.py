"""Tests of model/tracing: every accepted input kind, and the errors."""

from absl.testing import parameterized
import keras
import tensorflow as tf

from graph_prune import errors
from graph_prune.model import tracing

SPEC = tf.TensorSpec([None, 3], tf.float32)


class Mod(tf.Module):
  def __init__(self):
    super().__init__()
    self.w = tf.Variable(tf.ones([3, 2]), name='w')
    self.b = tf.Variable(tf.zeros([2]), name='b')

  def __call__(self, x):
    return tf.matmul(x, self.w) + self.b


class SignedMod(Mod):
  @tf.function(input_signature=[SPEC])
  def __call__(self, x):
    return tf.matmul(x, self.w) + self.b


class PolymorphicMod(Mod):
  @tf.function
  def __call__(self, x):
    return tf.matmul(x, self.w) + self.b


class SubclassedNeverCalled(keras.Model):
  def __init__(self):
    super().__init__()
    self.d = keras.layers.Dense(2)

  def call(self, x):
    return self.d(x)


class TracingTest(tf.test.TestCase, parameterized.TestCase):
  def assert_traced(self, traced, names=('w', 'b')):
    self.assertIsInstance(
      traced.concrete_function, tf.types.experimental.ConcreteFunction
    )
    self.assertEqual(
      [v.name.split(':')[0] for v in traced.variables], list(names)
    )
    self.assertLen(traced.input_signature, 1)
    self.assertTrue(traced.input_signature[0].is_compatible_with(SPEC))

  def test_tf_function_with_signature(self):
    m = Mod()
    self.assert_traced(tracing.trace(tf.function(m, input_signature=[SPEC])))

  def test_polymorphic_tf_function_given_signature(self):
    m = Mod()
    self.assert_traced(tracing.trace(tf.function(m), [SPEC]))

  def test_polymorphic_tf_function_without_signature_is_untraceable(self):
    f = tf.function(Mod(), autograph=False)
    with self.assertRaisesRegex(
      errors.UntraceableError, 'polymorphic tf.function.*input_signature'
    ):
      tracing.trace(f)
    self.assertTrue(issubclass(errors.UntraceableError, ValueError))

  def test_concrete_function(self):
    m = Mod()
    cf = tf.function(m).get_concrete_function(SPEC)
    traced = tracing.trace(cf)
    self.assert_traced(traced)
    self.assertIs(traced.concrete_function, cf)

  def test_plain_callable(self):
    m = Mod()
    self.assert_traced(tracing.trace(lambda x: m(x), [SPEC]))
    with self.assertRaisesRegex(errors.UntraceableError, 'input_signature'):
      tracing.trace(lambda x: m(x))

  def test_module_whose_call_is_a_tf_function_with_signature(self):
    traced = tracing.trace(SignedMod())
    self.assert_traced(traced)
    x = tf.constant([[1.0, 2.0, 3.0]])
    self.assertAllClose(traced.concrete_function(x), [[6.0, 6.0]])

  def test_module_whose_call_is_a_polymorphic_tf_function(self):
    m = PolymorphicMod()
    self.assert_traced(tracing.trace(m, [SPEC]))
    with self.assertRaisesRegex(
      errors.UntraceableError, 'polymorphic tf.function.*input_signature'
    ):
      tracing.trace(m)

  def test_not_callable(self):
    with self.assertRaisesRegex(errors.UntraceableError, 'expected'):
      tracing.trace(42)

  def test_keras_sequential_functional_and_dict_inputs(self):
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    traced = tracing.trace(seq)
    self.assertEqual(traced.input_signature[0].shape.as_list(), [None, 3])
    self.assertLen(traced.variables, 2)
    a, b = keras.Input((3,), name='a'), keras.Input((2,), name='b')
    model = keras.Model(
      {'a': a, 'b': b},
      keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])),
    )
    traced = tracing.trace(model)
    self.assertEqual(sorted(traced.input_signature[0]), ['a', 'b'])
    out = traced.concrete_function({'a': tf.ones([1, 3]), 'b': tf.ones([1, 2])})
    self.assertEqual(out.shape, [1, 2])

  def test_keras_subclassed(self):
    model = SubclassedNeverCalled()
    with self.assertRaisesRegex(
      errors.UntraceableError, 'never built or called.*input_signature'
    ):
      tracing.trace(model)
    self.assertLen(tracing.trace(model, [SPEC]).variables, 2)
    model2 = SubclassedNeverCalled()
    model2(tf.ones([4, 3]))
    traced = tracing.trace(model2)
    self.assertEqual(traced.input_signature[0].shape.as_list(), [None, 3])

  @parameterized.named_parameters(
    ('inference', False, True), ('training', True, False)
  )
  def test_keras_training_flag(self, training, deterministic):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dropout(0.5)])
    traced = tracing.trace(model, training=training)
    x = tf.ones([4, 8])
    same = bool(tf.reduce_all(traced.concrete_function(x) == x))
    self.assertEqual(same, deterministic)

  def test_variables_are_tf_variables_in_capture_order(self):
    model = keras.Sequential(
      [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)]
    )
    traced = tracing.trace(model)
    self.assertEqual(
      [v.name for v in traced.variables],
      [v.value.name for v in model.variables],
    )
    self.assertTrue(all(isinstance(v, tf.Variable) for v in traced.variables))


if __name__ == '__main__':
  tf.test.main()
