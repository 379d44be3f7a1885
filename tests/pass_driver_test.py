"""Tests of the pass interface: the driver, validity per graph kind, no pass
modifying its input.

Every pass sequence graph_prune runs (insertion, flattening, stripping,
shrinking) goes through `driver.run_passes`; the tests spy on it to wrap the
passes of the real sequences on a real traced model: a wrapper that corrupts
one pass's output must make the run fail naming that pass and what it ran
on, and every pass's input must serialize the same before and after it.
"""

import dataclasses
import re
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import graph_pb2

import graph_prune
from graph_prune import errors
from graph_prune.export.strip import strip
from graph_prune.passes import driver
from graph_prune.passes import graph_ir
from graph_prune.passes import inline
from graph_prune.passes import lower
from graph_prune.passes import rules
from graph_prune.passes import scan
from graph_prune.passes import validity

_REAL_RUN = driver.run_passes

INSERTION = ('forward_gradients', 'inline_calls', 'bind_weights', 'lower')
FLATTEN = ('inline_calls', 'lower')
STRIP = ('fold_masks', 'drop_unused')
SHRINK = ('const_view', 'drop_unused', 'shrink_units', 'thaw')


class _Model(tf.Module):
  """A nested tf.function call, a custom gradient (silu), a while loop."""

  def __init__(self):
    super().__init__(name='driver_model')
    rng = np.random.RandomState(0)

    def variable(name, shape):
      value = rng.standard_normal(shape) / np.sqrt(shape[0])
      return tf.Variable(value.astype('float32'), name=name)

    self.w1 = variable('w1', (6, 16))
    self.b1 = variable('b1', (16,))
    self.w2 = variable('w2', (16, 4))
    self.w3 = variable('w3', (4, 4))

  @tf.function(autograph=False)
  def _hidden(self, x):
    return tf.nn.silu(tf.matmul(x, self.w1) + self.b1)

  @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32)])
  def __call__(self, x):
    h = tf.matmul(self._hidden(x), self.w2)
    _, h = tf.while_loop(
      lambda i, h: i < 2,
      lambda i, h: (i + 1, tf.tanh(tf.matmul(h, self.w3))),
      [tf.constant(0), h],
    )
    return h


def _pruned():
  """(the model, its `PrunedModel` with fixed random masks)."""
  model = _Model()
  pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
  rng = np.random.RandomState(1)
  for mask in pruned.masks:
    value = (rng.rand(*mask.shape) < 0.5).astype(np.float32)
    if len(mask.shape) == 2:
      value[:, 0] = 0  # a zero unit for shrink
    mask.assign(value)
  return model, pruned


def _serialized(graph):
  """Bytes of a graph of any kind (the library of a FunctionGraph sorted)."""
  if isinstance(graph, graph_ir.FunctionGraph):
    return (_serialized(graph.top), _serialized(graph.library))
  if isinstance(graph, dict):
    return tuple((k, _serialized(v)) for k, v in sorted(graph.items()))
  return graph.SerializeToString(deterministic=True)


def _corrupted(graph, how):
  """A copy of `graph` with a dangling input or a duplicate node name."""
  if isinstance(graph, graph_ir.FunctionGraph):
    top = function_pb2.FunctionDef()
    top.CopyFrom(graph.top)
    nodes, missing = top.node_def, 'missing:output:0'
  else:
    top = graph_pb2.GraphDef()
    top.CopyFrom(graph)
    nodes, missing = top.node, 'missing:0'
  if how == 'dangling':
    nodes.add(name='corrupt', op='Identity', input=[missing])
  else:
    nodes.add().CopyFrom(nodes[0])
  if isinstance(graph, graph_ir.FunctionGraph):
    return graph_ir.FunctionGraph(top, graph.library)
  return top


class _Spy:
  """Stands in for `driver.run_passes`; wraps each pass of each run.

  Attributes:
    runs: (what, pass names) of each run, in order.
    unchanged: (run index, pass name, whether its input was left as it was).
    changed: pass name -> its result's `changed`, of the last run of it.
  """

  def __init__(self, corrupt=None, how='dangling'):
    self.corrupt, self.how = corrupt, how  # (run index, pass name)
    self.runs, self.unchanged, self.changed = [], [], {}

  def __call__(self, graph, passes, what, source='freezing'):
    index = len(self.runs)
    self.runs.append((what, tuple(p.name for p in passes)))
    wrapped = [driver.Pass(p.name, self._wrap(index, p)) for p in passes]
    return _REAL_RUN(graph, wrapped, what, source)

  def _wrap(self, index, p):
    def run(graph, done):
      before = _serialized(graph)
      result = p.run(graph, done)
      self.unchanged.append((index, p.name, _serialized(graph) == before))
      self.changed[p.name] = result.changed
      if self.corrupt == (index, p.name):
        return dataclasses.replace(
          result, graph=_corrupted(result.graph, self.how)
        )
      return result

    return run


