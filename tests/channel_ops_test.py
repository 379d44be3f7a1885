"""The one op table of the channel analyses, and their one union-find.

The guard of issue 24: training's coupled groups and shrink's unit flow read
the same table (`channel_ops.TABLE`), and each has a handler for every kind
in it, so an op training follows is one shrink handles. The constants a
removed channel takes through an op are checked against NumPy.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.passes import channel_classes
from graph_prune.passes import channel_groups
from graph_prune.passes import channel_ops
from graph_prune.passes import unit_rules
from graph_prune.passes.channel_ops import Kind


def _node(op, **attrs):
  node = tf.compat.v1.NodeDef(name='n', op=op)
  for key, value in attrs.items():
    if isinstance(value, float):
      node.attr[key].f = value
    else:
      node.attr[key].type = value.as_datatype_enum
  return node


class TableTest(tf.test.TestCase, parameterized.TestCase):
  def test_every_kind_has_a_handler_in_both_analyses(self):
    kinds = {r.kind for r in channel_ops.TABLE.values()}
    self.assertEqual(kinds, set(Kind))
    self.assertEqual(kinds - channel_groups.KINDS_FOLLOWED, set())
    self.assertEqual(kinds - set(unit_rules.BY_KIND), set())

  def test_shrink_has_a_rule_for_every_op_training_follows(self):
    self.assertEqual(set(unit_rules.RULES), set(channel_ops.TABLE))

  @parameterized.named_parameters(
    ('gelu_exact', ['Mul', 'Erfc']),
    ('gelu_tanh', ['Pow', 'Tanh', 'AddV2', 'Mul']),
    ('silu', ['Sigmoid', 'Mul', 'IdentityN']),
    ('hard_swish', ['AddV2', 'Relu6', 'RealDiv', 'Mul']),
    ('mish', ['Softplus', 'Tanh', 'Mul']),
    ('others', ['Elu', 'Selu', 'LeakyRelu', 'Relu6', 'Softplus', 'Cast']),
  )
  def test_activations_ops_are_followed(self, ops):
    for op in ops:
      self.assertIsNotNone(channel_ops.rule(op), op)

  def test_channel_mixing_ops_end_the_channels(self):
    for op in ('Softmax', 'Einsum', 'ArgMax'):
      self.assertIsNone(channel_ops.rule(op), op)

  def test_additive_ops_are_the_adds(self):
    additive = {op for op, r in channel_ops.TABLE.items() if r.additive}
    self.assertEqual(additive, {'Add', 'AddV2', 'BiasAdd', 'Sub', 'AddN'})


class ValueTest(tf.test.TestCase):
  x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0], np.float32)

  def _unary(self, op, node=None):
    return channel_ops.TABLE[op].value(self.x, node or _node(op))

  def test_unary_constants_match_numpy(self):
    x = self.x.astype(np.float64)
    expected = {
      'Relu': np.maximum(x, 0),
      'Relu6': np.clip(x, 0, 6),
      'Sigmoid': 1 / (1 + np.exp(-x)),
      'Tanh': np.tanh(x),
      'Softplus': np.log1p(np.exp(x)),
      'Elu': np.where(x > 0, x, np.expm1(x)),
      'Neg': -x,
      'Square': x * x,
      'Identity': x,
      'StopGradient': x,
    }
    for op, want in expected.items():
      self.assertAllClose(self._unary(op), want, rtol=1e-6, msg=op)

  def test_leaky_relu_reads_its_alpha(self):
    got = self._unary('LeakyRelu', _node('LeakyRelu', alpha=0.25))
    self.assertAllClose(got, np.where(self.x > 0, self.x, 0.25 * self.x))

  def test_cast_rounds_to_the_output_dtype(self):
    x = np.array([0.1, 1.0 / 3.0], np.float32)
    half = channel_ops.TABLE['Cast'].value(x, _node('Cast', DstT=tf.float16))
    self.assertAllEqual(half, x.astype(np.float16).astype(np.float32))
    whole = channel_ops.TABLE['Cast'].value(
      np.array([1.7, -2.2], np.float32), _node('Cast', DstT=tf.int32)
    )
    self.assertAllEqual(whole, [1, -2])

  def test_elementwise_constants_match_numpy(self):
    a = np.array([1.0, -2.0, 0.5], np.float32)
    b = np.array([3.0, 0.0, 2.0], np.float32)
    table = channel_ops.TABLE
    self.assertAllClose(table['AddV2'].value(a, b), a + b)
    self.assertAllClose(table['Pow'].value(a, 3.0), a**3)
    self.assertAllClose(table['DivNoNan'].value(a, b), [1 / 3, 0, 0.25])
    self.assertAllClose(table['AddN'].value(a, b, a), 2 * a + b)
    self.assertAllEqual(table['Greater'].value(a, 0.0), [True, False, True])
    self.assertAllClose(
      table['SelectV2'].value(np.array([True, False, True]), a, b),
      [1.0, 0.0, 0.5],
    )


class ClassesTest(tf.test.TestCase):
  def test_union_ties_positions_and_keeps_the_smaller_root(self):
    classes = channel_classes.Classes()
    a, b, c = classes.new(3), classes.new(3), classes.new(3)
    classes.union(a, b)
    classes.union(b[:1], c[:1])
    self.assertAllEqual(classes.roots(), [0, 1, 2, 0, 1, 2, 0, 7, 8])

  def test_fixed_spreads_to_the_whole_class(self):
    classes = channel_classes.Classes()
    a, b = classes.new(2), classes.new(2)
    classes.fix(b[1:])
    self.assertFalse(classes.is_fixed(a[1]))
    classes.union(a, b)
    self.assertTrue(classes.is_fixed(a[1]))
    self.assertFalse(classes.is_fixed(a[0]))


if __name__ == '__main__':
  tf.test.main()
