"""The exact k-th smallest of int32 score bits, the core of every selection.

`select_bits(bits, k)` finds the bit pattern of the score of stable rank k
(0-based) and the flat indices of the scores equal to it that rank below k.
`selection` builds both of its pruning rules on it: `prune_smallest` (rank
`num_prune`) and the histogram method (the rank that reaches the sparsity).
It is separate because it is the one part whose speed depends on the size
of the weight, with its own measured crossovers and sample sizes; the
pruning rules around it only check arguments and turn the cut into a keep
mask.

Scores arrive as int32 bit patterns (`score_bits.float32_bits`), which keep
the order of non-negative float32 values, so everything here is integer
work, exact for denormals. Sign bits may still be set on the sampled path
(the passes clear them on the fly). The rank-k cut is found in two steps:

1. A range of bit patterns [lo, hi] that holds the cut is chosen:
   * up to 2**16 scores, all of them (`SMALL_SIZE`);
   * below 3 * 2**20, the 16-bit bucket of the cut, from a `Bincount` of the
     high bits of all scores (`_bucket_candidates`);
   * above, from the histogram of a strided sample of ~2**20 scores, widened by
     4 standard deviations of a sample quantile (`_sample_bracket`). One fused
     XLA pass counts the scores below the range and flags the words that hold
     candidates (`_candidates`, `score_bits.scan_words`); if the count shows
     that the sample misled us, the exact bucket is used instead, so only
     speed depends on the sample.
2. The candidates (a small fraction of the scores, see `_SAMPLE_SIZE`) are
   gathered 8 scores at a time (`score_bits.words`, `score_bits.gather_range`)
   and the exact cut is found among them by a radix select over 11-, 10- and
   10-bit digits.
"""

import tensorflow as tf

from graph_prune.masks import score_bits as _bits

__all__ = ['SMALL_SIZE', 'select_bits']

# The exact fallback histograms the high 15 bits (the sign bit is clear), then
# gathers the 16-bit bucket that holds the cut.
_HIGH_BINS = 1 << 15
_LOW_BINS = 1 << 16
# Sample size and resolution of the sampled bracket. A bigger sample narrows the
# bracket (fewer candidates to gather) but costs more to take and histogram.
# 2**20 was chosen from the candidate counts and times of 2**18, 2**20 and 2**22
# samples on an 8192x8192 weight (measured: BUILD_NOTES, 'Measurements behind
# the code'). The sample histogram has 2**(31 - _SAMPLE_SHIFT) bins.
_SAMPLE_SIZE = 1 << 20
_SAMPLE_SHIFT = 14
# Half-width of the bracket in standard deviations of a sample quantile, plus a
# constant that covers extreme quantiles where the deviation vanishes. With 4
# deviations a random sample misses with probability ~1e-4 (the normal tail
# beyond 4 deviations); a miss costs the exact histogram pass, i.e. time
# (measured: BUILD_NOTES, 'Measurements behind the code'), never a wrong answer.
_BRACKET_SIGMAS = 4.0
_BRACKET_SLACK = 16.0
# Up to SMALL_SIZE scores, all are candidates of the radix select; below
# _SAMPLED_SIZE, the exact histogram brackets the cut (a sample would be nearly
# all the scores); from _SAMPLED_SIZE on, and when the length is only known at
# run time, a sample does. The crossovers were measured on |normal| scores
# (BUILD_NOTES, 'Measurements behind the code'). Up to SMALL_SIZE,
# `selection.prune_smallest` also builds its keep mask in plain ops.
SMALL_SIZE = 1 << 16
_SAMPLED_SIZE = 3 << 20


def select_bits(bits, k, canonical=False):
  """Finds the bits of the score of stable rank k and the ties pruned before it.

  Args:
    bits: int32 [n] float32 bit patterns, possibly with sign bits set.
    k: int32 scalar in [0, n - 1].
    canonical: whether the returned bits must have their sign bits cleared.

  Returns:
    `(bits, threshold_bits, pruned_ties)`: `bits`, with the sign bits cleared
    if `canonical` (else possibly the input itself, for
    `score_bits.keep_from`), the k-th smallest of the cleared bits (0-based),
    and the int64 flat indices of the scores equal to it that rank below k,
    i.e. that must be pruned although they equal the threshold.
  """
  n = bits.shape[0]
  if n is not None and n <= SMALL_SIZE:
    # Every score is a candidate.
    bits = _bits.canonical(bits)
    num_below = tf.constant(0, tf.int32)
    indices = tf.range(n, dtype=tf.int64)
    candidates = bits
  elif n is not None and n < _SAMPLED_SIZE:
    bits, num_below, indices, candidates = _bucket_candidates(
      _bits.canonical(bits), k
    )
  else:
    bits, num_below, indices, candidates = _candidates(bits, k, canonical)
  k_in = k - num_below
  threshold_bits, num_less = _bits.radix_select(candidates, k_in)
  ties = tf.boolean_mask(indices, tf.equal(candidates, threshold_bits))
  return bits, threshold_bits, ties[: k_in - num_less]