def _insert(spy):
  with mock.patch.object(driver, 'run_passes', spy):
    return _pruned()


def _strip(spy, pruned, shrink):
  with mock.patch.object(driver, 'run_passes', spy):
    return strip(pruned, shrink=shrink)


class SequencesTest(tf.test.TestCase):
  """Every sequence runs through the driver; no pass modifies its input."""

  def test_insertion(self):
    spy = _Spy()
    model, pruned = _insert(spy)
    self.assertEqual([names for _, names in spy.runs], [INSERTION])
    self.assertTrue(all(same for _, _, same in spy.unchanged), spy.unchanged)
    self.assertLen(spy.unchanged, len(INSERTION))
    # The model exercises each pass: a custom gradient, a call, masks;
    # lowering computes what its input does.
    self.assertEqual(
      spy.changed,
      {
        'forward_gradients': True,
        'inline_calls': True,
        'bind_weights': True,
        'lower': False,
      },
    )
    self.assertLen(pruned.report.masked, 3)
    x = np.random.RandomState(2).standard_normal((5, 6)).astype('float32')
    self.assertAllClose(pruned(x), _numpy(model, pruned, x), atol=1e-5)

  def test_strip_and_shrink(self):
    model, pruned = _pruned()
    for shrink, expected in (
      (False, [STRIP]),
      (True, [FLATTEN, STRIP, SHRINK]),
    ):
      spy = _Spy()
      stripped = _strip(spy, pruned, shrink)
      self.assertEqual([names for _, names in spy.runs], expected)
      unchanged = [(i, name) for i, name, same in spy.unchanged if not same]
      self.assertEqual(unchanged, [])
      self.assertLen(spy.unchanged, sum(len(names) for names in expected))
      x = np.random.RandomState(2).standard_normal((5, 6)).astype('float32')
      self.assertAllClose(stripped(x), _numpy(model, pruned, x), atol=1e-5)


def _numpy(model, pruned, x):
  """The pruned model's output in NumPy: weight * mask, silu, the loop."""
  masks = {
    graph_ir.weight_of_mask(graph_ir.variable_name(m)): m.numpy()
    for m in pruned.masks
  }
  w1, w2, w3 = (
    getattr(model, n).numpy() * masks[n] for n in ('w1', 'w2', 'w3')
  )
  z = x @ w1 + model.b1.numpy()
  h = (z / (1 + np.exp(-z))) @ w2
  for _ in range(2):
    h = np.tanh(h @ w3)
  return h


class CorruptedPassTest(tf.test.TestCase, parameterized.TestCase):
  """A pass leaving an invalid graph fails naming the pass and its graph."""

  @parameterized.named_parameters(
    ('dangling', 'dangling', 'reads'),
    ('duplicate', 'duplicate', 'two nodes named'),
  )
  def test_insertion_passes(self, how, message):
    for name in INSERTION:
      spy = _Spy(corrupt=(0, name), how=how)
      with self.assertRaisesRegex(errors.GraphRewriteError, message) as e:
        _insert(spy)
      ((what, _),) = spy.runs
      self.assertIn('driver_model', what)
      self.assertStartsWith(str(e.exception), f'After pass {name!r} on {what},')

  @parameterized.named_parameters(
    ('dangling', 'dangling', 'reads'),
    ('duplicate', 'duplicate', 'two nodes named'),
  )
  def test_strip_and_shrink_passes(self, how, message):
    _, pruned = _pruned()
    for index, names in enumerate((FLATTEN, STRIP, SHRINK)):
      for name in names:
        spy = _Spy(corrupt=(index, name), how=how)
        with self.assertRaisesRegex(errors.GraphRewriteError, message) as e:
          _strip(spy, pruned, shrink=True)
        what = spy.runs[index][0]
        self.assertNotEmpty(what)
        self.assertStartsWith(
          str(e.exception), f'After pass {name!r} on {what},'
        )

  def test_a_pass_returning_no_pass_result_is_named(self):
    g = graph_pb2.GraphDef()
    passes = [driver.Pass('an_analysis', lambda g, _: ())]
    with self.assertRaisesRegex(TypeError, "'an_analysis' on the model"):
      driver.run_passes(g, passes, 'the model')


