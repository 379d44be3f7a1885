"""Mask math: from weights and a sparsity to masks and thresholds.

Pure tensor functions, eager or inside `tf.function`, with no state: the
caller keeps masks and thresholds in variables. Every element of a weight
is scored by a criterion (`criteria`; |w| by default) and each weight has a
static `MaskStructure` that says how those scores are grouped:

  * elementwise: one score per weight;
  * blocks (weights that squeeze to rank 2): the scores pooled (AVG or MAX)
    over blocks of `block_dims` tiled from the top-left corner (a short
    block only at the end of a dimension that is not a multiple, not
    contrib's SAME padding split before and after:
    `mask_structure._pool_blocks`); a whole block is kept or pruned;
  * unit: the L2 norm of the scores of each slice along the last axis (a
    Dense column, a conv filter; for |w|, the slice's L2 norm); a whole
    output unit is kept or pruned;
  * m-by-n: in every M consecutive weights along axis -2 (the input axis of
    Dense and Conv kernels) keep the N largest scores.

Scores are then selected: the `round(n * s)` smallest of the n scores are
pruned (`exact`, ties pruned lowest index first, at least one score always
survives), or older contrib's histogram CDF cut (`histogram`). The threshold
of `exact` is the smallest surviving score (contrib's convention); that of
`histogram` is the cut at or below which scores are pruned.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import tensorflow as tf

from graph_prune import errors
from graph_prune.masks import criteria
from graph_prune.masks import mask_structure
from graph_prune.masks import selection
from graph_prune.masks.mask_structure import expand as expand
from graph_prune.masks.mask_structure import MaskStructure
from graph_prune.masks.mask_structure import structure_for as structure_for

# A criterion's name in `criteria.CRITERIA`, or a `criteria.Criterion`.
CriterionLike = Union[str, criteria.Criterion]

# Up to this many elements the NaN/Inf check runs the exact test alone (two
# passes over a small weight cost nothing next to the update's fixed cost);
# above, one sum first (`_check_finite`). selection.py's small path uses the
# same crossover.
_EXACT_CHECK_SIZE = 1 << 16


class MaskResult(NamedTuple):
  """A mask in the weight's shape and dtype, and the threshold that made it."""

  mask: tf.Tensor
  threshold: tf.Tensor


# The dtype scores and thresholds are computed in (`criteria` owns it).
score_dtype = criteria.score_dtype


def scores(
  weight: tf.Tensor,
  structure: MaskStructure,
  criterion: CriterionLike = criteria.MAGNITUDE,
  inputs: criteria.Inputs = None,
) -> tf.Tensor:
  """The score grid of a weight: one score per prunable group.

  Args:
    weight: the weight tensor (static shape).
    structure: its `MaskStructure` (not m-by-n).
    criterion: the elementwise score (`criteria`), |w| by default.
    inputs: the weight's extra criterion inputs, by name.

  Returns:
    The criterion's scores for elementwise (weight's shape); their pooled
    grid of shape [ceil(H/bh), ceil(W/bw)] for blocks; the L2 norm of each
    last-axis slice's scores (shape [units]) for unit.
  """
  return mask_structure.pool(
    criteria.scores(weight, criterion, inputs), structure
  )


def num_to_prune(num_scores, sparsity) -> tf.Tensor:
  """How many of `num_scores` to prune at `sparsity`: n - max(1, round(n(1-s))).

  At least one score survives, so a sparsity close to 1 never empties a
  weight; sparsity 0 prunes none. Rounding is half-to-even (as tf.round and
  np.round).
  """
  n = tf.cast(num_scores, tf.float64)
  if isinstance(sparsity, (float, int)):
    # Straight to float64: through float32, 0.9 is 0.89999998 and 8192**2
    # weights would keep 6710888 instead of round(0.1 * 8192**2) = 6710886.
    sparsity = tf.constant(sparsity, tf.float64)
  keep = tf.maximum(tf.round(n * (1.0 - tf.cast(sparsity, tf.float64))), 1.0)
  keep = tf.minimum(keep, n)
  return tf.cast(n - keep, tf.int32)


