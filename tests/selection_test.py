"""Tests of graph_prune.masks.selection against NumPy reference computations."""

import os
from unittest import mock

from absl.testing import parameterized
import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import tensorflow as tf

from graph_prune.masks import selection

_BFLOAT16 = tf.bfloat16.as_numpy_dtype
_TINY = np.float32(np.finfo(np.float32).tiny)


# NumPy references.


def reference_prune(scores, num_prune):
  """The pruned set is the first num_prune of a stable argsort of |scores|."""
  magnitudes = np.abs(np.asarray(scores).astype(np.float64))
  order = np.argsort(magnitudes, kind='stable')
  keep = np.ones(magnitudes.size, dtype=bool)
  keep[order[:num_prune]] = False
  threshold = np.partition(magnitudes, num_prune)[num_prune]
  return keep, threshold


def reference_histogram(scores, sparsity, nbins):
  """contrib's histogram method, written out as in selection's docstring."""
  x = np.abs(np.asarray(scores, dtype=np.float32))
  n, max_value = x.size, x.max()
  if max_value < _TINY:  # TF flushes a denormal maximum to zero.
    j = 0
  else:
    step = np.float64(max_value) / nbins
    bins = np.minimum((x.astype(np.float64) / step).astype(np.int64), nbins - 1)
    cdf = np.cumsum(np.bincount(bins, minlength=nbins))
    norm_cdf = cdf.astype(np.float32) / np.float32(n)
    j = int(np.sum(norm_cdf < np.float32(sparsity)))
  threshold = np.float32(j) / np.float32(nbins) * max_value
  if j == 0:
    keep = np.ones(n, dtype=bool)
  else:
    keep = (x > threshold) | (x == max_value)
  return keep, threshold


def tf_histogram_j(scores, sparsity, nbins):
  """contrib's literal computation of j with tf.histogram_fixed_width."""
  x = tf.abs(tf.convert_to_tensor(scores, tf.float32))
  histogram = tf.histogram_fixed_width(x, [0.0, tf.reduce_max(x)], nbins=nbins)
  cdf = tf.cast(tf.cumsum(histogram), tf.float32)
  norm_cdf = cdf / tf.cast(tf.size(x), tf.float32)
  return int(tf.reduce_sum(tf.cast(norm_cdf < sparsity, tf.int32)))


def random_scores(rng, n, kind, dtype=np.float32):
  """Non-negative test vectors of a few shapes of distribution."""
  if kind == 'normal':
    x = np.abs(rng.standard_normal(n))
  elif kind == 'ties':  # Integers in a small range: ties everywhere.
    x = rng.integers(0, 5, n).astype(np.float64)
  elif kind == 'constant':
    x = np.full(n, 3.0)
  elif kind == 'zeros':
    x = np.zeros(n)
  elif kind == 'denormal':  # Denormals and zeros, which TF's CPU flushes.
    tiniest = np.float64(np.finfo(np.float32).smallest_subnormal)
    x = rng.integers(0, 50, n) * tiniest
  elif kind == 'huge':  # Up to float32 max, and infinities.
    x = np.minimum(
      np.abs(rng.standard_normal(n)) * 1e38, np.finfo(np.float32).max
    )
    x[rng.random(n) < 0.05] = np.inf
  else:
    raise ValueError(kind)
  return x.astype(dtype)


def forced_path(path):
  """Patches selection's size thresholds so that any length takes `path`.

  'small': every score is a candidate; 'bucket': the exact histogram brackets
  the cut; 'sampled': a strided sample of 64 scores does (and often misses, so
  the fallback runs too).
  """
  settings = {
    'small': dict(_SMALL_SIZE=2**40),
    'bucket': dict(_SMALL_SIZE=0, _SAMPLED_SIZE=2**40),
    'sampled': dict(_SMALL_SIZE=0, _SAMPLED_SIZE=0, _SAMPLE_SIZE=64),
  }[path]
  return mock.patch.multiple(selection, **settings)


