"""Tests of graph_prune.passes.scan: weights cut before use, and the warning.

A weight read through Split/SplitV/Unpack/StridedSlice/Slice before the
weight-consuming ops is prunable; masked, the pieces are cut from
`weight * mask` (checked against NumPy). A weight that looks prunable but is
left dense is listed in `report.warnings` and logged as a warning.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune.passes import scan

SPEC = tf.TensorSpec([None, 4], tf.float32)
END = tf.constant(10**6, tf.int64)


def _split(x, w):
  a, b = tf.split(w, 2, axis=1)
  return tf.matmul(x, a) - tf.matmul(x, b)


def _split_v(x, w):
  a, b = tf.split(w, [2, 4], axis=1)
  return tf.concat([tf.matmul(x, a), tf.matmul(x, b)], axis=1)


def _unstack(x, w):
  pieces = tf.unstack(tf.reshape(w, [2, 4, 3]))
  return tf.matmul(x, pieces[0]) + tf.matmul(x, pieces[1])


def _strided_slice(x, w):
  return tf.matmul(x, w[:, :3]) * tf.matmul(x, w[:, 3:])


def _slice(x, w):
  return tf.matmul(x, tf.slice(w, [0, 1], [4, 3]))


class SplitKernelTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('split', _split, 2),
    ('split_v', _split_v, 2),
    ('unstack', _unstack, 2),
    ('strided_slice', _strided_slice, 2),
    ('slice', _slice, 1),
  )
  def test_weight_cut_before_matmul_is_masked_whole(self, body, consumers):
    rs = np.random.RandomState(0)
    w = tf.Variable(rs.randn(4, 6).astype(np.float32), name='cut/w')
    fn = tf.function(lambda x: body(x, w), input_signature=[SPEC])
    pruned = graph_prune.apply_pruning(fn, 'target_sparsity=0.5')
    self.assertEqual(pruned.weight_names, ['cut/w'])
    (masked,) = pruned.report.masked
    self.assertLen(masked.consumers, consumers)
    self.assertEqual({op for op, _ in masked.consumers}, {'MatMul'})
    self.assertEqual(pruned.report.warnings, ())
    pruned.mask_update(END)
    mask = pruned.masks[0].numpy()
    self.assertEqual(mask.sum(), 12)
    x = rs.randn(3, 4).astype(np.float32)
    expected = body(tf.constant(x), tf.constant(w.numpy() * mask))
    self.assertAllClose(pruned(tf.constant(x)), expected, atol=1e-6)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(pruned(tf.constant(x)))
    grad = tape.gradient(loss, w).numpy()
    self.assertAllEqual(grad[mask == 0], np.zeros(int((mask == 0).sum())))


class LeftDenseWarningTest(tf.test.TestCase, parameterized.TestCase):
  def test_weight_read_by_elementwise_op_is_warned_of(self):
    w = tf.Variable(tf.ones([4, 2]), name='used/w')
    v = tf.Variable(tf.ones([4, 4]), name='odd/v')
    b = tf.Variable(tf.zeros([2]), name='used/b')
    fn = tf.function(
      lambda x: tf.matmul(x * tf.reduce_sum(v, 0), w) + b,
      input_signature=[SPEC],
    )
    with self.assertLogs(level='WARNING') as logs:
      pruned = graph_prune.apply_pruning(fn, 'target_sparsity=0.5')
    self.assertEqual(pruned.weight_names, ['used/w'])
    (warned,) = pruned.report.warnings
    self.assertEqual(warned[0], 'odd/v')
    self.assertStartsWith(warned[1], 'not read by a weight-consuming op')
    text = '\n'.join(logs.output)
    self.assertIn('odd/v', text)
    self.assertIn('stays dense', text)
    self.assertNotIn('used/b', text)  # a bias skip is not warned of

  @parameterized.named_parameters(
    ('read_by_sum', 'not read by a weight-consuming op (read by: Sum)', True),
    (
      'read_by_nothing',
      'not read by a weight-consuming op (read by: nothing)',
      True,
    ),
    ('written', "used by AssignAddVariableOp at 'x', which needs it", True),
    (
      'rank_2_bias',
      'not read by a weight-consuming op (read by: AddV2)',
      False,
    ),
    (
      'bias_and_mul',
      'not read by a weight-consuming op (read by: AddV2, Mul)',
      False,
    ),
    ('rank_1', 'rank 1 < 2', False),
    ('not_trainable', 'not trainable', False),
    ('excluded', "excluded by do_not_prune pattern 'x'", False),
  )
  def test_left_dense_classifies_reasons(self, reason, warned):
    self.assertEqual(scan.left_dense(scan.Skipped('a', reason)), warned)

  def test_rank_2_bias_of_attention_is_not_warned_of(self):
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2)
    x = keras.Input((3, 4))
    model = keras.Model(x, layer(x, x))
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    self.assertEqual(pruned.report.warnings, ())
    self.assertLen(pruned.weights, 4)  # query, key, value, output kernels


if __name__ == '__main__':
  tf.test.main()
