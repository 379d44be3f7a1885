"""Exact, sort-free selection of the smallest scores, for every mask update.

`prune_smallest(scores, num_prune)` returns a keep mask with exactly
`num_prune` False entries: the `num_prune` smallest scores, ties broken towards
the lower flat index, i.e. the pruned set is
`np.argsort(scores, kind='stable')[:num_prune]`.
`histogram_prune(scores, sparsity, nbins)` is older contrib's histogram method.

Why not sort: tfmot and contrib sort every weight (`top_k` with k = size) at
each update, which dominates the update of a large weight (measured:
BUILD_NOTES, 'Measurements behind the code'). One order statistic is enough:

1. Non-negative float32 values bitcast to int32 keep their order, so all the
   work is done on int32 bits. That also makes it exact for denormals: TF's CPU
   kernels run with denormals-are-zero, so float compares (and `tf.sort`) treat
   1e-45 as 0.
2. The exact cut, the bits of the score of stable rank `num_prune`, and the
   ties pruned before it come from `order_statistic.select_bits`: a bracket
   of candidates (all scores, an exact 16-bit bucket or a sampled range),
   then a radix select among them.
3. keep = bits >= cut, by a fused XLA pass (`score_bits.keep_from`); when
   scores equal to the cut must be pruned too, the pass also keeps only the
   ties after the last pruned one (`score_bits.keep_after`).

This module holds the pruning rules (argument checks, keep masks,
thresholds, the float64 path and the histogram method); the size-dependent
search for the cut is `order_statistic`'s.

Every full pass writes at most one byte per score: TF ops that write a fresh
4-byte tensor pay for page faults of the new buffer with the default CPU
allocator (measured: BUILD_NOTES, 'Measurements behind the code'). On the
sampled path, the passes clear sign bits on the fly, so a raw weight can be
passed instead of |w| (masking does, saving a 4-byte |w| pass). At most
2**31 - 2 scores (int32 counts).
bench/mask_update.py times the whole update.
"""

import tensorflow as tf

from graph_prune.masks import order_statistic as _order
from graph_prune.masks import score_bits as _bits

__all__ = ['prune_smallest', 'histogram_threshold', 'histogram_prune']

# Clears the sign bit of float64 bit patterns.
_SIGN_MASK_64 = 0x7FFFFFFFFFFFFFFF

# Moved to order_statistic; importable from here as before.
_HIGH_BINS = _order._HIGH_BINS
_LOW_BINS = _order._LOW_BINS
_SAMPLE_SIZE = _order._SAMPLE_SIZE
_SAMPLE_SHIFT = _order._SAMPLE_SHIFT
_BRACKET_SIGMAS = _order._BRACKET_SIGMAS
_BRACKET_SLACK = _order._BRACKET_SLACK
_SMALL_SIZE = _order.SMALL_SIZE
_SAMPLED_SIZE = _order._SAMPLED_SIZE
_select_bits = _order.select_bits
_candidates = _order._candidates
_sample_bracket = _order._sample_bracket
_bucket_candidates = _order._bucket_candidates


def prune_smallest(scores, num_prune):
  """Marks the `num_prune` smallest scores for pruning, exactly.

  Ties are broken deterministically: among equal scores the one with the lower
  flat index is pruned first, so the pruned set equals NumPy's
  `np.argsort(scores, kind='stable')[:num_prune]`. Scores are compared on their
  bit patterns, which is exact for denormals, infinities and NaN (NaN ranks
  above +inf, as in NumPy). The sign bit is ignored, so -0.0 ties with 0.0.

  Example: `prune_smallest([3., 1., 2., 1.], 2)` returns
  `keep = [True, False, True, False]` and `threshold = 2.0`.

  Works eagerly and inside `tf.function`, with `num_prune` a tensor. float16 and
  bfloat16 are selected exactly in float32; float64 takes a slower path that
  sorts.

  Args:
    scores: 1-D float tensor (float16, bfloat16, float32 or float64) of scores
      >= 0, e.g. magnitudes, pooled magnitudes or L2 norms.
    num_prune: int scalar (Python or tensor) in [0, n - 1], the number of scores
      to prune; at least one score survives. A tensor outside that range is
      clipped into it.

  Returns:
    `(keep, threshold)`: `keep` is a bool tensor of shape [n] with exactly
    `num_prune` False entries; `threshold` is the smallest surviving score (a
    scalar of the dtype of `scores`), so every score > threshold survives, every
    score < threshold is pruned, and scores equal to it are pruned in index
    order. With `num_prune == 0`, `threshold` is the smallest score.

  Raises:
    ValueError: if `scores` is not a non-empty 1-D float tensor, or a static
      `num_prune` is outside [0, n - 1].
  """
  scores = tf.convert_to_tensor(scores)
  num_prune = _checked_num_prune(scores, num_prune)
  if scores.dtype == tf.float64:
    return _prune_smallest_by_sorting(scores, num_prune)
  bits, threshold_bits, pruned_ties = _order.select_bits(
    _bits.float32_bits(scores), num_prune
  )
  threshold = tf.cast(tf.bitcast(threshold_bits, tf.float32), scores.dtype)
  if scores.shape[0] is not None and scores.shape[0] <= _order.SMALL_SIZE:
    return _small_keep(bits, threshold_bits, pruned_ties), threshold
  # Scores equal to the threshold are pruned up to the last pruned tie.
  # Comparing flat indices too costs time (measured: BUILD_NOTES,
  # 'Measurements behind the code'), so it only runs when there are such ties.
  keep = tf.cond(
    tf.size(pruned_ties) > 0,
    lambda: _bits.keep_after(
      bits, threshold_bits, tf.cast(pruned_ties[-1], tf.int32)
    ),
    lambda: _bits.keep_from(bits, threshold_bits),
  )
  return keep, threshold


