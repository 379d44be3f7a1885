"""flatten (calls inlined, handles kept) and variable_view (stubs and back)."""

import numpy as np
import tensorflow as tf

from graph_prune.passes import flatten
from graph_prune.passes import graph_ir
from graph_prune.passes import variable_view


class _Model(tf.Module):
  def __init__(self):
    super().__init__()
    rng = np.random.RandomState(0)
    self.w = tf.Variable(rng.standard_normal((4, 40)).astype('float32'))
    self.b = tf.Variable(rng.standard_normal(40).astype('float32'))

  @tf.function
  def inner(self, x):
    return tf.nn.relu(tf.matmul(x, self.w) + self.b)

  @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
  def __call__(self, x):
    return self.inner(x) * 2.0


def _run(flat, x, feeds):
  """Imports a flat graph into a function, each handle fed its variable."""

  @tf.function
  def run(v):
    input_map = {flat.input_names[0]: v}
    for name, source in feeds.items():
      input_map[f'{name}:0'] = tf.identity(source.handle)
    (out,) = tf.graph_util.import_graph_def(
      flat.graph_def, input_map=input_map, return_elements=flat.output_names
    )
    return out

  return run(x)


class FlattenTest(tf.test.TestCase):
  def test_calls_inlined_outputs_equal(self):
    model = _Model()
    cf = model.__call__.get_concrete_function()
    self.assertTrue(
      any(
        n.op in ('StatefulPartitionedCall', 'PartitionedCall')
        for n in cf.graph.as_graph_def().node
      )
    )
    flat = flatten.flat_graph(cf)
    ops = {n.op for n in flat.graph_def.node}
    self.assertNotIn('StatefulPartitionedCall', ops)
    self.assertNotIn('PartitionedCall', ops)
    self.assertEmpty(flat.graph_def.library.function)
    variables = {id(v.handle): v for v in (model.w, model.b)}
    feeds = {name: variables[id(t)] for name, t in flat.captures.items()}
    self.assertLen(feeds, 2)
    x = np.random.RandomState(1).standard_normal((3, 4)).astype('float32')
    want = np.maximum(x @ model.w.numpy() + model.b.numpy(), 0) * 2
    self.assertAllClose(want, _run(flat, x, feeds), atol=1e-6)


class VariableViewTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.model = _Model()
    flat = flatten.flat_graph(self.model.__call__.get_concrete_function())
    variables = {id(v.handle): v for v in (self.model.w, self.model.b)}
    self.flat = flat
    self.variables = {n: variables[id(t)] for n, t in flat.captures.items()}

  def test_stubs_hold_no_values_and_read_their_variables(self):
    result = variable_view.const_view(self.flat.graph_def, self.variables)
    view = result.report
    self.assertLen(view.reads, 2)
    nodes = {n.name: n for n in result.graph.node}
    for name, read in view.reads.items():
      node = nodes[name]
      self.assertEqual(node.op, 'Const')
      self.assertEqual(node.attr['value'].tensor.tensor_content, b'')
      shape = [d.size for d in node.attr['value'].tensor.tensor_shape.dim]
      self.assertEqual(shape, read.variable.shape.as_list())
      self.assertAllEqual(view.values()[name](), read.variable.numpy())
    self.assertNotIn('ReadVariableOp', {n.op for n in result.graph.node})

  def test_thaw_untouched_gives_the_graph_back(self):
    view = variable_view.const_view(self.flat.graph_def, self.variables)
    back = variable_view.thaw(view.graph, view.report)
    self.assertEqual(back.report, ())
    self.assertFalse(back.changed)
    before = {n.name: n for n in self.flat.graph_def.node}
    after = {n.name: n for n in back.graph.node}
    self.assertEqual(set(before), set(after))
    for name, node in before.items():
      self.assertEqual(node, after[name], msg=name)

  def test_thaw_turns_a_written_stub_into_a_new_variable(self):
    view = variable_view.const_view(self.flat.graph_def, self.variables)
    (kernel,) = [
      name
      for name, r in view.report.reads.items()
      if r.variable is self.model.w
    ]
    graph = graph_ir.copy_graph_def(view.graph)
    value = self.model.w.numpy()[:, :30]
    for node in graph.node:
      if node.name == kernel:
        node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value))
    back = variable_view.thaw(graph, view.report)
    (new,) = back.report
    self.assertAllEqual(value, new.value)
    self.assertIs(new.source.variable, self.model.w)
    nodes = {n.name: n for n in back.graph.node}
    self.assertEqual(nodes[kernel].op, 'ReadVariableOp')
    self.assertEqual(list(nodes[kernel].input)[:1], [new.handle])
    self.assertEqual(nodes[new.handle].op, 'Placeholder')
    self.assertEqual(
      nodes[new.handle].attr['dtype'].type, tf.resource.as_datatype_enum
    )


if __name__ == '__main__':
  tf.test.main()