def select(
  flat_scores: tf.Tensor, sparsity, structure: MaskStructure
) -> Tuple[tf.Tensor, tf.Tensor]:
  """Chooses the scores to keep at `sparsity` (`structure.method`).

  Args:
    flat_scores: 1-D scores (>= 0).
    sparsity: the fraction to prune (float or scalar tensor) in [0, 1].
    structure: gives the method and nbins.

  Returns:
    (keep, threshold): bool [n] and a scalar in the scores' dtype.
  """
  if structure.method == 'histogram':
    return selection.histogram_prune(
      flat_scores, tf.cast(sparsity, flat_scores.dtype), structure.nbins
    )
  return selection.prune_smallest(
    flat_scores, num_to_prune(tf.size(flat_scores), sparsity)
  )


def decay_threshold(
  flat_scores: tf.Tensor,
  selected: Tuple[tf.Tensor, tf.Tensor],
  method: str,
  previous_threshold=None,
  threshold_decay: float = 0.0,
) -> Tuple[tf.Tensor, tf.Tensor]:
  """Smooths the threshold of `select` as contrib did.

  With `threshold_decay` d > 0 the threshold is
  t = (1 - d) * t_now + d * previous_threshold, and the mask follows the
  smoothed threshold (`exact`: keep scores >= t; `histogram`: keep > t); the
  largest score always survives. With d = 0, `selected` is returned.

  Args:
    flat_scores: the 1-D scores `select` chose from.
    selected: (keep, threshold) from `select`.
    method: 'exact' or 'histogram'.
    previous_threshold: the previous threshold (None: 0).
    threshold_decay: d in [0, 1), static.

  Returns:
    (keep, threshold), like `select`.
  """
  keep, threshold = selected
  if not threshold_decay:
    return keep, threshold
  previous = (
    tf.zeros_like(threshold)
    if previous_threshold is None
    else tf.cast(previous_threshold, threshold.dtype)
  )
  smoothed = (1.0 - threshold_decay) * threshold + threshold_decay * previous
  if method == 'histogram':
    smoothed_keep = flat_scores > smoothed
  else:
    smoothed_keep = flat_scores >= smoothed
  smoothed_keep = tf.logical_or(
    smoothed_keep,
    tf.equal(
      tf.range(tf.size(flat_scores)), tf.cast(tf.argmax(flat_scores), tf.int32)
    ),
  )
  keep = tf.cond(
    tf.equal(smoothed, threshold), lambda: keep, lambda: smoothed_keep
  )
  return keep, smoothed


