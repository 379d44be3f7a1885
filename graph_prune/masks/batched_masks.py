"""Layer-scope masks of many small weights, computed by one set of ops.

`masking.compute_mask` builds a few hundred ops per weight (the NaN/Inf
check, scoring, the radix select, reshapes). That graph is built, and then
optimised by TensorFlow, at the first mask update, so on a model with dozens
of small weights (MobileNet's depthwise and pointwise kernels) the first
update costs far more than its run. `compute_masks_together` gives the same
masks and thresholds as `masking.compute_mask` on each weight, bit for bit,
from ops whose number does not grow with the number of weights: one
concatenation of all weights, one NaN/Inf check, one run of the criterion
on the concatenation (`criteria.flat_signed_scores`), one segmented
selection (`segment_selection`), then a reshape (and, for blocks and units,
the expansion) per weight.

Only weights that `batchable` accepts take this path: small ones (a full
pass over all of them per radix level is cheap only while they are small),
the exact method without threshold decay, not m-by-n and not float64.
"""

from typing import List, Optional, Sequence

import tensorflow as tf

from graph_prune.masks import criteria
from graph_prune.masks import mask_structure
from graph_prune.masks import masking
from graph_prune.masks import score_bits
from graph_prune.masks import segment_selection
from graph_prune.masks.mask_structure import MaskStructure

__all__ = ['ByShape', 'batchable', 'compute_masks_together', 'selectable']

# Largest weight (elements) computed together; the per-weight selection's
# small path (`selection._SMALL_SIZE`) and exact NaN check use the same size.
MAX_SIZE = 1 << 16
# Largest weight computed alone by the same selection (`ByShape`); above,
# `selection`'s sampled path, tuned for large weights, takes over (its
# `_SAMPLED_SIZE`).
MAX_ALONE_SIZE = 3 << 20


def batchable(
  weight_shape, dtype, structure: MaskStructure, threshold_decay: float = 0.0
) -> bool:
  """Whether a layer-scope weight's mask may be computed together."""
  size = tf.TensorShape(weight_shape).num_elements()
  return (
    size is not None
    and size <= MAX_SIZE
    and selectable(weight_shape, dtype, structure, threshold_decay)
  )


def selectable(
  weight_shape, dtype, structure: MaskStructure, threshold_decay: float = 0.0
) -> bool:
  """Whether a layer-scope weight's mask may be computed by `ByShape`."""
  size = tf.TensorShape(weight_shape).num_elements()
  return (
    size is not None
    and 0 < size <= MAX_ALONE_SIZE
    and tf.as_dtype(dtype).is_floating
    and tf.as_dtype(dtype) != tf.float64
    and structure.m_by_n is None
    and structure.method == 'exact'
    and not threshold_decay
  )


def compute_masks_together(
  weights: Sequence[tf.Tensor],
  sparsities: Sequence,
  structures: Sequence[MaskStructure],
  names: Optional[Sequence[Optional[str]]] = None,
  criterion: masking.CriterionLike = criteria.MAGNITUDE,
  inputs: Optional[Sequence[criteria.Inputs]] = None,
) -> List[masking.MaskResult]:
  """`masking.compute_mask` of each weight (layer scope), all at once.

  Args:
    weights: weights that `batchable` accepts (static shapes).
    sparsities: fraction of scores to prune per weight (floats or scalar
      tensors).
    structures: each weight's `MaskStructure`.
    names: each weight's name, for the NaN/Inf message.
    criterion: the elementwise score (`criteria`) of every weight, |w| by
      default.
    inputs: per weight, its extra criterion inputs (None: none).

  Returns:
    One `MaskResult(mask, threshold)` per weight, as `masking.compute_mask`
    returns it.

  Raises:
    ValueError: if a weight is not `batchable`.
    UnknownCriterionError, CriterionInputError: a bad criterion or inputs.
    tf.errors.InvalidArgumentError: at run time, if a weight holds NaN or Inf
      (the message names the first such weight).
  """
  weights = [tf.convert_to_tensor(w) for w in weights]
  names = list(names) if names is not None else [None] * len(weights)
  for i, (weight, structure) in enumerate(zip(weights, structures)):
    if not batchable(weight.shape, weight.dtype, structure):
      label = repr(names[i]) if names[i] else f'number {i}'
      raise ValueError(
        f'weight {label} (shape {weight.shape}, dtype '
        f'{weight.dtype.name}, method {structure.method!r}) cannot be '
        'computed together; use masking.compute_mask for it.'
      )
  return _together(
    weights,
    _stacked_sparsities(sparsities),
    structures,
    tf.constant([masking.non_finite_sentence(n) for n in names]),
    criterion,
    inputs,
    names,
  )


