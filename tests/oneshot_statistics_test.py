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


class DepthwiseStatisticsTest(tf.test.TestCase):
  def test_per_channel_gram_of_interleaved_patches(self):
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((20, 4 * 3))  # 4 taps x 3 channels, (k, c)
    stats = statistics.DepthwiseStatistics(taps=4, channels=3)
    stats.add(rows[:7])
    stats.add(rows[7:])
    for c in range(3):
      channel = rows[:, c::3]  # tap k of channel c is column k * 3 + c
      self.assertAllClose(stats.hessian(c), channel.T @ channel)
      self.assertAllClose(stats.norms(c), np.linalg.norm(channel, axis=0))
    self.assertEqual(stats.rows, 20)


if __name__ == '__main__':
  tf.test.main()