def _candidates(bits, k, canonical):
  """Gathers the scores inside a range of bit patterns that holds rank k.

  The range comes from a sample; one fused pass (`score_bits.scan_words`)
  counts the scores below it and flags the 8-score words that hold
  candidates. If the
  count shows that the range misses rank k, an exact histogram of the
  (cleared) bits gives the range instead.

  Args:
    bits: int32 [n] bit patterns, possibly with sign bits set.
    k: int32 scalar in [0, n - 1].
    canonical: whether to return `bits` with the sign bits cleared. That costs
      a pass only when a sign bit is set, which `score_bits.scan_words` reports.

  Returns:
    `(bits, num_below, indices, values)`: the bits (see `canonical`), the
    number of scores below the range, and the int64 flat indices (increasing)
    and int32 values (sign bits cleared) of the scores inside it.
  """
  lo, hi = _sample_bracket(bits, k)
  rows, tail = _bits.split_rows(bits)
  scanned = _bits.scan_words(tf.reshape(rows, [-1, 8]), lo, hi)
  num_below = _bits.count_below(scanned) + _bits.count_true(
    tf.less(_bits.canonical(tail), lo)
  )
  indices, values = _bits.gather_range(
    bits, tf.greater_equal(scanned, _bits.FLAG), lo, hi
  )
  if canonical:
    signed = tf.logical_or(
      tf.reduce_any(
        tf.not_equal(tf.bitwise.bitwise_and(scanned, _bits.SIGNED), 0)
      ),
      tf.reduce_any(tail < 0),
    )
    bits = tf.cond(signed, lambda: _bits.canonical(bits), lambda: bits)
  hit = tf.logical_and(num_below <= k, k < num_below + tf.size(values))
  return tf.cond(
    hit,
    lambda: (bits, num_below, indices, values),
    lambda: _bucket_candidates(_bits.canonical(bits), k),
  )


def _sample_bracket(bits, k):
  """Guesses bit patterns [lo, hi] holding rank k from a strided sample.

  The stride is odd so that it does not align with power-of-two row lengths;
  a sample that is still unrepresentative only costs the fallback pass.
  """
  n = tf.size(bits)
  stride = tf.maximum(n // _SAMPLE_SIZE, 1) // 2 * 2 + 1
  sample = _bits.canonical(tf.strided_slice(bits, [0], [n], [stride]))
  m = tf.cast(tf.size(sample), tf.float64)
  q = tf.cast(k, tf.float64) / tf.cast(n, tf.float64)
  spread = _BRACKET_SIGMAS * tf.sqrt(m * q * (1.0 - q)) + _BRACKET_SLACK
  rank_lo = tf.cast(tf.floor(q * m - spread), tf.int32)
  rank_hi = tf.cast(tf.math.ceil(q * m + spread), tf.int32)
  num_bins = 1 << (31 - _SAMPLE_SHIFT)
  counts = _bits.bincount(
    tf.bitwise.right_shift(sample, _SAMPLE_SHIFT), num_bins
  )
  cumulative = tf.cumsum(counts)
  # Bin holding sample rank r = number of bins whose cumulative count is <= r.
  bin_lo = _bits.count_true(cumulative <= rank_lo)
  bin_hi = _bits.count_true(cumulative <= rank_hi)
  lo = tf.where(rank_lo < 0, 0, bin_lo * (1 << _SAMPLE_SHIFT))
  hi = tf.where(
    rank_hi >= tf.size(sample),
    _bits.SIGN_MASK_32,
    bin_hi * (1 << _SAMPLE_SHIFT) + ((1 << _SAMPLE_SHIFT) - 1),
  )
  return lo, hi


def _bucket_candidates(bits, k):
  """Gathers the 16-bit bucket of rank k, found by a histogram of all bits.

  Exact, at the price of an int32 pass (the high bits) and a `Bincount` over
  all scores: the mid-size path, and the fallback of the sampled one.

  Args:
    bits: int32 [n] >= 0.
    k: int32 scalar in [0, n - 1].

  Returns:
    Like `_candidates`.
  """
  high = tf.bitwise.right_shift(bits, 16)
  bucket, num_below = _bits.locate(_bits.bincount(high, _HIGH_BINS), k)
  words = _bits.words(tf.cast(tf.equal(high, bucket), tf.uint8))
  lo = bucket * _LOW_BINS
  indices, values = _bits.gather_range(bits, words, lo, lo + (_LOW_BINS - 1))
  return bits, num_below, indices, values
