"""Tests of the graph pass on raw TensorFlow code (no Keras).

NumPy references where the computation is small enough to write by hand;
the generic masked-reference check (see rewrite_keras3_test) elsewhere.
"""

import re

import numpy as np
import rewrite_keras3_test as common  # shared checks (not a test here)
import tensorflow as tf

from graph_prune import errors
from graph_prune import passes as rewrite
from graph_prune.model import tracing


class Raw(tf.Module):
  """A tf.Module using raw variables: matmul (weight on the left), conv2d."""

  def __init__(self):
    super().__init__()
    rs = np.random.RandomState(3)
    self.filters = tf.Variable(
      rs.randn(2, 2, 1, 3).astype(np.float32), name='filters'
    )
    self.w = tf.Variable(rs.randn(4, 27).astype(np.float32), name='w')
    self.b = tf.Variable(rs.randn(4).astype(np.float32), name='b')
    self.steps = tf.Variable(0, name='steps')  # integer: skipped

  @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1])])
  def __call__(self, x):
    self.steps.assign_add(1)
    h = tf.nn.relu(tf.nn.conv2d(x, self.filters, 1, 'VALID'))
    h = tf.reshape(h, [-1, 27])
    return tf.transpose(tf.matmul(self.w, h, transpose_b=True)) + self.b


def numpy_raw(x, filters, w, b):
  n = x.shape[0]
  h = np.zeros([n, 3, 3, 3], np.float32)
  for i in range(3):
    for j in range(3):
      patch = x[:, i : i + 2, j : j + 2, :]
      h[:, i, j, :] = np.einsum('nabc,abcd->nd', patch, filters)
  h = np.maximum(h, 0).reshape(n, 27)
  return (w @ h.T).T + b


class Nested(tf.Module):
  """tf.cond + a nested tf.function + a while loop reading weights."""

  def __init__(self):
    super().__init__()
    rs = np.random.RandomState(4)
    self.k1 = tf.Variable(rs.randn(3, 3).astype(np.float32), name='k1')
    self.k2 = tf.Variable(rs.randn(3, 3).astype(np.float32), name='k2')
    self.k3 = tf.Variable(rs.randn(3, 3).astype(np.float32), name='k3')
    self.scale = tf.Variable(1.5, name='scale')

  @tf.function
  def inner(self, x):
    return tf.matmul(x, self.k2) * self.scale

  @tf.function(input_signature=[tf.TensorSpec([None, 3])])
  def __call__(self, x):
    y = tf.cond(
      tf.reduce_sum(x) > 0.0,
      lambda: tf.matmul(x, self.k1),
      lambda: tf.matmul(x, self.k1) * 2.0,
    )
    y = self.inner(y)
    y = tf.while_loop(
      lambda i, y: i < 3,
      lambda i, y: (i + 1, tf.tanh(tf.matmul(y, self.k3))),
      (tf.constant(0), y),
    )[1]
    return y


class Embed(tf.Module):
  """Embedding lookup on the variable itself (ResourceGather)."""

  def __init__(self):
    super().__init__()
    rs = np.random.RandomState(5)
    self.table = tf.Variable(rs.randn(6, 3).astype(np.float32), name='table')

  @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int32)])
  def __call__(self, ids):
    return tf.nn.embedding_lookup(self.table, ids)


