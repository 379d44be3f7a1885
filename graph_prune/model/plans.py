"""The mask update as pure functions: plan once, then compute masks per step.

`plan_weights` resolves, once and outside traced code, everything the update
of each weight needs: its structure, target, scope, threshold decay and its
schedule (a function of the step). `update_condition` resolves when masks
update, `model_schedule` the schedule the model reports. `compute_masks`
then turns weight values, sparsities and previous thresholds into new masks
and thresholds; nothing after planning reads the hparams. Keeping the
variables and the `tf.cond` on the condition at the edge (the pruned model)
keeps this module free of state.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from graph_prune import errors
from graph_prune.config import hparams as hparams_lib
from graph_prune.masks import batched_masks
from graph_prune.masks import criteria
from graph_prune.masks import masking
from graph_prune.masks import saliency as saliency_lib
from graph_prune.masks import schedule as schedule_lib
from graph_prune.masks import unit_groups


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
    threshold_decay: contrib's EMA factor of the threshold, in [0, 1).
    schedule: the weight's sparsity as a function of the step
      (`schedule.PolynomialSchedule` towards `target_sparsity`).
  """

  name: str
  shape: Tuple[int, ...]
  structure: masking.MaskStructure
  target_sparsity: float
  scope: str
  note: str = ''
  threshold_decay: float = 0.0
  schedule: Optional[schedule_lib.PolynomialSchedule] = None

  def sparsity(self, step) -> tf.Tensor:
    """The schedule's sparsity at `step`, float64 (exact round(s * n))."""
    return self.schedule(step, dtype=tf.float64)


# Resolved once from the hparams: when the masks update.
update_condition = schedule_lib.update_condition


def model_schedule(
  hparams: hparams_lib.PruningHParams,
) -> schedule_lib.PolynomialSchedule:
  """Resolved once from the hparams: the schedule towards their own target.

  What the model reports as its scheduled sparsity
  (`hparams.target_sparsity`). It equals the `WeightPlan.schedule` of every
  weight without its own target in `weight_sparsity_map`, both built by
  `schedule.polynomial_schedule`; it is resolved here, not taken from a
  plan, because when every weight has its own target no plan follows it.
  """
  return schedule_lib.polynomial_schedule(hparams)


def criterion_for(hparams: hparams_lib.PruningHParams) -> criteria.Criterion:
  """Resolved once from the hparams: what the masks rank weights by.

  `prune_option` names a row of `criteria.PRUNE_OPTIONS`: 'weight' is
  |w| (`criteria.MAGNITUDE`), the gradient options |w| * g.
  """
  option = hparams.prune_option
  if option not in criteria.PRUNE_OPTIONS:
    raise errors.HParamsError(
      f'prune_option={option} prunes one-shot from calibration data, not '
      'during training: call graph_prune.prune_oneshot(model, '
      'calibration_data, hparams), or train with prune_option='
      + '|'.join(criteria.PRUNE_OPTIONS)
      + '.'
    )
  return criteria.PRUNE_OPTIONS[option]


def saliency_for(
  hparams: hparams_lib.PruningHParams,
) -> Optional[saliency_lib.Saliency]:
  """Resolved once from the hparams: the saliency the update keeps, or None.

  A gradient `prune_option` keeps g (and the old weights) per weight, which
  every call of the update advances (`saliency.Saliency.update`) before the
  masks rank |w| * g; 'weight' keeps none.
  """
  return saliency_lib.for_option(
    hparams.prune_option, hparams.gradient_decay_rate
  )


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
        threshold_decay=hparams.threshold_decay,
        schedule=schedule_lib.polynomial_schedule(
          hparams, settings.target_sparsity
        ),
      )
    )
  return tuple(plans)


def scheduled_sparsities(step, plans: Sequence[WeightPlan]) -> List[tf.Tensor]:
  """The schedule's sparsity at `step` for each planned weight."""
  by_schedule = {}
  for plan in plans:
    if plan.schedule not in by_schedule:
      by_schedule[plan.schedule] = plan.sparsity(step)
  return [by_schedule[plan.schedule] for plan in plans]


