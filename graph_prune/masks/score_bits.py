"""Bit-level building blocks of `selection`: bit patterns and full passes.

Scores are compared as the int32 bit patterns of non-negative float32 values
(see `selection`'s docstring). This module holds what touches every score:
the bit views, the 8-score words, the fused XLA passes that read each score
once and write at most one byte per score, and the digit histograms of the
radix select.
"""

import tensorflow as tf

# Clears the sign bit of float32 bit patterns.
SIGN_MASK_32 = 0x7FFFFFFF
# Bit widths of the radix select's digits, high to low: they cover the 31 bits
# of a non-negative int32. On candidate sets of the sizes the selection sees,
# (11, 10, 10) beat (15, 16): clearing and scanning a histogram of 2**16 bins
# costs more than the third level (measured: BUILD_NOTES, 'Measurements behind
# the code').
RADIX_DIGITS = (11, 10, 10)
# Full passes group scores in rows of this many bytes, see `split_rows`.
ROW = 64
# `scan_words` packs a word's count below the bracket (0..8), whether it holds
# a sign bit, and whether it holds candidates into one byte.
BELOW_MASK = 15
SIGNED = 16
FLAG = 32
# Bit patterns.


def float32_bits(scores):
  """Returns the float32 bit patterns of `scores` as int32.

  float16 and bfloat16 convert to float32 exactly; float64 (histogram method
  only) is rounded. Patterns with the sign bit set (-0.0, negative scores) are
  negative int32; the passes over all scores clear the sign bit on the fly, so
  negative scores (a raw weight) cost no extra pass.
  """
  if scores.dtype != tf.float32:
    scores = tf.cast(scores, tf.float32)
  return tf.bitcast(scores, tf.int32)


def canonical(bits):
  """Clears the sign bits: orders scores by magnitude, -0.0 equal to 0.0."""
  return tf.bitwise.bitwise_and(bits, SIGN_MASK_32)


def set_false(keep, indices):
  """Returns `keep` with the flat int64 `indices` set to False."""
  return tf.tensor_scatter_nd_update(
    keep, indices[:, tf.newaxis], tf.zeros_like(indices, dtype=tf.bool)
  )


# Full passes over the scores.


def split_rows(x):
  """Splits a 1-D tensor into `[rows, ROW]` (a view) and the < ROW tail.

  Ops over `[rows, ROW]` stay vectorized, and a prefix of a whole number of
  64-byte rows is a zero-copy slice in TF.
  """
  n = tf.size(x)
  head = n - n % ROW
  rows = tf.reshape(tf.slice(x, [0], [head]), [-1, ROW])
  return rows, tf.slice(x, [head], [n - head])


def words(flags):
  """Views the 0/1 uint8 `flags` of `split_rows`' head as uint64 words of 8.

  A word is non-zero iff one of its 8 scores is flagged, so `tf.where` over the
  words scans 8 times fewer elements (it is serial and its time grows with the
  number of elements, however few are set; measured: BUILD_NOTES,
  'Measurements behind the code'), and words combine with one uint64 op per 8
  flags.
  """
  rows, _ = split_rows(flags)
  return tf.bitcast(tf.reshape(rows, [-1, 8]), tf.uint64)


