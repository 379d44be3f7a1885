"""Calibration statistics against TF's own conv and NumPy sums."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.oneshot import statistics


class ConvPatchesTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('valid', (1, 1, 1, 1), 'VALID', (1, 1, 1, 1)),
    ('same_strided', (1, 2, 2, 1), 'SAME', (1, 1, 1, 1)),
    ('dilated', (1, 1, 1, 1), 'VALID', (1, 2, 2, 1)),
  )
  def test_patches_times_kernel_is_the_conv(self, strides, padding, dilations):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 2, 3, 5)).astype(np.float32)
    conv = tf.nn.conv2d(
      x, kernel, strides=strides, padding=padding, dilations=dilations
    )
    rows = statistics.conv_patches(x, kernel.shape, strides, padding, dilations)
    self.assertAllClose(
      tf.reshape(rows @ kernel.reshape(-1, 5), conv.shape), conv, atol=1e-5
    )


class InputStatisticsTest(tf.test.TestCase):
  def test_sums_over_batches_equal_one_pass(self):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 4, 6))
    stats = statistics.InputStatistics(6, hessian=True)
    for batch in np.split(x, 3):
      stats.add(batch)
    flat = x.reshape(-1, 6)
    self.assertEqual(stats.rows, 120)
    self.assertAllClose(stats.norms(), np.linalg.norm(flat, axis=0))
    self.assertAllClose(stats.hessian(), flat.T @ flat)

  def test_without_hessian_keeps_only_norms(self):
    stats = statistics.InputStatistics(3)
    stats.add(np.ones((2, 3)))
    self.assertIsNone(stats.hessian())
    self.assertAllClose(stats.norms(), np.sqrt([2.0, 2.0, 2.0]))

  def test_bad_rows_name_the_layer(self):
    stats = statistics.InputStatistics(3, name='dense_1/kernel')
    with self.assertRaisesRegex(ValueError, r'\(2, 4\).*dense_1/kernel.*3 in'):
      stats.add(np.ones((2, 4)))
    with self.assertRaisesRegex(ValueError, 'NaN or Inf at the input of dense'):
      stats.add(np.array([[0.0, np.nan, 1.0]]))
    self.assertEqual(stats.rows, 0)


class GroupedStatisticsTest(tf.test.TestCase):
  def test_per_channel_gram_of_interleaved_patches(self):
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((20, 4 * 3))  # 4 taps x 3 channels, (k, c)
    stats = statistics.GroupedStatistics(taps=4, group_inputs=1, groups=3)
    stats.add(rows[:7])
    stats.add(rows[7:])
    for c in range(3):
      channel = rows[:, c::3]  # tap k of channel c is column k * 3 + c
      self.assertAllClose(stats.hessian(c), channel.T @ channel)
      self.assertAllClose(stats.norms(c), np.linalg.norm(channel, axis=0))
    self.assertEqual(stats.rows, 20)

  def test_per_group_gram_of_its_own_channels(self):
    rng = np.random.default_rng(3)
    # 2 taps x 6 channels in (tap, channel) order; 3 groups of 2 channels.
    rows = rng.standard_normal((15, 2 * 6))
    stats = statistics.GroupedStatistics(taps=2, group_inputs=2, groups=3)
    stats.add(rows[:4])
    stats.add(rows[4:])
    for g in range(3):
      columns = [t * 6 + g * 2 + k for t in range(2) for k in range(2)]
      x = rows[:, columns]
      self.assertAllClose(stats.hessian(g), x.T @ x)
      d = rng.standard_normal((4, 5))
      self.assertAllClose(stats.quadratic(d, g), np.sum((x @ d) ** 2))


class TokenCountsTest(tf.test.TestCase):
  def test_counts_norms_and_quadratic_of_one_hot_rows(self):
    ids = np.array([[0, 3, 3], [4, 3, 0]])
    stats = statistics.TokenCounts(6, name='e/embeddings')
    stats.add(ids[:1])
    stats.add(ids[1:])
    one_hot = np.eye(6)[ids.reshape(-1)]
    self.assertAllEqual(stats.counts(), one_hot.sum(axis=0))
    self.assertAllClose(stats.norms(), np.linalg.norm(one_hot, axis=0))
    d = np.random.default_rng(0).standard_normal((6, 2))
    self.assertAllClose(stats.quadratic(d), np.sum((one_hot @ d) ** 2))
    self.assertEqual(stats.rows, 6)

  def test_ids_outside_the_table_name_it(self):
    stats = statistics.TokenCounts(4, name='e/embeddings')
    for bad in (np.array([0, 4]), np.array([-1]), np.array([0.5])):
      with self.assertRaisesRegex(ValueError, r'\[0, 4\) in e/embeddings'):
        stats.add(bad)
    self.assertEqual(stats.rows, 0)


if __name__ == '__main__':
  tf.test.main()
