"""Tests of masks/segment_selection against NumPy's stable argsort."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.masks import segment_selection


def _numpy_keep(segments, num_prune):
  """Per segment: prune np.argsort(|s|, stable)[:k], k clipped to [0, n-1];
  threshold = smallest surviving |s| (NaN ranks above inf, as in NumPy)."""
  keeps, thresholds = [], []
  for scores, k in zip(segments, num_prune):
    magnitude = np.abs(scores.astype(np.float32))
    k = int(np.clip(k, 0, len(scores) - 1))
    keep = np.ones(len(scores), bool)
    order = np.argsort(magnitude, kind='stable')
    keep[order[:k]] = False
    keeps.append(keep)
    thresholds.append(magnitude[order[k]])
  return np.concatenate(keeps), np.array(thresholds, np.float32)


def _random_segments(rng, count, max_size, kind):
  sizes = [int(rng.randint(1, max_size + 1)) for _ in range(count)]
  if kind == 'normal':
    return [rng.standard_normal(n).astype(np.float32) for n in sizes]
  if kind == 'ties':
    # Few distinct values, signs mixed: ties everywhere, -0.0 with 0.0.
    return [(rng.randint(-3, 4, n) * 0.5).astype(np.float32) for n in sizes]
  # Values whose top 11 bits agree (one bucket): all the work is in the
  # low digits.
  return [
    (1.0 + rng.randint(0, 1 << 20, n) * 2.0**-23).astype(np.float32)
    for n in sizes
  ]


class PruneSmallestSegmentsTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('normal', 'normal', 7, 500),
    ('ties', 'ties', 5, 300),
    ('one_bucket', 'one_bucket', 4, 2000),
    ('many_small', 'normal', 40, 12),
  )
  def test_matches_numpy_stable_argsort(self, kind, count, max_size):
    rng = np.random.RandomState(count + max_size)
    for _ in range(3):
      segments = _random_segments(rng, count, max_size, kind)
      num_prune = [int(rng.randint(0, len(s))) for s in segments]
      keep, thresholds = segment_selection.prune_smallest_segments(
        tf.constant(np.concatenate(segments)),
        [len(s) for s in segments],
        num_prune,
      )
      expected_keep, expected_thresholds = _numpy_keep(segments, num_prune)
      self.assertAllEqual(keep, expected_keep)
      self.assertAllEqual(thresholds, expected_thresholds)

  def test_exact_for_denormals_infinity_and_nan(self):
    # TF's CPU kernels flush denormals to zero in float compares; the bit
    # patterns keep 1e-45 above 0. NaN ranks above +inf, as in NumPy.
    first = np.array([1e-45, 0.0, 3e-45, -2e-45, np.inf], np.float32)
    second = np.array([np.nan, 2.0, -np.inf, 1.0], np.float32)
    keep, thresholds = segment_selection.prune_smallest_segments(
      tf.constant(np.concatenate([first, second])), [5, 4], [2, 2]
    )
    self.assertAllEqual(
      keep, [False, False, True, True, True, True, False, True, False]
    )
    # The first segment's survivors start at one ulp (-2e-45 rounds to it).
    self.assertAllEqual(
      tf.bitcast(thresholds, tf.int32),
      [1, np.array(np.inf, np.float32).view(np.int32)],
    )
    expected_keep, expected_thresholds = _numpy_keep([first, second], [2, 2])
    self.assertAllEqual(keep, expected_keep)
    self.assertAllEqual(
      tf.bitcast(thresholds, tf.int32), expected_thresholds.view(np.int32)
    )

  def test_num_prune_is_clipped_so_one_score_survives(self):
    scores = np.array([4.0, 1.0, 3.0, 2.0, 5.0], np.float32)
    keep, thresholds = segment_selection.prune_smallest_segments(
      tf.constant(scores), [3, 2], [7, -4]
    )
    # First segment: 2 of 3 pruned (k clipped to n - 1); second: none.
    self.assertAllEqual(keep, [True, False, False, True, True])
    self.assertAllEqual(thresholds, [4.0, 2.0])

  def test_in_a_function_with_tensor_counts_and_float16(self):
    rng = np.random.RandomState(3)
    segments = [rng.standard_normal(n).astype(np.float16) for n in (9, 1, 40)]

    @tf.function
    def select(flat, num_prune):
      return segment_selection.prune_smallest_segments(
        flat, [9, 1, 40], num_prune
      )

    keep, thresholds = select(
      tf.constant(np.concatenate(segments)), tf.constant([4, 0, 39])
    )
    expected_keep, expected_thresholds = _numpy_keep(segments, [4, 0, 39])
    self.assertAllEqual(keep, expected_keep)
    self.assertEqual(thresholds.dtype, tf.float16)
    self.assertAllEqual(thresholds, expected_thresholds.astype(np.float16))

  @parameterized.named_parameters(
    ('length', [1.0, 2.0, 3.0], [2], r'length sum\(sizes\) = 2'),
    ('empty_segment', [1.0, 2.0], [2, 0], 'positive lengths'),
  )
  def test_bad_sizes(self, scores, sizes, message):
    with self.assertRaisesRegex(ValueError, message):
      segment_selection.prune_smallest_segments(
        tf.constant(scores), sizes, [0] * len(sizes)
      )

  def test_float64_is_refused_with_the_alternative(self):
    with self.assertRaisesRegex(ValueError, 'selection.prune_smallest'):
      segment_selection.prune_smallest_segments(
        tf.constant([1.0, 2.0], tf.float64), [2], [1]
      )


if __name__ == '__main__':
  tf.test.main()
