"""Exact selection of the smallest scores of many score vectors at once.

`prune_smallest_segments(flat_scores, sizes, num_prune)` is
`selection.prune_smallest` applied to each of the consecutive segments of
`flat_scores` (lengths `sizes`), with the same result bit for bit: per
segment, the `num_prune[i]` smallest scores are pruned, ties towards the
lower index, and the threshold is the smallest surviving score.

Why: a mask update selects per weight, and the per-weight graph (a radix
select of a few dozen ops, checks and reshapes) is built and optimised at
the first update once per weight. A model with many small weights (the
depthwise and pointwise kernels of a MobileNet) then spends most of its
first update building and optimising that graph, not running it. Here
every segment is handled by the same ops at once, so the graph has a
constant size whatever the number of weights:

1. The scores' float32 bit patterns, sign cleared (order-preserving, exact
   for denormals, as in `selection`), are keyed by segment and top digit
   (`segment * 2**11 + bits >> 20`); one `Bincount` of the keys is a
   histogram row per segment, whose cumulative sums locate the bucket of
   each segment's rank. That, a gather and two compares are the only passes
   over all scores.
2. Scores above their segment's bucket are kept; those inside it (the
   candidates, a small share) go through the rest of a radix select over
   10-bit digits (`score_bits.RADIX_DIGITS`), again all segments at once.
3. A candidate is kept if it is above the cut, or equal to it and after the
   ties that must be pruned: a tie's rank within its segment is an
   exclusive cumulative count of ties minus the count at the segment's
   first candidate.

The per-weight path (`selection`) stays the one for large vectors: it is
tuned to touch each score as few times, and bytes, as possible.
"""

from typing import Sequence, Tuple

import tensorflow as tf

from graph_prune.masks import score_bits as _bits

__all__ = ['prune_smallest_segments']


def prune_smallest_segments(
  flat_scores: tf.Tensor, sizes: Sequence[int], num_prune
) -> Tuple[tf.Tensor, tf.Tensor]:
  """Marks the `num_prune[i]` smallest scores of each segment for pruning.

  Example: `prune_smallest_segments([3., 1., 2., 5., 4.], [3, 2], [1, 1])`
  returns `keep = [True, False, True, True, False]` and
  `thresholds = [2., 5.]`.

  Args:
    flat_scores: 1-D float tensor (float16, bfloat16 or float32) of scores
      >= 0 (sign bits are ignored), the segments one after the other.
    sizes: static positive segment lengths, summing to the length of
      `flat_scores`.
    num_prune: int [segments] (or a sequence of scalars): how many scores of
      each segment to prune, clipped into [0, size - 1] so that at least one
      score of each segment survives.

  Returns:
    `(keep, thresholds)`: bool [n] and the smallest surviving score of each
    segment ([segments], in the dtype of `flat_scores`).

  Raises:
    ValueError: if the sizes do not match the scores, a size is not
      positive, or the scores are float64 or not floating.
  """
  flat_scores = tf.convert_to_tensor(flat_scores)
  sizes = _checked_sizes(flat_scores, sizes)
  count = len(sizes)
  # One segment (a mid-size weight alone) needs no segment ids: its key is
  # its top digit and its bucket a scalar, so no pass gathers per score.
  segment = (
    tf.repeat(tf.range(count, dtype=tf.int32), sizes) if count > 1 else None
  )
  lengths = tf.constant(sizes, tf.int32)
  if isinstance(num_prune, (list, tuple)):
    num_prune = tf.stack([tf.cast(n, tf.int32) for n in num_prune])
  k = tf.clip_by_value(
    tf.reshape(tf.cast(num_prune, tf.int32), [count]), 0, lengths - 1
  )
  bits = _bits.canonical(_bits.float32_bits(flat_scores))
  # The top digit of every score, keyed by segment: one histogram row each.
  top_width = _bits.RADIX_DIGITS[0]
  low_bits = 31 - top_width
  top_radix = 1 << top_width
  key = tf.bitwise.right_shift(bits, low_bits)
  if segment is not None:
    key = segment * top_radix + key
  counts = tf.reshape(
    _bits.bincount(key, count * top_radix), [count, top_radix]
  )
  found, below, in_bucket = _locate_rows(counts, k)
  if segment is None:
    bucket = found[0]
  else:
    bucket = tf.gather(tf.range(count) * top_radix + found, segment)
  above = key > bucket
  # The candidates: scores in their segment's bucket (increasing indices).
  index = tf.where(tf.equal(key, bucket))
  low = tf.bitwise.bitwise_and(
    tf.gather(bits, index[:, 0]), (1 << low_bits) - 1
  )
  candidate_segment = (
    tf.zeros_like(low) if segment is None else tf.gather(segment, index[:, 0])
  )
  low_cut, ties_to_prune = _segment_radix_select(
    low, candidate_segment, count, k - below, low_bits
  )
  # Ties with the cut rank by their order within the segment's candidates.
  low_cut_per_candidate = tf.gather(low_cut, candidate_segment)
  tie = tf.equal(low, low_cut_per_candidate)
  before = tf.cumsum(tf.cast(tie, tf.int32), exclusive=True)
  starts = tf.cumsum(in_bucket, exclusive=True)
  rank = before - tf.gather(tf.gather(before, starts), candidate_segment)
  candidate_keep = tf.logical_or(
    low > low_cut_per_candidate,
    tf.logical_and(tie, rank >= tf.gather(ties_to_prune, candidate_segment)),
  )
  keep = tf.tensor_scatter_nd_update(above, index, candidate_keep)
  cut = found * (1 << low_bits) + low_cut
  thresholds = tf.cast(tf.bitcast(cut, tf.float32), flat_scores.dtype)
  return keep, thresholds