def _small_keep(bits, threshold_bits, pruned_ties):
  """`score_bits.keep_after` in plain ops, for up to `_SMALL_SIZE` scores.

  A small weight gains nothing from a fused XLA pass, but each one costs a
  `tf.cond` with two branch functions and an XLA compilation per weight
  shape at the first update, which dominate the first update of a model
  with many small weights. The same keep as `prune_smallest`'s other path:
  scores above the threshold, and ties after the last pruned one (index -1
  when no tie is pruned). `bits` are canonical on this path.
  """
  last_pruned = tf.reduce_max(
    tf.concat([tf.constant([-1], tf.int64), pruned_ties], axis=0)
  )
  later = tf.range(tf.size(bits, out_type=tf.int64)) > last_pruned
  return tf.logical_or(
    bits > threshold_bits,
    tf.logical_and(tf.equal(bits, threshold_bits), later),
  )


def histogram_threshold(scores, sparsity, nbins=256):
  """The threshold of older contrib's histogram method, computed exactly.

  The formula, with n scores and m = max(scores):

  1. bin(x) = min(floor(x / (m / nbins)), nbins - 1), in float64 arithmetic on
     the float32 value, exactly as `tf.histogram_fixed_width(scores, [0, m],
     nbins)` assigns bins;
  2. cdf[i] = number of scores with bin <= i, and norm_cdf = cdf / n, in
     float32 as contrib computed it;
  3. j = number of bins i with norm_cdf[i] < sparsity (float32);
  4. threshold = float32(j / nbins) * m (float32 arithmetic, as contrib).

  `histogram_prune` then prunes the scores <= threshold (contrib compared with
  `greater`), except when j == 0, which prunes nothing (so sparsity 0 keeps
  zeros), and it never prunes the maximum.

  The histogram is never built: j is the bin of the score of rank r - 1, where r
  is the smallest count with r / n >= sparsity, and that score is found with the
  same exact selection as `prune_smallest`. This equals the histogram formula
  (tests compare with a NumPy implementation of it) and avoids
  `tf.histogram_fixed_width`, which is slow on CPU (measured: BUILD_NOTES,
  'Measurements behind the code').

  Args:
    scores: 1-D float tensor of scores >= 0 (any float dtype; float64 scores are
      rounded to float32, the precision of contrib's histogram).
    sparsity: float scalar (Python or tensor) in [0, 1).
    nbins: Python int >= 1, the number of histogram bins.

  Returns:
    The threshold, float32 (float64 for float64 scores, the same value): 0
    exactly when j == 0 (nothing to prune), which includes sparsity 0 and all
    scores 0.

  Raises:
    ValueError: if `scores` is not a non-empty 1-D float tensor or `nbins` < 1.
  """
  _, threshold, _ = _histogram(scores, sparsity, nbins)
  return threshold


def histogram_prune(scores, sparsity, nbins=256):
  """Prunes the scores <= `histogram_threshold(scores, sparsity, nbins)`.

  Nothing is pruned when no bin lies below the sparsity (j == 0, e.g. sparsity
  0) or when all scores are 0, and the maximum score always survives, so the
  result never prunes every score. Unlike `prune_smallest`, the number pruned is
  only approximately sparsity * n: whole bins are pruned at once.

  Args:
    scores: 1-D float tensor of scores >= 0.
    sparsity: float scalar (Python or tensor) in [0, 1).
    nbins: Python int >= 1, the number of histogram bins.

  Returns:
    `(keep, threshold)`: a bool tensor of the shape of `scores` and the
    threshold of `histogram_threshold`.

  Raises:
    ValueError: if `scores` is not a non-empty 1-D float tensor or `nbins` < 1.
  """
  bits, threshold, cut_bits = _histogram(scores, sparsity, nbins)
  return tf.greater(bits, cut_bits), threshold


def _histogram(scores, sparsity, nbins):
  """Checks the arguments, then `_histogram_threshold_bits` on `scores`.

  Returns:
    `(bits, threshold, cut_bits)`, the threshold in the dtype `_widen` gives.
  """
  scores = tf.convert_to_tensor(scores)
  _check_scores(scores)
  if not isinstance(nbins, int) or nbins < 1:
    raise ValueError(f'nbins must be an int >= 1, got {nbins!r}.')
  bits, threshold, cut_bits = _histogram_threshold_bits(
    _bits.float32_bits(scores), sparsity, nbins
  )
  return bits, _widen(threshold, scores.dtype), cut_bits