def m_by_n_mask(
  weight: tf.Tensor,
  n: int,
  m: int,
  criterion: CriterionLike = criteria.MAGNITUDE,
  inputs: criteria.Inputs = None,
) -> tf.Tensor:
  """Keeps the n largest scores in every m consecutive weights along axis -2.

  A last group shorter than m (when the axis is not a multiple of m) also
  keeps at most n. Ties keep the lower index.

  Args:
    weight: a weight of rank >= 2 and static shape.
    n: weights kept per group.
    m: group length.
    criterion: the elementwise score (`criteria`), |w| by default.
    inputs: the weight's extra criterion inputs, by name.

  Returns:
    A 0/1 mask of the weight's shape and dtype.
  """
  shape = mask_structure.static_shape(weight.shape)
  rank = len(shape)
  axis = rank - 2
  perm = [i for i in range(rank) if i != axis] + [axis]
  inverse = [perm.index(i) for i in range(rank)]
  ranked = tf.transpose(criteria.scores(weight, criterion, inputs), perm)
  channels = shape[axis]
  groups = -(-channels // m)
  pad = [[0, 0]] * (rank - 1) + [[0, groups * m - channels]]
  # Padding scores -1 lose to every real score >= 0, so a short group keeps
  # its own n largest.
  padded = tf.pad(ranked, pad, constant_values=-1.0)
  grouped = tf.reshape(padded, [-1, groups, m])
  _, top = tf.math.top_k(grouped, k=n, sorted=False)
  keep = tf.reduce_max(tf.one_hot(top, m, dtype=weight.dtype), axis=-2)
  keep = tf.reshape(keep, ranked.shape[:-1].as_list() + [groups * m])
  keep = keep[..., :channels]
  return tf.transpose(keep, inverse)


def _check_finite(weight: tf.Tensor, name: Optional[str]) -> tf.Tensor:
  """`weight`, after a run-time check that it holds no NaN or Inf.

  A sum is NaN or Inf when any term is, and one multi-threaded reduction is
  all the common case costs (`tf.debugging.check_numerics` runs on one thread
  and is slower on large weights; measured: BUILD_NOTES, 'Measurements behind
  the code'). Only when the sum is not finite
  (a NaN or Inf, or finite weights that overflow it) does an exact test run.
  """
  wide = (
    weight
    if weight.dtype in (tf.float32, tf.float64)
    else tf.cast(weight, tf.float32)
  )
  size = weight.shape.num_elements()
  if size is not None and size <= _EXACT_CHECK_SIZE:
    # Small: the exact test directly, which saves a `tf.cond` and its two
    # branch functions per weight in the update's graph.
    finite = tf.reduce_all(tf.math.is_finite(weight))
  else:
    finite = tf.cond(
      tf.math.is_finite(tf.reduce_sum(wide)),
      lambda: tf.constant(True),
      lambda: tf.reduce_all(tf.math.is_finite(weight)),
    )
  check = tf.debugging.Assert(finite, [non_finite_sentence(name)])
  with tf.control_dependencies([check]):
    return tf.identity(weight)


def non_finite_sentence(name: Optional[str]) -> str:
  """The message of a failed NaN/Inf check (`nonfinite` recovers it)."""
  label = f'weight {name!r}' if name else 'the weight'
  return (
    f'graph_prune: {label} holds NaN or Inf, so its pruning mask cannot be '
    'computed; training has diverged (lower the learning rate or clip '
    'gradients) or the weight was loaded wrong'
  )


def compute_mask(
  weight: tf.Tensor,
  sparsity,
  structure: MaskStructure,
  previous_threshold=None,
  threshold_decay: float = 0.0,
  name: Optional[str] = None,
  criterion: CriterionLike = criteria.MAGNITUDE,
  inputs: criteria.Inputs = None,
) -> MaskResult:
  """The mask of one weight at `sparsity` (layer scope).

  Args:
    weight: the weight tensor (static shape, floating dtype).
    sparsity: fraction of scores to prune, float or scalar tensor.
    structure: the weight's `MaskStructure`.
    previous_threshold: the last threshold, for `threshold_decay`.
    threshold_decay: contrib's threshold EMA factor, static.
    name: the weight's name, for error messages.
    criterion: the elementwise score (`criteria`), |w| by default.
    inputs: the weight's extra criterion inputs, by name.

  Returns:
    `MaskResult(mask, threshold)`; m-by-n masks have threshold 0.

  Raises:
    UnknownCriterionError, CriterionInputError: a bad criterion or inputs.
    tf.errors.InvalidArgumentError: at run time, if the weight holds NaN or
      Inf (the message names the weight).
  """
  weight = _check_finite(tf.convert_to_tensor(weight), name)
  if structure.m_by_n is not None:
    mask = m_by_n_mask(weight, *structure.m_by_n, criterion, inputs)
    return MaskResult(mask, tf.zeros([], score_dtype(weight.dtype)))
  if (
    structure.method == 'exact'
    and not threshold_decay
    and structure.granularity == 'weight'
    and not structure.uses_blocks
  ):
    # Elementwise scores without the |s| pass: prune_smallest ignores sign
    # bits and clears them inside its own passes, which saves a 4-byte pass
    # (measured: BUILD_NOTES, 'Measurements behind the code').
    grid = criteria.signed_scores(weight, criterion, inputs, name)
  else:
    grid = mask_structure.pool(
      criteria.scores(weight, criterion, inputs, name), structure
    )
  flat = tf.reshape(grid, [-1])
  keep, threshold = decay_threshold(
    flat,
    select(flat, sparsity, structure),
    structure.method,
    previous_threshold,
    threshold_decay,
  )
  keep = tf.reshape(keep, tf.shape(grid))
  return MaskResult(
    expand(keep, structure, weight.shape, weight.dtype), threshold
  )


def compute_global_masks(
  weights: Sequence[tf.Tensor],
  sparsity,
  structures: Sequence[MaskStructure],
  previous_threshold=None,
  threshold_decay: float = 0.0,
  names: Optional[Sequence[str]] = None,
  criterion: CriterionLike = criteria.MAGNITUDE,
  inputs: Optional[Sequence[criteria.Inputs]] = None,
) -> Tuple[List[tf.Tensor], tf.Tensor]:
  """Masks of several weights from one threshold over all their scores.

  The scores of every weight are pooled together and `round(n * s)` of all n
  are pruned, so weights end with different sparsities that add up to `s`.

  Args:
    weights: the weights (static shapes).
    sparsity: fraction of all scores to prune.
    structures: one `MaskStructure` per weight; all must share method and
      nbins, and none may be m-by-n.
    previous_threshold: the last shared threshold, for `threshold_decay`.
    threshold_decay: contrib's threshold EMA factor, static.
    names: the weights' names, for error messages.
    criterion: the elementwise score (`criteria`) of every weight, |w| by
      default.
    inputs: per weight, its extra criterion inputs (None: none).

  Returns:
    (masks, threshold): a mask per weight and the shared threshold.
  """
  _check_global(weights, structures)
  names = list(names) if names is not None else [None] * len(weights)
  inputs = list(inputs) if inputs is not None else [None] * len(weights)
  dtype = (
    tf.float64
    if any(score_dtype(w.dtype) == tf.float64 for w in weights)
    else tf.float32
  )
  grids, flats = [], []
  for weight, structure, name, given in zip(weights, structures, names, inputs):
    weight = _check_finite(tf.convert_to_tensor(weight), name)
    grid = mask_structure.pool(
      criteria.scores(weight, criterion, given, name), structure
    )
    grids.append(grid)
    flats.append(tf.cast(tf.reshape(grid, [-1]), dtype))
  flat = tf.concat(flats, 0)
  keep, threshold = decay_threshold(
    flat,
    select(flat, sparsity, structures[0]),
    structures[0].method,
    previous_threshold,
    threshold_decay,
  )
  sizes = [int(g.shape.num_elements()) for g in grids]
  masks = []
  for part, grid, structure, weight in zip(
    tf.split(keep, sizes), grids, structures, weights
  ):
    masks.append(
      expand(
        tf.reshape(part, tf.shape(grid)), structure, weight.shape, weight.dtype
      )
    )
  return masks, threshold


def _check_global(weights, structures) -> None:
  """Raises MaskError unless `structures` can share one threshold."""
  if not weights:
    raise errors.MaskError('Global pruning needs at least one weight.')
  if len(structures) != len(weights):
    raise errors.MaskError(
      f'Got {len(weights)} weights but {len(structures)} structures.'
    )
  if any(s.m_by_n is not None for s in structures):
    raise errors.MaskError('m-by-n sparsity cannot be pruned globally.')
  methods = {(s.method, s.nbins) for s in structures}
  if len(methods) != 1:
    raise errors.MaskError(
      f'Global pruning needs one threshold method, got {sorted(methods)}.'
    )


def elementwise_mask(
  weight: tf.Tensor, sparsity, method: str = 'exact', nbins: int = 256
) -> MaskResult:
  """Shortcut: the elementwise mask of one weight (what benchmarks time)."""
  return compute_mask(
    weight, sparsity, MaskStructure(method=method, nbins=nbins)
  )


def mask_sparsity(mask: tf.Tensor) -> tf.Tensor:
  """Fraction of zeros in a mask, as float32."""
  mask = tf.convert_to_tensor(mask)
  zeros = tf.reduce_sum(tf.cast(tf.equal(mask, 0), tf.float32))
  return zeros / tf.cast(tf.size(mask), tf.float32)


def checked_weight(weight, name: Optional[str] = None) -> tf.Tensor:
  """`weight` after its NaN/Inf check (`unit_groups` scores through it)."""
  return _check_finite(tf.convert_to_tensor(weight), name)