def compute_masks(
  weights: Sequence[tf.Tensor],
  sparsities: Sequence,
  plans: Sequence[WeightPlan],
  previous_thresholds: Optional[Sequence] = None,
  groups: Sequence[unit_groups.GroupPlan] = (),
  criterion: masking.CriterionLike = criteria.MAGNITUDE,
  criterion_inputs: Optional[Sequence[criteria.Inputs]] = None,
) -> Tuple[List[tf.Tensor], List[tf.Tensor]]:
  """New masks and thresholds of all planned weights.

  Masks are recomputed from the weights' values (not accumulated), as in
  contrib. Global-scope weights share one threshold, computed at the
  sparsity of the first of them (they all share the global target). Small
  layer-scope weights are computed together and mid-size ones traced once
  per shape (`batched_masks`), which keeps the update's graph, and so its
  first trace, small on models with many weights; the masks are the same as
  one weight at a time.

  Args:
    weights: current weight values, one per plan.
    sparsities: sparsity per weight (`scheduled_sparsities`).
    plans: from `plan_weights`.
    previous_thresholds: last thresholds per weight, for threshold_decay.
    groups: coupled channel groups (`unit_groups=coupled`): their members
      are pruned channel by channel together, each group on the schedule,
      scope and method of its first member.
    criterion: what every path ranks weights by (`criteria`; a name in
      `criteria.CRITERIA` or a `criteria.Criterion`), |w| by default.
    criterion_inputs: per weight, the extra inputs the criterion declares,
      by name (None: none for any weight).

  Returns:
    (masks, thresholds), one of each per weight.

  Raises:
    UnknownCriterionError, CriterionInputError: a bad criterion or inputs.
  """
  count = len(plans)
  if previous_thresholds is None:
    previous_thresholds = [None] * count
  criterion = criteria.resolve(criterion)
  inputs = (
    list(criterion_inputs) if criterion_inputs is not None else [None] * count
  )
  masks, thresholds = _group_masks(
    weights, sparsities, plans, previous_thresholds, groups, criterion, inputs
  )
  grouped = {m.index for g in groups for m in g.members}
  shared = [
    i
    for i, plan in enumerate(plans)
    if plan.scope == 'global' and i not in grouped
  ]
  together = []
  by_shape = batched_masks.ByShape()
  for i, plan in enumerate(plans):
    if plan.scope == 'global' or i in grouped:
      continue
    weight = tf.convert_to_tensor(weights[i])
    if batched_masks.batchable(
      weight.shape, weight.dtype, plan.structure, plan.threshold_decay
    ):
      together.append(i)
      continue
    if batched_masks.selectable(
      weight.shape, weight.dtype, plan.structure, plan.threshold_decay
    ):
      masks[i], thresholds[i] = by_shape(
        weight,
        sparsities[i],
        plan.structure,
        name=plan.name,
        criterion=criterion,
        inputs=inputs[i],
      )
      continue
    masks[i], thresholds[i] = masking.compute_mask(
      weight,
      sparsities[i],
      plan.structure,
      previous_threshold=previous_thresholds[i],
      threshold_decay=plan.threshold_decay,
      name=plan.name,
      criterion=criterion,
      inputs=inputs[i],
    )
  if together:
    results = batched_masks.compute_masks_together(
      [weights[i] for i in together],
      [sparsities[i] for i in together],
      [plans[i].structure for i in together],
      names=[plans[i].name for i in together],
      criterion=criterion,
      inputs=[inputs[i] for i in together],
    )
    for i, (mask, threshold) in zip(together, results):
      masks[i], thresholds[i] = mask, threshold
  if shared:
    shared_masks, threshold = masking.compute_global_masks(
      [weights[i] for i in shared],
      sparsities[shared[0]],
      [plans[i].structure for i in shared],
      previous_threshold=previous_thresholds[shared[0]],
      threshold_decay=plans[shared[0]].threshold_decay,
      names=[plans[i].name for i in shared],
      criterion=criterion,
      inputs=[inputs[i] for i in shared],
    )
    for i, mask in zip(shared, shared_masks):
      masks[i] = mask
      thresholds[i] = threshold
  return masks, thresholds


def _group_masks(
  weights, sparsities, plans, previous_thresholds, groups, criterion, inputs
):
  """`unit_groups.compute_group_masks` with each group's first member's plan."""
  if not groups:
    return [None] * len(plans), [None] * len(plans)
  firsts = [g.members[0].index for g in groups]
  return unit_groups.compute_group_masks(
    weights,
    groups,
    [sparsities[i] for i in firsts],
    [plans[i].structure for i in firsts],
    [plans[i].scope for i in firsts],
    previous_thresholds=[previous_thresholds[i] for i in firsts],
    threshold_decay=plans[firsts[0]].threshold_decay,
    names=[plan.name for plan in plans],
    criterion=criterion,
    inputs=inputs,
  )