def gather_range(bits, words, lo, hi):
  """Returns the flat int64 indices and the values of the scores in [lo, hi].

  Only the 8-score words flagged in `words` are gathered, then filtered by
  value, so the flags need not be gathered too; the short tail
  after `split_rows`' head is filtered directly. Indices come out increasing,
  which the tie-break relies on.

  Args:
    bits: int32 [n], compared with their sign bits cleared.
    words: [head / 8] from `words` or `scan_words`, non-zero (True) at least
      where a word holds a value in [lo, hi].
    lo: int32 scalar.
    hi: int32 scalar.

  Returns:
    `(indices, values)`: int64 [c] and int32 [c] >= 0.
  """
  rows, tail = split_rows(bits)
  # A word's 8 values are gathered together, so this costs one cache miss per
  # word holding a candidate.
  word_index = tf.where(words)[:, 0]
  gathered = tf.size(word_index, out_type=tf.int64) * 8
  values = canonical(
    tf.concat(
      [
        tf.reshape(tf.gather(tf.reshape(rows, [-1, 8]), word_index), [-1]),
        tail,
      ],
      axis=0,
    )
  )
  inside = tf.where(tf.logical_and(values >= lo, values <= hi))[:, 0]
  # Flat positions, computed for the values inside only: word_index[i // 8] * 8
  # + i % 8 within the gathered words, then the tail after the head. The
  # appended 0 keeps the gather in bounds for tail values.
  word = tf.gather(
    tf.concat([word_index, [0]], axis=0), tf.minimum(inside // 8, gathered // 8)
  )
  head = tf.cast(tf.size(rows), tf.int64)
  positions = tf.where(
    inside < gathered, word * 8 + inside % 8, head + inside - gathered
  )
  return positions, tf.gather(values, inside)


def count_below(scanned):
  """Sums the counts below the bracket of `scan_words`' output.

  The sums of 8 words (at most 64) fit a uint8, so the wide reduction stays in
  uint8 and only one partial sum per 64 scores is widened to int32.
  """
  counts = tf.bitwise.bitwise_and(scanned, BELOW_MASK)
  partial = tf.reduce_sum(tf.reshape(counts, [-1, 8]), axis=1)
  return tf.reduce_sum(tf.cast(partial, tf.int32))


# Fused passes. XLA compiles each into one loop over the scores that clears
# their sign bits on the fly, so a raw weight needs no |w| pass (a 4-byte
# output; measured: BUILD_NOTES, 'Measurements behind the code'). They are
# compiled once per shape.


@tf.function(jit_compile=True, autograph=False)
def scan_words(words, lo, hi):
  """One pass over 8-score words: counts below [lo, hi], flags candidates.

  XLA fuses the compares and the per-word reductions into one loop that reads
  each score once and writes one byte per word, faster than TF's separate
  compare, cast, count and XOR passes (measured: BUILD_NOTES, 'Measurements
  behind the code').

  Args:
    words: int32 [w, 8] bit patterns, possibly with sign bits set.
    lo: int32 scalar >= 0.
    hi: int32 scalar >= lo.

  Returns:
    uint8 [w]: the number of scores below `lo` in each word (`BELOW_MASK`),
    plus `SIGNED` if one has its sign bit set, plus `FLAG` if one is in
    [lo, hi] (sign bits cleared).
  """
  values = canonical(words)
  below = tf.less(values, lo)
  flagged = tf.reduce_any(
    tf.logical_and(tf.logical_not(below), values <= hi), axis=1
  )
  signed = tf.reduce_any(words < 0, axis=1)
  return (
    tf.reduce_sum(tf.cast(below, tf.uint8), axis=1)
    + tf.cast(signed, tf.uint8) * SIGNED
    + tf.cast(flagged, tf.uint8) * FLAG
  )


@tf.function(jit_compile=True, autograph=False)
def keep_from(bits, threshold):
  """bits >= threshold, sign bits cleared: as fast as TF's compare alone."""
  return tf.greater_equal(canonical(bits), threshold)


@tf.function(jit_compile=True, autograph=False)
def keep_after(bits, threshold, last_pruned):
  """Keeps bits > threshold, and bits == threshold after index last_pruned.

  Replaces a scatter of the pruned ties, which copies the whole mask on CPU.
  """
  values = canonical(bits)
  later = tf.range(tf.size(bits)) > last_pruned
  return tf.logical_or(
    values > threshold, tf.logical_and(tf.equal(values, threshold), later)
  )


def radix_select(values, k):
  """Exact k-th smallest of non-negative int32 `values`, by radix digits.

  Each level histograms one digit of the values that share the digits found so
  far (`RADIX_DIGITS`, high to low). Small digits keep the fixed cost of each
  `Bincount` and `cumsum` low, which dominates for a few thousand values.

  Args:
    values: int32 [c] >= 0.
    k: int32 scalar in [0, c - 1].

  Returns:
    `(kth, num_less)`: the k-th smallest value (0-based) and how many values are
    strictly smaller than it.
  """
  kth = tf.constant(0, tf.int32)
  num_less = tf.constant(0, tf.int32)
  # 1 where a value shares the digits found so far: the later levels count
  # only those (a weighted Bincount) instead of gathering them, which keeps
  # the update's graph small (a boolean_mask is about twenty ops per level
  # and weight) for a pass over the candidates, a small fraction of the
  # scores.
  active = None
  shift = 31
  for level, width in enumerate(RADIX_DIGITS):
    shift -= width
    digit = tf.bitwise.bitwise_and(
      tf.bitwise.right_shift(values, shift), (1 << width) - 1
    )
    found, below = locate(bincount(digit, 1 << width, active), k)
    kth = kth * (1 << width) + found
    num_less += below
    k -= below
    if level < len(RADIX_DIGITS) - 1:
      match = tf.cast(tf.equal(digit, found), tf.int32)
      active = match if active is None else active * match
  return kth, num_less


def locate(counts, k):
  """Returns the bin holding rank k of a histogram, and the count below it."""
  cumulative = tf.cumsum(counts)
  index = count_true(cumulative <= k)
  return index, cumulative[index] - counts[index]


def bincount(values, size, weights=None):
  """Counts non-negative int32 `values` < size into `size` int32 bins.

  Calls the raw op: `tf.math.bincount` adds a `reduce_max` pass over `values`.
  `weights` (int32, the shape of `values`) counts each value that many times.
  """
  if weights is None:
    weights = tf.constant([], tf.int32)
  return tf.raw_ops.Bincount(arr=values, size=size, weights=weights)


def count_true(condition):
  return tf.reduce_sum(tf.cast(condition, tf.int32))
