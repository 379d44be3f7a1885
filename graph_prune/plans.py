"""The mask update as pure functions: plan once, then compute masks per step.

`plan_weights` resolves, once and outside traced code, how each weight is
pruned (its structure, target and scope). `compute_masks` then turns weight
values, sparsities and previous thresholds into new masks and thresholds.
Keeping the variables and the `tf.cond` on `should_update` at the edge (the
pruned object) keeps this module free of state.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from graph_prune import hparams as hparams_lib
from graph_prune import masking
from graph_prune import schedule


@dataclasses.dataclass(frozen=True)
class WeightPlan:
  """How one weight is pruned.

  Attributes:
    name: the weight's name (what hparam maps match).
    shape: its static shape.
    structure: its `masking.MaskStructure`.
    target_sparsity: the sparsity it reaches at the schedule's end.
    scope: 'layer' (own threshold) or 'global' (the shared threshold).
    note: '' or why the structure differs from what was asked.
  """

  name: str
  shape: Tuple[int, ...]
  structure: masking.MaskStructure
  target_sparsity: float
  scope: str
  note: str = ''


def plan_weights(
  names: Sequence[str],
  shapes: Sequence[Sequence[int]],
  hparams: hparams_lib.PruningHParams,
) -> Tuple[WeightPlan, ...]:
  """Resolves the per-weight settings of `hparams` for the given weights.

  Under `pruning_scope=global`, a weight with its own entry in
  `weight_sparsity_map` keeps its own target and threshold (scope 'layer');
  every other weight shares the global threshold.

  Args:
    names: the weights' names.
    shapes: their static shapes.
    hparams: the pruning hparams.

  Returns:
    One `WeightPlan` per weight, in order.

  Raises:
    WeightMatchError: if several map entries match one weight.
    MaskError: if a weight cannot be masked as asked.
  """
  plans = []
  for name, shape in zip(names, shapes):
    settings = hparams.weight_settings(name)
    structure, note = masking.structure_for(shape, hparams, settings)
    scope = (
      'global'
      if hparams.pruning_scope == 'global' and not settings.has_own_target
      else 'layer'
    )
    plans.append(
      WeightPlan(
        name=name,
        shape=tuple(shape),
        structure=structure,
        target_sparsity=settings.target_sparsity,
        scope=scope,
        note=note,
      )
    )
  return tuple(plans)


def scheduled_sparsities(
  step, plans: Sequence[WeightPlan], hparams: hparams_lib.PruningHParams
) -> List[tf.Tensor]:
  """The schedule's sparsity at `step` for each planned weight."""
  by_target = {}
  for plan in plans:
    if plan.target_sparsity not in by_target:
      by_target[plan.target_sparsity] = schedule.sparsity_at(
        step, hparams, plan.target_sparsity, dtype=tf.float64
      )
  return [by_target[plan.target_sparsity] for plan in plans]


def compute_masks(
  weights: Sequence[tf.Tensor],
  sparsities: Sequence,
  plans: Sequence[WeightPlan],
  hparams: hparams_lib.PruningHParams,
  previous_thresholds: Optional[Sequence] = None,
) -> Tuple[List[tf.Tensor], List[tf.Tensor]]:
  """New masks and thresholds of all planned weights.

  Masks are recomputed from the weights' values (not accumulated), as in
  contrib. Global-scope weights share one threshold, computed at the
  sparsity of the first of them (they all share the global target).

  Args:
    weights: current weight values, one per plan.
    sparsities: sparsity per weight (`scheduled_sparsities`).
    plans: from `plan_weights`.
    hparams: the pruning hparams (threshold_decay).
    previous_thresholds: last thresholds per weight, for threshold_decay.

  Returns:
    (masks, thresholds), one of each per weight.
  """
  count = len(plans)
  if previous_thresholds is None:
    previous_thresholds = [None] * count
  masks = [None] * count
  thresholds = [None] * count
  shared = [i for i, plan in enumerate(plans) if plan.scope == 'global']
  for i, plan in enumerate(plans):
    if plan.scope == 'global':
      continue
    masks[i], thresholds[i] = masking.compute_mask(
      weights[i],
      sparsities[i],
      plan.structure,
      previous_threshold=previous_thresholds[i],
      threshold_decay=hparams.threshold_decay,
      name=plan.name,
    )
  if shared:
    shared_masks, threshold = masking.compute_global_masks(
      [weights[i] for i in shared],
      sparsities[shared[0]],
      [plans[i].structure for i in shared],
      previous_threshold=previous_thresholds[shared[0]],
      threshold_decay=hparams.threshold_decay,
      names=[plans[i].name for i in shared],
    )
    for i, mask in zip(shared, shared_masks):
      masks[i] = mask
      thresholds[i] = threshold
  return masks, thresholds
