"""Mask math of coupled channel groups and unit parameters (pure functions).

A `GroupPlan` is a set of kernels whose channels are pruned together
(`unit_groups=coupled`; found by `passes/channel_groups.py`): each member
kernel has its slices along one axis (a producer's output units, a
depthwise kernel's channels), and each slice belongs to one channel of the
group. A channel's score is the L2 norm of the criterion's scores
(`criteria`; |w| by default) over every member's slices in it, for |w| the
group importance Torch-Pruning uses:

    score[c] = sqrt(sum over members m, slices j with channel_m[j] == c of
                    ||score_m[..., j]||^2)

In layer scope each group prunes `round(s * n)` of its n channels (as one
weight prunes its units); in global scope all groups' channel scores share
one threshold. A pruned channel is zero in every member. Fixed channels
(tied to a tensor no producer makes) always stay.

A `ParamPlan` is a unit parameter (`unit_params=all`: a bias, a BatchNorm
scale or shift) whose positions follow producer units: its mask is read from
the new kernel masks, so it is pruned exactly with its units.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.masks import criteria
from graph_prune.masks import masking


@dataclasses.dataclass(frozen=True)
class MemberPlan:
  """One kernel of a group.

  Attributes:
    index: the kernel's position among the pruned weights.
    axis: the axis its slices lie along (-1 or -2).
    channels: per position along `axis`, its channel in the group.
  """

  index: int
  axis: int
  channels: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """A set of kernels pruned channel by channel together."""

  members: Tuple[MemberPlan, ...]
  channels: int
  fixed: Tuple[int, ...] = ()

  @property
  def free(self) -> np.ndarray:
    """The channels that may be pruned, in order."""
    return np.setdiff1d(np.arange(self.channels), np.asarray(self.fixed, int))


@dataclasses.dataclass(frozen=True)
class ParamPlan:
  """A unit parameter: per position, (kernel index, unit) or None.

  Attributes:
    sources: per position along `axis`, (kernel index, unit) or None.
    axis: the param's axis the sources run along; the mask is the same
      along its other axes (`shape`).
    kernel_axis: the kernels' axis their units lie along.
    shape: the param's shape; () for a rank-1 param.
  """

  sources: Tuple[Optional[Tuple[int, int]], ...]
  axis: int = -1
  kernel_axis: int = -1
  shape: Tuple[int, ...] = ()


def singleton(index: int, shape: Sequence[int]) -> GroupPlan:
  """A kernel on its own: its units are its channels (as without groups)."""
  units = int(shape[-1])
  return GroupPlan((MemberPlan(index, -1, tuple(range(units))),), units)


def channel_scores(
  weights: Sequence[tf.Tensor],
  group: GroupPlan,
  criterion: masking.CriterionLike = criteria.MAGNITUDE,
  inputs: Optional[Sequence[criteria.Inputs]] = None,
  names: Optional[Sequence[Optional[str]]] = None,
) -> tf.Tensor:
  """The L2 norm of every channel's scores over all members' slices.

  Args:
    weights: all pruned weights (indexed by members).
    group: the group.
    criterion: the elementwise score (`criteria`), |w| by default.
    inputs: per weight index, its extra criterion inputs (None: none).
    names: per weight index, its name, for error messages.

  Returns:
    float64 [channels].
  """
  total = None
  for member in group.members:
    i = member.index
    weight = tf.convert_to_tensor(weights[i])
    # Signed scores: squaring drops the sign, so no |s| pass is needed.
    signed = criteria.signed_scores(
      weight,
      criterion,
      inputs[i] if inputs is not None else None,
      names[i] if names is not None else None,
    )
    rank = weight.shape.rank
    axis = member.axis % rank
    others = [a for a in range(rank) if a != axis]
    squares = tf.reduce_sum(tf.square(signed), axis=others)
    part = tf.math.unsorted_segment_sum(
      tf.cast(squares, tf.float64),
      tf.constant(member.channels, tf.int32),
      group.channels,
    )
    total = part if total is None else total + part
  return tf.sqrt(total)


def member_mask(keep: tf.Tensor, member: MemberPlan, shape, dtype) -> tf.Tensor:
  """A member kernel's mask from its group's keep vector [channels]."""
  rank = len(shape)
  positions = tf.gather(tf.cast(keep, dtype), list(member.channels))
  axis = member.axis % rank
  view = [1] * rank
  view[axis] = len(member.channels)
  return tf.broadcast_to(tf.reshape(positions, view), shape)


def compute_group_masks(
  weights: Sequence[tf.Tensor],
  groups: Sequence[GroupPlan],
  sparsities: Sequence,
  structures: Sequence[masking.MaskStructure],
  scopes: Sequence[str],
  previous_thresholds: Optional[Sequence] = None,
  threshold_decay: float = 0.0,
  names: Optional[Sequence[str]] = None,
  criterion: masking.CriterionLike = criteria.MAGNITUDE,
  inputs: Optional[Sequence[criteria.Inputs]] = None,
) -> Tuple[List[tf.Tensor], List[tf.Tensor]]:
  """New masks and thresholds of every member of `groups`.

  Args:
    weights: current values of all pruned weights (indexed by members).
    groups: the groups; every weight belongs to at most one.
    sparsities: per group, the fraction of its free channels to prune.
    structures: per group, the `MaskStructure` (its method and nbins).
    scopes: per group, 'layer' or 'global' (global groups share one
      threshold at the sparsity of the first of them).
    previous_thresholds: per group, its last threshold (threshold_decay).
    threshold_decay: contrib's threshold EMA factor.
    names: the weights' names, for the NaN/Inf check's message.
    criterion: the elementwise score (`criteria`) of every member, |w| by
      default.
    inputs: per weight index, its extra criterion inputs (None: none).

  Returns:
    (masks, thresholds): per weight index (None for weights in no group).

  Raises:
    MaskError: a weight belongs to two groups.
    tf.errors.InvalidArgumentError: at run time, if a member holds NaN or Inf.
  """
  count = len(weights)
  names = list(names) if names is not None else [None] * count
  checked = list(weights)
  for group in groups:
    for member in group.members:
      i = member.index
      checked[i] = masking.checked_weight(weights[i], names[i])
  previous = list(previous_thresholds or [None] * len(groups))
  scores = [
    channel_scores(checked, g, criterion, inputs, names) for g in groups
  ]
  chosen = [None] * len(groups)
  batches = [[i] for i, scope in enumerate(scopes) if scope != 'global']
  shared = [i for i, scope in enumerate(scopes) if scope == 'global']
  if shared:
    batches.append(shared)
  for batch in batches:
    first = batch[0]
    selected = _select(
      [scores[i] for i in batch],
      [groups[i] for i in batch],
      sparsities[first],
      structures[first],
      previous[first],
      threshold_decay,
    )
    for i, result in zip(batch, selected):
      chosen[i] = result
  masks: List[Optional[tf.Tensor]] = [None] * count
  thresholds: List[Optional[tf.Tensor]] = [None] * count
  for group, (keep, threshold) in zip(groups, chosen):
    for member in group.members:
      if masks[member.index] is not None:
        raise errors.MaskError(
          f'Weight {names[member.index] or member.index!r} belongs to two '
          'channel groups.'
        )
      weight = checked[member.index]
      masks[member.index] = member_mask(
        keep, member, weight.shape.as_list(), weight.dtype
      )
      thresholds[member.index] = threshold
  return masks, thresholds


def _select(scores, groups, sparsity, structure, previous, decay):
  """Per group, its keep vector (fixed channels kept), and the threshold."""
  free = [g.free for g in groups]
  if not sum(f.size for f in free):
    return [(tf.ones([g.channels], tf.bool), tf.zeros([])) for g in groups]
  flat = tf.concat(
    [tf.gather(s, f.tolist()) for s, f in zip(scores, free)], axis=0
  )
  flat = tf.cast(flat, tf.float32)
  keep_free, threshold = masking.decay_threshold(
    flat,
    masking.select(flat, sparsity, structure),
    structure.method,
    previous,
    decay,
  )
  results = []
  start = 0
  for group, channels in zip(groups, free):
    part = keep_free[start : start + channels.size]
    start += channels.size
    keep = tf.tensor_scatter_nd_update(
      tf.ones([group.channels], tf.bool),
      channels.reshape(-1, 1).astype(np.int32),
      tf.reshape(part, [-1]),
    )
    results.append((keep, threshold))
  return results


def unit_vector(mask: tf.Tensor, axis: int = -1) -> tf.Tensor:
  """1 for every unit along `axis` (output units: the last) a kernel mask
  keeps."""
  rank = mask.shape.rank
  others = [a for a in range(rank) if a != axis % rank]
  return tf.reduce_max(mask, axis=others)


def param_masks(
  masks: Sequence[tf.Tensor], plans: Sequence[ParamPlan], dtypes
) -> List[tf.Tensor]:
  """The masks of unit parameters, read from their units' kernel masks.

  Each kernel's unit vector is computed once, however many parameters
  (bias, scale, shift) follow it.
  """
  vectors = {}
  result = []
  for plan, dtype in zip(plans, dtypes):
    kernels = sorted({s[0] for s in plan.sources if s is not None})
    offsets, parts, start = {}, [], 0
    for k in kernels:
      key = (k, plan.kernel_axis)
      if key not in vectors:
        vectors[key] = unit_vector(masks[k], plan.kernel_axis)
      offsets[k] = start
      start += int(vectors[key].shape[0])
      parts.append(tf.cast(vectors[key], dtype))
    parts.append(tf.ones([1], dtype))
    index = [start if s is None else offsets[s[0]] + s[1] for s in plan.sources]
    mask = tf.gather(tf.concat(parts, axis=0), index)
    if len(plan.shape) > 1:  # the same along the param's other axes
      view = [1] * len(plan.shape)
      view[plan.axis % len(plan.shape)] = len(index)
      mask = tf.broadcast_to(tf.reshape(mask, view), plan.shape)
    result.append(mask)
  return result