def _widen(threshold, dtype):
  """float64 scores get a float64 threshold (exact), so callers can compare."""
  return tf.cast(threshold, tf.float64) if dtype == tf.float64 else threshold


# Argument checks (static: they run when the function is traced).


def _check_scores(scores):
  if not scores.dtype.is_floating:
    raise ValueError(
      f'scores must be a float tensor, got dtype {scores.dtype.name}; '
      'cast it to float32.'
    )
  if scores.shape.rank != 1:
    raise ValueError(
      f'scores must be 1-D, got shape {scores.shape}; flatten it with '
      'tf.reshape(scores, [-1]).'
    )
  if scores.shape[0] == 0:
    raise ValueError('scores must not be empty; there is nothing to prune.')


def _checked_num_prune(scores, num_prune):
  """Checks a static `num_prune`, clips a dynamic one; returns int32."""
  _check_scores(scores)
  n = scores.shape[0]
  static = tf.get_static_value(num_prune)
  if static is not None and n is not None and not 0 <= int(static) < n:
    raise ValueError(
      f'num_prune must be in [0, {n - 1}] for {n} scores, got {int(static)}; '
      'at least one score must survive.'
    )
  num_prune = tf.cast(num_prune, tf.int32)
  if num_prune.shape.rank != 0:
    raise ValueError(
      f'num_prune must be a scalar, got shape {num_prune.shape}.'
    )
  return tf.clip_by_value(num_prune, 0, tf.size(scores) - 1)


# float64.


def _prune_smallest_by_sorting(scores, k):
  """float64 path: a stable sort of the magnitude bits (int64, exact)."""
  bits = tf.bitwise.bitwise_and(tf.bitcast(scores, tf.int64), _SIGN_MASK_64)
  order = tf.argsort(bits, stable=True)
  keep = _bits.set_false(
    tf.ones_like(bits, dtype=tf.bool), tf.cast(order[:k], tf.int64)
  )
  threshold = tf.bitcast(tf.gather(bits, order[k]), tf.float64)
  return keep, threshold


# Histogram method.


def _histogram_threshold_bits(bits, sparsity, nbins):
  """The histogram method on float32 bit patterns.

  Returns:
    `(bits, threshold, cut_bits)`: `bits` with sign bits cleared, the float32
    threshold, and the int32 pattern such that scores whose bits are <= it are
    pruned (-1 when nothing is).
  """
  n = tf.size(bits)
  sparsity = tf.cast(sparsity, tf.float32)
  rank = _first_count_reaching(sparsity, n)
  # j is the bin of the score of rank `rank - 1`; a rank of 0 means that no bin
  # is below the sparsity, a rank > n that all are (only if sparsity > 1).
  bits, kth_bits, _ = _order.select_bits(
    bits, tf.clip_by_value(rank - 1, 0, n - 1), canonical=True
  )
  max_bits = tf.reduce_max(bits)
  max_value = tf.bitcast(max_bits, tf.float32)
  step = tf.cast(max_value, tf.float64) / nbins
  kth = tf.cast(tf.bitcast(kth_bits, tf.float32), tf.float64)
  kth_bin = tf.minimum(tf.cast(kth / step, tf.int32), nbins - 1)
  j = tf.where(rank < 1, 0, tf.where(rank > n, nbins, kth_bin))
  # All zeros (or a denormal maximum, which TF's CPU kernels flush to zero):
  # nothing to separate.
  j = tf.where(step > 0, j, 0)
  threshold = tf.cast(j, tf.float32) / float(nbins) * max_value
  # Scores <= threshold are pruned; never the maximum, nothing when j == 0.
  cut_bits = tf.minimum(tf.bitcast(threshold, tf.int32), max_bits - 1)
  cut_bits = tf.where(j > 0, cut_bits, -1)
  return bits, threshold, cut_bits


def _first_count_reaching(sparsity, n):
  """Smallest count r in [0, n] with r / n >= sparsity in float32, else n + 1.

  float32 division by n is monotone in the count, so `cdf / n < sparsity`
  holds exactly for the counts cdf < r. ceil(sparsity * n) is within
  n * 2**-22 + 1 of r (float32 rounds counts above 2**24), so r is found among
  the counts in that window.
  """
  n32 = tf.cast(n, tf.float32)
  guess = tf.math.ceil(tf.cast(sparsity, tf.float64) * tf.cast(n, tf.float64))
  guess = tf.cast(
    tf.clip_by_value(guess, 0.0, tf.cast(n + 1, tf.float64)), tf.int32
  )
  width = n // (1 << 22) + 2
  counts = guess + tf.range(-width, width + 1)
  reaches = tf.logical_and(
    tf.cast(counts, tf.float32) / n32 >= sparsity, counts >= 0
  )
  reaches = tf.logical_or(reaches, counts > n)
  return tf.reduce_min(tf.where(reaches, counts, n + 1))
