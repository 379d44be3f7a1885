"""Tests of graph_prune/passes/unit_costs.py: parameters and multiply-adds.

Each count is checked against its closed form: a matrix product's k * m per
output row, a batched product's rows times k, a two-operand einsum's product
of index sizes without the batch index, and a dimension the graph leaves
open counted as 1 (with `unknown_dims` set).
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.passes import unit_costs


def _costs(fn, *specs):
  graph_def = tf.function(fn).get_concrete_function(*specs).graph.as_graph_def()
  return unit_costs.costs(graph_def)


class CostsTest(tf.test.TestCase, parameterized.TestCase):
  def test_attention_einsums(self):
    # Projection [b, s, hidden] x [hidden, heads, head_dim], then scores.
    def fn(x):
      kernel = tf.constant(np.ones((16, 4, 8), np.float32))
      q = tf.einsum('bsd,dnh->bsnh', x, kernel)
      return tf.einsum('bsnh,btnh->bnst', q, q)

    costs = _costs(fn, tf.TensorSpec([None, 6, 16]))
    self.assertEqual(
      sorted(costs.macs.values()), sorted([6 * 16 * 4 * 8, 6 * 6 * 4 * 8])
    )
    self.assertFalse(costs.unknown_dims)
    self.assertEqual(costs.params, 16 * 4 * 8)

  def test_batch_matmul(self):
    kernel = tf.constant(np.ones((16, 12), np.float32))

    def fn(x, y):
      return tf.matmul(x, kernel), tf.matmul(y, y, adjoint_a=True)

    costs = _costs(
      fn, tf.TensorSpec([None, 5, 16]), tf.TensorSpec([None, 3, 7, 9])
    )
    # [5, 16] x [16, 12] per example; [3, 9, 7] x [3, 7, 9] (adjoint).
    self.assertEqual(
      sorted(costs.macs.values()), sorted([5 * 16 * 12, 3 * 9 * 9 * 7])
    )

  def test_contracted_size_from_the_kernel(self):
    # Keras' Dense on 3-D inputs (Tensordot): a reshape to a computed shape
    # leaves the data's last dimension open; the kernel knows it.
    def fn(x):
      kernel = tf.constant(np.ones((16, 12), np.float32))
      flat = tf.reshape(x, tf.stack([-1, tf.shape(x)[-1]]))
      return tf.matmul(flat, kernel)

    costs = _costs(fn, tf.TensorSpec([None, None, 16]))
    self.assertEqual(list(costs.macs.values()), [16 * 12])

  def test_unknown_sequence_counts_one(self):
    kernel = tf.constant(np.ones((16, 4, 8), np.float32))

    def fn(x):
      return tf.einsum('bsd,dnh->bsnh', x, kernel)

    costs = _costs(fn, tf.TensorSpec([None, None, 16]))
    self.assertEqual(list(costs.macs.values()), [16 * 4 * 8])
    self.assertTrue(costs.unknown_dims)


if __name__ == '__main__':
  tf.test.main()
