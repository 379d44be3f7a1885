"""Tests of graph_prune.passes.graph_ir: names, node helpers, validity."""

from absl.testing import parameterized
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from graph_prune import errors
from graph_prune.passes import drop_unused
from graph_prune.passes import graph_ir
from graph_prune.passes import validity


class NamesTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('node', 'n', 'n'),
    ('graph_tensor', 'n:1', 'n'),
    ('function_tensor', 'n:output:0', 'n'),
    ('control', '^n', 'n'),
    ('scoped', 's/n:0', 's/n'),
  )
  def test_node_name(self, text, expected):
    self.assertEqual(graph_ir.node_name(text), expected)

  def test_naming_contract(self):
    self.assertEqual(graph_ir.mask_name('d/kernel'), 'd/kernel/mask')
    self.assertEqual(graph_ir.weight_of_mask('d/kernel/mask:0'), 'd/kernel')
    self.assertIsNone(graph_ir.weight_of_mask('d/kernel/threshold'))
    masked = graph_ir.masked_weight_name('d/kernel')
    self.assertEqual(graph_ir.weight_of_masked('s/' + masked), 's/d/kernel')
    self.assertIsNone(graph_ir.weight_of_masked('d/kernel'))


class CallsTest(tf.test.TestCase):
  def test_called_functions_and_renaming(self):
    node = graph_pb2.GraphDef().node.add(name='c', op='Case')
    node.attr['branches'].list.func.add(name='b0')
    node.attr['branches'].list.func.add(name='b1')
    self.assertEqual(
      graph_ir.function_attrs(node),
      [('branches', 0, 'b0'), ('branches', 1, 'b1')],
    )
    graph_ir.set_called_function(node, 'branches', 1, 'b1_new')
    self.assertEqual(
      graph_ir.called_functions(node, {'Case': None}),
      [('branches', 'b0'), ('branches', 'b1_new'), ('', 'Case')],
    )


class PassesTest(tf.test.TestCase):
  def _graph(self):
    g = graph_pb2.GraphDef()
    g.node.add(name='x', op='Placeholder').attr['dtype'].type = 1
    g.node.add(name='dead', op='Identity', input=['x'])
    g.node.add(name='y', op='Identity', input=['x'])
    return g

  def test_drop_unused_result(self):
    g = self._graph()
    result = drop_unused.drop_unused(g, ['y:0'])
    self.assertTrue(result.changed)
    self.assertEqual(result.report.nodes, ('dead',))
    self.assertEqual([n.name for n in result.graph.node], ['x', 'y'])
    self.assertLen(g.node, 3)  # input untouched
    again = drop_unused.drop_unused(result.graph, ['y:0'])
    self.assertFalse(again.changed)

  def test_check_valid(self):
    g = self._graph()
    validity.check_valid(g, 'test')
    g.node.add(name='z', op='Identity', input=['missing:0'])
    with self.assertRaisesRegex(errors.GraphRewriteError, "reads 'missing:0'"):
      validity.check_valid(g, 'test')
    g.node[-1].input[0] = 'x'
    g.node.add(name='z', op='Identity', input=['x'])
    with self.assertRaisesRegex(
      errors.GraphRewriteError, "two nodes named 'z'"
    ):
      validity.check_valid(g, 'test')


if __name__ == '__main__':
  tf.test.main()