class RawTfTest(common.PassTestCase):
  def test_raw_module_matches_numpy(self):
    module = Raw()
    traced, scan, masks, fn, report = self.prune(module.__call__)
    self.assertEqual([w.name for w in scan.candidates], ['filters', 'w'])
    self.assertEqual(
      dict(scan.skipped),
      {'b': 'rank 1 < 2', 'steps': 'dtype int32 is not floating'},
    )
    x = common.random_inputs(traced.input_signature)[0]
    mf, mw = masks['filters'].numpy(), masks['w'].numpy()
    want = numpy_raw(
      x.numpy(),
      module.filters.numpy() * mf,
      module.w.numpy() * mw,
      module.b.numpy(),
    )
    self.assertAllClose(want, fn(x), atol=1e-5)
    self.assertEqual(
      {m.name: m.shape for m in report.masked},
      {'filters': (2, 2, 1, 3), 'w': (4, 27)},
    )
    inputs = self.check_against_reference(traced, scan, masks, fn)
    self.check_saved_model(traced, masks, fn, inputs)

  def test_cond_nested_function_and_while_loop(self):
    module = Nested()
    traced, scan, masks, fn, _ = self.prune(module.__call__)
    self.assertEqual([w.name for w in scan.candidates], ['k1', 'k2', 'k3'])
    paths = {w.name: [p for _, p in w.consumers] for w in scan.candidates}
    self.assertTrue(all('::' in p for p in paths['k1']))  # in both branches
    self.assertLen(paths['k1'], 2)
    self.assertTrue(any('while_body' in p for p in paths['k3']))
    inputs = self.check_against_reference(traced, scan, masks, fn)
    x = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, 0.1]], np.float32)
    k1, k2, k3 = (
      module.k1.numpy() * masks['k1'].numpy(),
      module.k2.numpy() * masks['k2'].numpy(),
      module.k3.numpy() * masks['k3'].numpy(),
    )
    y = (x @ k1) * (1.0 if x.sum() > 0 else 2.0)
    y = (y @ k2) * 1.5
    for _ in range(3):
      y = np.tanh(y @ k3)
    self.assertAllClose(y, fn(tf.constant(x)), atol=1e-5)
    self.check_saved_model(traced, masks, fn, inputs)

  def test_resource_gather_embedding(self):
    module = Embed()
    traced, scan, masks, fn, _ = self.prune(module.__call__)
    self.assertEqual(scan.candidates[0].consumers[0][0], 'ResourceGather')
    ids = tf.constant([[0, 5], [2, 2]])
    table = module.table.numpy() * masks['table'].numpy()
    self.assertAllClose(table[ids.numpy()], fn(ids))
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(fn(ids) ** 2)
    grad = tf.convert_to_tensor(tape.gradient(loss, module.table))
    want = np.zeros_like(table)
    np.add.at(want, ids.numpy(), 2 * table[ids.numpy()])
    self.assertAllClose(want * masks['table'].numpy(), grad)

  def test_concrete_function_and_plain_callable(self):
    module = Raw()
    for graph_fn, signature in [
      (module.__call__.get_concrete_function(), None),
      (lambda x: module(x), [tf.TensorSpec([None, 4, 4, 1])]),
    ]:
      traced, scan, masks, fn, _ = self.prune(graph_fn, signature)
      self.check_against_reference(traced, scan, masks, fn)

  def test_weight_read_in_several_places_gets_one_mask(self):
    w = tf.Variable(np.eye(3, dtype=np.float32) + 1.0, name='shared')

    @tf.function(input_signature=[tf.TensorSpec([None, 3])])
    def f(x):
      return tf.matmul(tf.matmul(x, w), w) + tf.reduce_sum(w)

    traced, scan, masks, fn, report = self.prune(f)
    self.assertLen(scan.candidates, 1)
    self.assertLen(report.masked[0].consumers, 2)
    m = masks['shared'].numpy()
    x = np.ones([1, 3], np.float32)
    wm = w.numpy() * m
    self.assertAllClose(x @ wm @ wm + wm.sum(), fn(tf.constant(x)))

  def test_skip_reasons_and_do_not_prune(self):
    written = tf.Variable(tf.ones([3, 3]), name='written')
    unused = tf.Variable(tf.ones([3, 3]), name='elementwise')
    kept = tf.Variable(tf.ones([3, 2]), name='dense/kernel')
    frozen = tf.Variable(tf.ones([3, 2]), name='frozen/kernel', trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, 3])])
    def f(x):
      written.assign_add(tf.ones([3, 3]))
      y = tf.matmul(x, written) * tf.reduce_sum(unused)
      return tf.matmul(y, kept) + tf.matmul(x, frozen)

    traced = tracing.trace(f)
    scan = rewrite.find_weights(traced)
    self.assertEqual([w.name for w in scan.candidates], ['dense/kernel'])
    reasons = dict(scan.skipped)
    self.assertStartsWith(reasons['written'], 'used by AssignAddVariableOp')
    self.assertStartsWith(reasons['elementwise'], 'not read by a weight')
    self.assertEqual(reasons['frozen/kernel'], 'not trainable')
    scan = rewrite.find_weights(traced, do_not_prune=[re.compile('dense')])
    self.assertEmpty(scan.candidates)
    self.assertIn(
      "do_not_prune pattern 'dense'", dict(scan.skipped)['dense/kernel']
    )
    with self.assertRaisesRegex(
      errors.NoPrunableWeightsError, 'dense/kernel: excluded'
    ):
      rewrite.require_candidates(scan, 'f')
    # The written variable is read raw, after its update, with gradients.
    fn = rewrite.insert_masks(
      traced, common.masks_for(rewrite.find_weights(traced))
    ).graph
    x = tf.ones([1, 3])
    with tf.GradientTape() as tape:
      loss = common.loss_of(fn(x))
    grads = tape.gradient(loss, [written, kept, unused])
    self.assertTrue(all(g is not None for g in grads))

  def test_masks_keyed_by_variable_ref_and_scan_reuse(self):
    module = Raw()
    traced = tracing.trace(module.__call__)
    scan = rewrite.find_weights(traced, do_not_prune=['^filters$'])
    mask = tf.Variable(tf.zeros([4, 27]), trainable=False)
    result = rewrite.insert_masks(
      traced, {module.w.ref(): mask}, scan_result=scan
    )
    fn, report = result.graph, result.report
    self.assertEqual([m.name for m in report.masked], ['w'])
    self.assertIn(
      "do_not_prune pattern '^filters$'", dict(report.skipped)['filters']
    )
    self.assertIn('b', [s.name for s in report.skipped])
    x = tf.ones([1, 4, 4, 1])
    self.assertAllClose(module.b.numpy()[None], fn(x))
    with self.assertRaisesRegex(errors.MaskError, 'not a variable captured'):
      rewrite.insert_masks(traced, {tf.Variable(1.0).ref(): mask})

  def test_keras3_variable_ref_keys(self):
    import keras  # pylint: disable=g-import-not-at-top

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    traced = tracing.trace(model)
    kernel = model.layers[0].kernel
    report = rewrite.insert_masks(
      traced, {kernel.value.ref(): tf.Variable(tf.ones([3, 2]))}
    ).report
    self.assertEqual([m.name for m in report.masked], [kernel.path])

  def test_duplicate_variable_names_are_made_unique(self):
    a = tf.Variable(tf.ones([2, 2]))
    b = tf.Variable(tf.ones([2, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None, 2])])
    def f(x):
      return tf.matmul(tf.matmul(x, a), b)

    scan = rewrite.find_weights(tracing.trace(f))
    self.assertEqual(
      [w.name for w in scan.candidates], ['Variable', 'Variable_1']
    )

  def test_mask_errors(self):
    module = Raw()
    traced = tracing.trace(module.__call__)
    with self.assertRaisesRegex(errors.MaskError, "'b' is not a prunable"):
      rewrite.insert_masks(traced, {'b': tf.Variable(tf.ones([4]))})
    with self.assertRaisesRegex(errors.MaskError, 'shape'):
      rewrite.insert_masks(traced, {'w': tf.Variable(tf.ones([4, 2]))})
    with self.assertRaisesRegex(errors.MaskError, 'dtype'):
      rewrite.insert_masks(
        traced, {'w': tf.Variable(tf.ones([4, 27], tf.float64))}
      )

  def test_input_not_mutated_and_two_prunings_do_not_collide(self):
    module = Nested()
    traced = tracing.trace(module.__call__)
    before = traced.concrete_function.function_def.SerializeToString(
      deterministic=True
    )
    library_before = (
      traced.concrete_function.graph.as_graph_def().library.SerializeToString(
        deterministic=True
      )
    )
    scan = rewrite.find_weights(traced)
    result1 = rewrite.insert_masks(traced, common.masks_for(scan, seed=1))
    result2 = rewrite.insert_masks(traced, common.masks_for(scan, seed=2))
    fn1, report1 = result1.graph, result1.report
    fn2, report2 = result2.graph, result2.report
    self.assertEqual(
      before,
      traced.concrete_function.function_def.SerializeToString(
        deterministic=True
      ),
    )
    self.assertEqual(
      library_before,
      traced.concrete_function.graph.as_graph_def().library.SerializeToString(
        deterministic=True
      ),
    )
    names1 = {new for _, new in report1.functions}
    names2 = {new for _, new in report2.functions}
    self.assertNotEmpty(names1)
    self.assertEmpty(names1 & names2)
    x = tf.constant([[1.0, 2.0, 3.0]])
    self.assertNotAllClose(fn1(x), fn2(x))
    self.assertAllClose(traced.concrete_function(x), module(x))

  def test_masked_weight_node_names(self):
    module = Raw()
    traced, _, _, fn, _ = self.prune(module.__call__)
    graph = fn.get_concrete_function().graph
    names = {op.name for op in graph.get_operations()}
    self.assertIn('filters/masked_weight', names)
    self.assertIn('w/masked_weight', names)

  def test_switch_case_branches(self):
    ws = [
      tf.Variable(tf.random.normal([3, 3], seed=i), name=f'c{i}')
      for i in range(2)
    ]

    @tf.function(
      input_signature=[tf.TensorSpec([None, 3]), tf.TensorSpec([], tf.int32)]
    )
    def f(x, i):
      return tf.switch_case(
        i, [lambda: tf.matmul(x, ws[0]), lambda: tf.matmul(x, ws[1])]
      )

    traced, scan, masks, fn, report = self.prune(f)
    self.assertEqual([w.name for w in scan.candidates], ['c0', 'c1'])
    self.assertNotEmpty(report.functions)
    x = tf.ones([2, 3])
    for i in range(2):
      want = x.numpy() @ (ws[i].numpy() * masks[f'c{i}'].numpy())
      self.assertAllClose(want, fn(x, tf.constant(i)), atol=1e-5)

  def test_rewritten_loop_body_takes_values_not_handles(self):
    module = Nested()
    traced, _, _, fn, report = self.prune(module.__call__)
    bodies = {new for old, new in report.functions if 'while_body' in old}
    self.assertLen(bodies, 1)
    library = {
      f.signature.name: f
      for f in fn.get_concrete_function().graph.as_graph_def().library.function
    }
    body = library[bodies.pop()]
    self.assertNotIn(
      tf.resource.as_datatype_enum, [a.type for a in body.signature.input_arg]
    )
    self.assertNotIn('ReadVariableOp', [n.op for n in body.node_def])
    top = fn.get_concrete_function().graph.as_graph_def()
    self.assertEmpty(
      [
        n.name
        for n in top.node
        if n.op in ('PartitionedCall', 'StatefulPartitionedCall')
        and n.name.startswith('pruned')
      ]
    )

  def test_inlined_call_keeps_side_effects_and_control_order(self):
    w = tf.Variable(tf.ones([2, 2]) * 2.0, name='kernel')
    calls = tf.Variable(0, name='calls')
    log = tf.Variable(0.0, name='log')

    @tf.function
    def inner(x):
      calls.assign_add(1)
      return tf.matmul(x, w)

    @tf.function(input_signature=[tf.TensorSpec([None, 2])])
    def f(x):
      log.assign(1.0)
      with tf.control_dependencies([log.assign_add(1.0)]):
        y = inner(x)
      with tf.control_dependencies([y]):
        return y + log.read_value()

    traced, scan, masks, fn, _ = self.prune(f)
    self.assertEqual([c.name for c in scan.candidates], ['kernel'])
    x = tf.ones([1, 2])
    y = fn(x).numpy()
    self.assertEqual(calls.numpy(), 1)
    want = x.numpy() @ (w.numpy() * masks['kernel'].numpy()) + 2.0
    self.assertAllClose(want, y)
    graph = fn.get_concrete_function().graph.as_graph_def()
    self.assertEmpty([n.name for n in graph.node if 'PartitionedCall' in n.op])


if __name__ == '__main__':
  tf.test.main()