def _together(
  weights, sparsities, structures, messages, criterion, inputs, names=None
):
  """`compute_masks_together` with float64 [n] sparsities and string [n]
  NaN/Inf messages."""
  sizes = [w.shape.num_elements() for w in weights]
  flat = _checked(
    tf.concat([tf.reshape(tf.cast(w, tf.float32), [-1]) for w in weights], 0),
    sizes,
    messages,
  )
  signed = criteria.flat_signed_scores(
    flat, [w.shape for w in weights], criterion, inputs, names
  )
  grid_shapes, flat_scores = _scores(signed, weights, sizes, structures)
  grid_sizes = [shape.num_elements() for shape in grid_shapes]
  keep, thresholds = segment_selection.prune_smallest_segments(
    flat_scores,
    grid_sizes,
    masking.num_to_prune(tf.constant(grid_sizes, tf.int64), sparsities),
  )
  keeps = tf.split(keep, grid_sizes) if len(weights) > 1 else [keep]
  thresholds = tf.unstack(thresholds, num=len(weights))
  return [
    masking.MaskResult(
      masking.expand(
        tf.reshape(k, shape), structure, weight.shape, weight.dtype
      ),
      threshold,
    )
    for k, shape, structure, weight, threshold in zip(
      keeps, grid_shapes, structures, weights, thresholds
    )
  ]


def _elementwise(structure: MaskStructure) -> bool:
  return structure.granularity == 'weight' and not structure.uses_blocks


def _scores(signed, weights, sizes, structures):
  """The score grids' shapes and all scores, flat (`masking.scores`).

  `signed` holds the criterion's signed scores of all weights, flat. An
  elementwise weight's scores are those themselves: the selection ignores
  sign bits, as `masking.compute_mask`'s own fast path does, so no |s| pass
  is needed.
  """
  if all(_elementwise(s) for s in structures):
    return [w.shape for w in weights], signed
  pieces = tf.split(signed, sizes) if len(weights) > 1 else [signed]
  grids = [
    tf.reshape(piece, weight.shape)
    if _elementwise(structure)
    else mask_structure.pool(
      criteria.absolute(tf.reshape(piece, weight.shape)), structure
    )
    for piece, weight, structure in zip(pieces, weights, structures)
  ]
  return (
    [g.shape for g in grids],
    tf.concat([tf.reshape(g, [-1]) for g in grids], 0),
  )


def _stacked_sparsities(sparsities) -> tf.Tensor:
  """float64 [n]; Python numbers go straight to float64, as in `masking`."""
  return tf.stack(
    [
      tf.constant(s, tf.float64)
      if isinstance(s, (float, int))
      else tf.cast(s, tf.float64)
      for s in sparsities
    ]
  )


def _checked(flat, sizes, messages):
  """`flat`, after one run-time NaN/Inf check of all weights.

  The assertion's message is that of the first weight holding NaN or Inf
  (`messages`: `masking.non_finite_sentence` per weight, which `nonfinite`
  recovers).
  """
  if len(sizes) == 1:
    finite = tf.reduce_all(tf.math.is_finite(flat))
    first = 0
  else:
    segment = tf.repeat(tf.range(len(sizes), dtype=tf.int32), sizes)
    bad = score_bits.bincount(
      segment,
      len(sizes),
      tf.cast(tf.logical_not(tf.math.is_finite(flat)), tf.int32),
    )
    finite = tf.reduce_all(tf.equal(bad, 0))
    first = tf.argmax(tf.cast(bad > 0, tf.int32), output_type=tf.int32)
  check = tf.debugging.Assert(finite, [tf.gather(messages, first)])
  with tf.control_dependencies([check]):
    return tf.identity(flat)


class ByShape:
  """The mask of one mid-size weight, traced once per signature.

  Inside a traced update, same-shaped weights (ResNet's repeated blocks)
  share one function: its body, a few hundred ops, is built once per
  (shape, dtype, structure) instead of once per weight, which is most of
  the first update's trace. Eagerly there is nothing to share. One
  instance serves one update's trace (`plans.compute_masks` makes it), so
  no function outlives the graph it was traced for.
  """

  def __init__(self):
    self._functions = {}

  def __call__(
    self,
    weight,
    sparsity,
    structure,
    name=None,
    criterion: masking.CriterionLike = criteria.MAGNITUDE,
    inputs: criteria.Inputs = None,
  ):
    """`masking.compute_mask(weight, sparsity, structure, name=name,
    criterion=criterion, inputs=inputs)`, for a weight that `selectable`
    accepts."""
    weight = tf.convert_to_tensor(weight)
    sparsity = _stacked_sparsities([sparsity])
    message = tf.constant([masking.non_finite_sentence(name)])
    criterion = criteria.resolve(criterion)
    # Checked here, so that an error names this weight and not the one the
    # shared function was first traced for.
    criteria.check_inputs(criterion, weight.shape, inputs, name)
    inputs = {k: tf.convert_to_tensor(v) for k, v in (inputs or {}).items()}
    if not tf.inside_function():
      return _together(
        [weight], sparsity, [structure], message, criterion, [inputs]
      )[0]
    key = (tuple(weight.shape), weight.dtype, structure, criterion)
    if key not in self._functions:
      self._functions[key] = tf.function(
        lambda w, s, m, x: tuple(
          _together([w], s, [structure], m, criterion, [x])[0]
        ),
        autograph=False,
      )
    return masking.MaskResult(
      *self._functions[key](weight, sparsity, message, inputs)
    )