def _locate_rows(counts, k):
  """Per row of a histogram: the bin holding rank k[row], the count below
  it and the count in it (`score_bits.locate` for every row at once)."""
  cumulative = tf.cumsum(counts, axis=1)
  found = tf.reduce_sum(
    tf.cast(cumulative <= k[:, tf.newaxis], tf.int32), axis=1
  )
  lower = tf.range(counts.shape[1])[tf.newaxis, :] < found[:, tf.newaxis]
  below = tf.reduce_sum(tf.where(lower, counts, 0), axis=1)
  in_bin = tf.gather(counts, found, batch_dims=1)
  return found, below, in_bin


def _segment_radix_select(values, segment, count, k, width_bits):
  """Every segment's k-th smallest value, and its ties pruned before it.

  Args:
    values: int32 [c] in [0, 2**width_bits), segment by segment.
    segment: int32 [c], each value's segment.
    count: the number of segments.
    k: int32 [count], the rank sought in each segment.
    width_bits: the bits of `values`, split into the radix digits after the
      top one (`score_bits.RADIX_DIGITS[1:]`).

  Returns:
    `(cut, ties_to_prune)`: int32 [count] each: the value of rank k in each
    segment, and how many values equal to it rank below k.
  """
  cut = tf.zeros([count], tf.int32)
  active = None
  shift = width_bits
  digits = _bits.RADIX_DIGITS[1:]
  for level, width in enumerate(digits):
    shift -= width
    radix = 1 << width
    digit = tf.bitwise.bitwise_and(
      tf.bitwise.right_shift(values, shift), radix - 1
    )
    key = segment * radix + digit
    if active is not None:
      key = tf.where(active, key, count * radix)
    counts = tf.reshape(
      _bits.bincount(key, count * radix + 1)[: count * radix], [count, radix]
    )
    found, below, _ = _locate_rows(counts, k)
    cut = cut * radix + found
    k = k - below
    if level < len(digits) - 1:
      match = tf.equal(digit, tf.gather(found, segment))
      active = match if active is None else tf.logical_and(active, match)
  return cut, k


def _checked_sizes(flat_scores, sizes):
  if not flat_scores.dtype.is_floating or flat_scores.dtype == tf.float64:
    raise ValueError(
      'flat_scores must be float16, bfloat16 or float32, got dtype '
      f'{flat_scores.dtype.name}; select float64 scores one segment at a time '
      'with selection.prune_smallest.'
    )
  sizes = [int(s) for s in sizes]
  if not sizes or min(sizes) < 1:
    raise ValueError(
      f'sizes must be a non-empty list of positive lengths, got {sizes}.'
    )
  if flat_scores.shape.rank != 1 or flat_scores.shape[0] != sum(sizes):
    raise ValueError(
      f'flat_scores must be 1-D of length sum(sizes) = {sum(sizes)}, got '
      f'shape {flat_scores.shape}; concatenate the flattened segments.'
    )
  return sizes