def num_prune_cases(n):
  return sorted({0, n // 3, (9 * n) // 10, n - 1})


class PruneSmallestTest(tf.test.TestCase, parameterized.TestCase):
  def assert_prunes_like_numpy(self, scores, num_prune, keep, threshold):
    expected_keep, expected_threshold = reference_prune(scores, num_prune)
    keep = keep.numpy()
    self.assertEqual(keep.dtype, bool)
    self.assertEqual(int(np.sum(~keep)), num_prune)
    np.testing.assert_array_equal(keep, expected_keep)
    threshold = np.float64(threshold.numpy())
    if np.isnan(expected_threshold):
      self.assertTrue(np.isnan(threshold))
    else:
      self.assertEqual(threshold, expected_threshold)

  @parameterized.named_parameters(
    (f'{kind}_{n}', n, kind)
    for n in (1, 2, 7, 100, 1001, 65536, 65537, 200003)
    for kind in ('normal', 'ties', 'constant', 'zeros', 'denormal', 'huge')
  )
  def test_matches_numpy(self, n, kind):
    scores = random_scores(np.random.default_rng(n), n, kind)
    for num_prune in num_prune_cases(n):
      keep, threshold = selection.prune_smallest(scores, num_prune)
      self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  @parameterized.named_parameters(
    (f'{path}_{kind}_{n}', path, kind, n)
    for path in ('small', 'bucket', 'sampled')
    for kind in ('normal', 'ties', 'huge')
    for n in (1, 2, 7, 100, 4099)
  )
  def test_every_path_matches_numpy(self, path, kind, n):
    scores = random_scores(np.random.default_rng(n), n, kind)
    with forced_path(path):
      for num_prune in num_prune_cases(n):
        keep, threshold = selection.prune_smallest(scores, num_prune)
        self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  @parameterized.named_parameters(('ties', 'ties'), ('normal', 'normal'))
  def test_million_scores(self, kind):
    scores = random_scores(np.random.default_rng(7), 10**6, kind)
    for num_prune in (0, 123457, 900000, 10**6 - 1):
      keep, threshold = selection.prune_smallest(scores, num_prune)
      self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  @parameterized.named_parameters(
    (f'{np.dtype(dtype).name}_{kind}_{n}', dtype, kind, n)
    for dtype in (np.float16, _BFLOAT16, np.float32, np.float64)
    for kind in ('normal', 'ties', 'denormal')
    for n in (5, 70001)
  )
  def test_dtypes(self, dtype, kind, n):
    scores = random_scores(np.random.default_rng(3), n, kind, dtype)
    for num_prune in num_prune_cases(n):
      keep, threshold = selection.prune_smallest(tf.constant(scores), num_prune)
      self.assertEqual(threshold.dtype, tf.as_dtype(dtype))
      self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  @parameterized.named_parameters(('small', 1000), ('sampled', 100003))
  def test_tf_function_with_tensor_num_prune(self, n):
    scores = random_scores(np.random.default_rng(5), n, 'ties')
    prune = tf.function(selection.prune_smallest)
    for num_prune in num_prune_cases(n):
      keep, threshold = prune(tf.constant(scores), tf.constant(num_prune))
      self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)
    self.assertEqual(prune.experimental_get_tracing_count(), 1)

  @parameterized.named_parameters(('small', 10), ('sampled', 100003))
  def test_unknown_length(self, n):
    prune = tf.function(
      selection.prune_smallest,
      input_signature=[
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([], tf.int32),
      ],
    )
    scores = random_scores(np.random.default_rng(6), n, 'ties')
    for num_prune in num_prune_cases(n):
      keep, threshold = prune(scores, num_prune)
      self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  def test_saved_model_round_trip(self):
    module = tf.Module()
    module.prune = tf.function(
      selection.prune_smallest,
      input_signature=[
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([], tf.int32),
      ],
    )
    path = os.path.join(self.get_temp_dir(), 'prune')
    tf.saved_model.save(module, path)
    loaded = tf.saved_model.load(path)
    scores = random_scores(np.random.default_rng(8), 70001, 'ties')
    keep, threshold = loaded.prune(scores, 50000)
    self.assert_prunes_like_numpy(scores, 50000, keep, threshold)

  def test_contrib_linspace_keeps_five(self):
    scores = np.linspace(1, 100, 100).astype(np.float32)
    keep, threshold = selection.prune_smallest(scores, 95)
    np.testing.assert_array_equal(
      np.flatnonzero(keep.numpy()), [95, 96, 97, 98, 99]
    )
    self.assertEqual(threshold.numpy(), 96.0)

  def test_contrib_equal_scores_prunes_exactly_half(self):
    scores = np.full(100, 0.5, np.float32)
    keep, threshold = selection.prune_smallest(scores, 50)
    np.testing.assert_array_equal(keep.numpy(), np.arange(100) >= 50)
    self.assertEqual(threshold.numpy(), 0.5)

  def test_nothing_pruned_returns_min(self):
    keep, threshold = selection.prune_smallest([3.0, 1.0, 2.0], 0)
    self.assertAllEqual(keep, [True, True, True])
    self.assertEqual(threshold.numpy(), 1.0)

  def test_docstring_example(self):
    keep, threshold = selection.prune_smallest([3.0, 1.0, 2.0, 1.0], 2)
    self.assertAllEqual(keep, [True, False, True, False])
    self.assertEqual(threshold.numpy(), 2.0)

  @parameterized.named_parameters(('small', 1000), ('sampled', 200003))
  def test_sign_bit_is_ignored(self, n):
    rng = np.random.default_rng(9)
    signed = rng.standard_normal(n).astype(np.float32)
    zeros = np.where(rng.random(n) < 0.5, -0.0, 0.0).astype(np.float32)
    zeros[rng.random(n) < 0.1] = 1.0
    for scores in (signed, zeros):
      for num_prune in num_prune_cases(n):
        keep, threshold = selection.prune_smallest(scores, num_prune)
        self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  @parameterized.named_parameters(
    (f'{path}_{kind}_{n}', path, kind, n)
    for path in ('small', 'bucket', 'sampled')
    for kind in ('normal', 'ties', 'huge')
    for n in (7, 100, 4099)
  )
  def test_sign_bit_is_ignored_on_every_path(self, path, kind, n):
    # The sampled path clears sign bits inside its fused passes, and its keep
    # pass also handles pruned ties of either sign.
    rng = np.random.default_rng(n)
    scores = random_scores(rng, n, kind)
    scores = np.where(rng.random(n) < 0.5, -scores, scores).astype(np.float32)
    with forced_path(path):
      for num_prune in num_prune_cases(n):
        keep, threshold = selection.prune_smallest(scores, num_prune)
        self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  def test_nan_ranks_above_infinity(self):
    scores = np.array([np.nan, 1.0, np.inf, 0.0, np.nan], np.float32)
    for num_prune in range(5):
      keep, threshold = selection.prune_smallest(scores, num_prune)
      self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  def test_fallback_when_sample_misleads(self):
    # Every score the strided sample reads is huge, so the sampled bracket
    # misses and the exact histogram must take over.
    n = 3 * 2**20 + 5
    stride = (n // selection._SAMPLE_SIZE) // 2 * 2 + 1
    rng = np.random.default_rng(10)
    scores = rng.random(n).astype(np.float32)
    scores[::stride] = 1e6 + rng.random(scores[::stride].size)
    num_prune = n // 2
    bits = tf.bitcast(tf.constant(scores), tf.int32)
    lo, _ = selection._sample_bracket(bits, num_prune)
    kth = np.partition(scores, num_prune)[num_prune]
    self.assertLess(kth, tf.bitcast(lo, tf.float32).numpy())  # Really misses.
    keep, threshold = selection.prune_smallest(scores, num_prune)
    self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  @hypothesis.settings(max_examples=60, deadline=None)
  @hypothesis.given(
    path=st.sampled_from(['small', 'bucket', 'sampled']),
    scores=hnp.arrays(
      np.float32,
      st.integers(1, 300),
      elements=st.sampled_from([0.0, -0.0, 1e-45, 1.0, 1.5, 2.0, 3e38, np.inf])
      | st.floats(0, 10, width=32),
    ),
    fraction=st.floats(0, 1),
  )
  def test_property(self, path, scores, fraction):
    num_prune = min(int(fraction * scores.size), scores.size - 1)
    with forced_path(path):
      keep, threshold = selection.prune_smallest(scores, num_prune)
    self.assert_prunes_like_numpy(scores, num_prune, keep, threshold)

  @parameterized.named_parameters(
    ('negative', 5, -1), ('all', 5, 5), ('too_many', 5, 9)
  )
  def test_static_num_prune_out_of_range(self, n, num_prune):
    with self.assertRaisesRegex(ValueError, r'num_prune must be in \[0, 4\]'):
      selection.prune_smallest(np.ones(n, np.float32), num_prune)

  @parameterized.named_parameters(
    ('rank2', np.ones([2, 2], np.float32), 'must be 1-D'),
    ('empty', np.ones([0], np.float32), 'must not be empty'),
    ('ints', np.ones([3], np.int32), 'must be a float tensor'),
  )
  def test_bad_scores(self, scores, message):
    with self.assertRaisesRegex(ValueError, message):
      selection.prune_smallest(scores, 0)


class HistogramTest(tf.test.TestCase, parameterized.TestCase):
  def assert_histogram_like_numpy(self, scores, sparsity, nbins):
    expected_keep, expected_threshold = reference_histogram(
      scores, sparsity, nbins
    )
    keep, threshold = selection.histogram_prune(scores, sparsity, nbins)
    self.assertEqual(threshold.dtype, tf.float32)
    self.assertEqual(threshold.numpy(), expected_threshold)
    np.testing.assert_array_equal(keep.numpy(), expected_keep)
    self.assertTrue(keep.numpy().any())

  @parameterized.named_parameters(
    (f'{kind}_{n}_{nbins}', n, kind, nbins)
    for n in (1, 10, 1000, 100003)
    for kind in ('normal', 'ties', 'constant', 'zeros')
    for nbins in (1, 7, 256)
  )
  def test_matches_numpy(self, n, kind, nbins):
    scores = random_scores(np.random.default_rng(n + nbins), n, kind)
    for sparsity in (0.0, 0.5, 0.9, 0.999):
      self.assert_histogram_like_numpy(scores, sparsity, nbins)

  @parameterized.named_parameters(
    (f'{path}_{n}', path, n)
    for path in ('small', 'bucket', 'sampled')
    for n in (100, 4099)
  )
  def test_sign_bit_is_ignored_on_every_path(self, path, n):
    rng = np.random.default_rng(n)
    scores = random_scores(rng, n, 'normal')
    signed = np.where(rng.random(n) < 0.5, -scores, scores).astype(np.float32)
    with forced_path(path):
      for sparsity in (0.0, 0.5, 0.9):
        expected_keep, expected_threshold = reference_histogram(
          scores, sparsity, 256
        )
        keep, threshold = selection.histogram_prune(signed, sparsity, 256)
        self.assertEqual(threshold.numpy(), expected_threshold)
        np.testing.assert_array_equal(keep.numpy(), expected_keep)

  @parameterized.named_parameters(('small', 1000), ('sampled', 100003))
  def test_bins_are_those_of_histogram_fixed_width(self, n):
    scores = random_scores(np.random.default_rng(11), n, 'normal')
    max_value = scores.max()
    for sparsity in (0.1, 0.5, 0.9):
      threshold = selection.histogram_threshold(scores, sparsity, 256)
      j = tf_histogram_j(scores, sparsity, 256)
      self.assertEqual(threshold.numpy(), np.float32(j) / 256 * max_value)
      _, expected_threshold = reference_histogram(scores, sparsity, 256)
      self.assertEqual(threshold.numpy(), expected_threshold)

  def test_float64_scores_get_float64_threshold(self):
    scores = random_scores(
      np.random.default_rng(13), 1000, 'normal', np.float64
    )
    keep, threshold = selection.histogram_prune(scores, 0.5, 16)
    expected_keep, expected_threshold = reference_histogram(scores, 0.5, 16)
    self.assertEqual(threshold.dtype, tf.float64)
    self.assertEqual(threshold.numpy(), np.float64(expected_threshold))
    np.testing.assert_array_equal(keep.numpy(), expected_keep)

  def test_sparsity_zero_keeps_zeros(self):
    keep, threshold = selection.histogram_prune([0.0, 0.0, 1.0, 2.0], 0.0)
    self.assertAllEqual(keep, [True] * 4)
    self.assertEqual(threshold.numpy(), 0.0)

  def test_all_zeros_keeps_everything(self):
    keep, _ = selection.histogram_prune(np.zeros(10, np.float32), 0.9)
    self.assertAllEqual(keep, [True] * 10)

  def test_prunes_whole_bins(self):
    # 4 bins of width 1 over [0, 4]; the cdf is [2, 3, 4, 6] / 6, so 2 bins
    # lie below sparsity 0.6 (and only 1 below 0.5: the comparison is strict).
    scores = np.array([0.5, 1.5, 2.5, 3.5, 4.0, 0.2], np.float32)
    keep, threshold = selection.histogram_prune(scores, 0.6, nbins=4)
    self.assertEqual(threshold.numpy(), 2.0)
    self.assertAllEqual(keep, [False, False, True, True, True, False])

  def test_tf_function_and_saved_model(self):
    module = tf.Module()
    module.prune = tf.function(
      lambda scores, sparsity: selection.histogram_prune(scores, sparsity, 64),
      input_signature=[
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([], tf.float32),
      ],
    )
    path = os.path.join(self.get_temp_dir(), 'histogram')
    tf.saved_model.save(module, path)
    loaded = tf.saved_model.load(path)
    scores = random_scores(np.random.default_rng(12), 70001, 'normal')
    for sparsity in (0.0, 0.5, 0.9):
      keep, threshold = loaded.prune(scores, np.float32(sparsity))
      expected_keep, expected_threshold = reference_histogram(
        scores, np.float32(sparsity), 64
      )
      np.testing.assert_array_equal(keep.numpy(), expected_keep)
      self.assertEqual(threshold.numpy(), expected_threshold)

  @parameterized.named_parameters(
    (f'{n}', n) for n in (10, 2**24 + 7, 2**26 + 3, 2**30 + 1)
  )
  def test_rank_search_rounds_like_float32(self, n):
    # Above 2**24 scores float32 rounds the counts; the window must cover it.
    n32 = np.float32(n)
    for sparsity in (0.0, 1e-7, 0.1, 0.3, 0.5, 0.9, 0.999, 1.0):
      s32 = np.float32(sparsity)
      guess = int(np.ceil(np.float64(s32) * n))
      counts = np.arange(max(guess - 1000, 0), min(guess + 1000, n) + 1)
      reaching = counts[counts.astype(np.float32) / n32 >= s32]
      expected = int(reaching[0]) if reaching.size else n + 1
      rank = selection._first_count_reaching(tf.constant(s32), tf.constant(n))
      self.assertEqual(int(rank), expected, (n, sparsity))

  def test_bad_nbins(self):
    with self.assertRaisesRegex(ValueError, 'nbins must be an int >= 1'):
      selection.histogram_threshold([1.0], 0.5, nbins=0)


if __name__ == '__main__':
  tf.test.main()