class InlineTest(tf.test.TestCase):
  def _function(self):
    @tf.function(autograph=False)
    def inner(a):
      return tf.nn.relu(a) * 2.0

    @tf.function(input_signature=[tf.TensorSpec([2, 3], tf.float32)])
    def outer(x):
      return inner(x) + 1.0

    cf = outer.get_concrete_function()
    return cf.function_def, scan.library_of(cf)

  def test_inline_call_returns_a_new_graph_and_keeps_its_input(self):
    fdef, library = self._function()
    before = fdef.SerializeToString(deterministic=True)
    (call,) = [n for n in fdef.node_def if rules.is_call(n, library)]
    callee = graph_ir.call_target(call, library)
    result = inline.inline_call(fdef, call.name, library)
    self.assertEqual(fdef.SerializeToString(deterministic=True), before)
    self.assertIsNot(result.graph, fdef)
    self.assertTrue(result.changed)
    self.assertEqual(result.report.calls, ((call.name, callee),))
    self.assertFalse(
      any(rules.is_call(n, library) for n in result.graph.node_def)
    )
    validity.check_function(result.graph, 'inlining')
    # Lowered and run, the inlined graph computes relu(x) * 2 + 1.
    lowered = lower.lower(graph_ir.FunctionGraph(result.graph, library))
    self.assertEqual(lowered.report.functions, ())
    out_name = lowered.report.flat_name(
      result.graph.ret[result.graph.signature.output_arg[0].name]
    )
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    arg = graph_ir.arg_names(result.graph)[0]

    @tf.function
    def run():
      (y,) = tf.graph_util.import_graph_def(
        lowered.graph,
        input_map={f'{arg}:0': tf.constant(x)},
        return_elements=[out_name],
      )
      return y

    self.assertAllClose(run(), np.maximum(x, 0) * 2 + 1)

  def test_inline_calls_without_calls_returns_its_input(self):
    fdef, library = self._function()
    flat = inline.inline_calls(fdef, library).graph
    again = inline.inline_calls(flat, library)
    self.assertIs(again.graph, flat)
    self.assertFalse(again.changed)
    self.assertEqual(again.report.calls, ())

  def test_inline_call_of_a_missing_node_raises(self):
    fdef, library = self._function()
    with self.assertRaisesRegex(errors.GraphRewriteError, "'nope'"):
      inline.inline_call(fdef, 'nope', library)


class ValidityTest(tf.test.TestCase, parameterized.TestCase):
  def _function(self):
    f = function_pb2.FunctionDef()
    f.signature.name = 'f'
    f.signature.input_arg.add(name='x', type=1)
    f.signature.output_arg.add(name='y', type=1)
    f.node_def.add(name='r', op='Relu', input=['x'])
    f.ret['y'] = 'r:activations:0'
    return f

  def test_valid_kinds_pass(self):
    f = self._function()
    validity.check(f, 'test')
    validity.check({'f': f}, 'test')
    validity.check(graph_ir.FunctionGraph(f, {}), 'test')
    validity.check(graph_pb2.GraphDef(), 'test')

  @parameterized.named_parameters(
    ('dangling_input', 'input', "node 'n' in function 'f' reads 'gone:z:0'"),
    ('duplicate', 'duplicate', "function 'f' has two nodes named 'r'"),
    ('dangling_return', 'ret', "returns 'gone:z:0' as 'y'"),
    ('control_return', 'control_ret', "names 'gone'"),
  )
  def test_function_errors(self, how, message):
    f = self._function()
    if how == 'input':
      f.node_def.add(name='n', op='Neg', input=['gone:z:0'])
    elif how == 'duplicate':
      f.node_def.add(name='r', op='Relu', input=['x'])
    elif how == 'ret':
      f.ret['y'] = 'gone:z:0'
    else:
      f.control_ret['c'] = 'gone'
    with self.assertRaisesRegex(errors.GraphRewriteError, re.escape(message)):
      validity.check(f, "pass 'p'")
    with self.assertRaisesRegex(errors.GraphRewriteError, "After pass 'p'"):
      validity.check({'f': f}, "pass 'p'")

  def test_library_function_filed_under_another_name(self):
    with self.assertRaisesRegex(errors.GraphRewriteError, "under the name 'g'"):
      validity.check({'g': self._function()}, 'test')

  def test_call_of_a_function_missing_from_the_library(self):
    f = self._function()
    call = f.node_def.add(name='c', op='PartitionedCall', input=['x'])
    call.attr['f'].func.name = 'absent'
    with self.assertRaisesRegex(
      errors.GraphRewriteError, "calls 'absent' .attr 'f'., which is not in"
    ):
      validity.check(graph_ir.FunctionGraph(f, {}), 'test')

  def test_errors_are_value_errors(self):
    self.assertTrue(issubclass(errors.GraphRewriteError, ValueError))

  def test_unknown_kind(self):
    with self.assertRaisesRegex(TypeError, 'not a graph kind'):
      validity.check(tf.constant(1), 'test')


if __name__ == '__main__':
  tf.test.main()
