"""The masked weights: found in the graph, then given a mask and threshold.

`apply_pruning`'s middle steps: `find` the prunable weights of a traced
graph, and `create_variables` for each planned weight, giving one
`PrunedWeight` record per masked weight (the weight, its mask, its threshold,
its saliency state under a gradient `prune_option`, and its
`plans.WeightPlan`), which `PrunedModel` holds.
"""

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from graph_prune import errors
from graph_prune import passes
from graph_prune.config import hparams as hparams_lib
from graph_prune.masks import masking
from graph_prune.masks import saliency as saliency_lib
from graph_prune.masks import unit_groups
from graph_prune.model import distribute
from graph_prune.model import plans as plans_lib
from graph_prune.model import tracing
from graph_prune.passes import channel_groups
from graph_prune.passes import graph_ir
from graph_prune.passes import head_groups
from graph_prune.passes import scan as scan_lib


@dataclasses.dataclass(frozen=True, eq=False)
class PrunedWeight:
  """One masked weight: its variable, mask, threshold and update plan.

  Attributes:
    weight: the pruned weight (the model's `tf.Variable`, or under a strategy
      its distributed container).
    mask: its mask variable, same shape and dtype.
    threshold: its threshold variable (the shared value in global scope).
    plan: how it is pruned (`plans_lib.WeightPlan`).
    saliency: None, or under a gradient `prune_option` its
      `saliency.State` of variables (g, the old weight and, second order,
      the weight before it), non-trainable, initialised to zero.
  """

  weight: Any
  mask: tf.Variable
  threshold: tf.Variable
  plan: plans_lib.WeightPlan
  saliency: Optional[saliency_lib.State] = None

  @property
  def name(self) -> str:
    """The weight's name (what hparam maps match)."""
    return self.plan.name


def find(
  traced: tracing.Traced, hparams: hparams_lib.PruningHParams
) -> 'passes.WeightScan':
  """The prunable weights of `traced`; warns of map entries none matches."""
  scan = passes.find_weights(traced, do_not_prune=hparams.do_not_prune)
  if not scan.candidates:
    seen = '; '.join(f'{s.name}: {s.reason}' for s in scan.skipped) or (
      'it captures no variable'
    )
    raise errors.NoPrunableWeightsError(
      f'{traced.name} has no prunable weight (a trainable float variable of '
      f'rank >= 2 read by MatMul, Conv, Einsum or Gather). Seen: {seen}.'
    )
  if hparams.target_sparsity > 0:
    for skipped in filter(scan_lib.left_dense, scan.skipped):
      logging.warning(
        'graph_prune: %s of %s stays dense: %s.',
        skipped.name,
        traced.name,
        skipped.reason,
      )
  for entry in hparams.unmatched_map_entries([c.name for c in scan.candidates]):
    logging.warning(
      'graph_prune: hparam map entry %r matches no pruned weight of %s.',
      entry,
      traced.name,
    )
  return scan


def create_variables(
  candidates: Sequence[Any],
  weight_plans: Sequence[plans_lib.WeightPlan],
  saliency: Optional[saliency_lib.Saliency] = None,
) -> Tuple[PrunedWeight, ...]:
  """A mask (ones) and a threshold (zero) variable per candidate weight.

  With a `saliency` (`plans.saliency_for`), also its state per weight, all
  zeros: g (`<weight>/gradient`, in the score dtype), the old weight
  (`<weight>/old_weight`) and, second order, `<weight>/old_old_weight`.
  """
  masks = [
    distribute.state_variable(
      tf.ones(c.shape, c.dtype), graph_ir.mask_name(c.name)
    )
    for c in candidates
  ]
  thresholds = [
    distribute.state_variable(
      tf.zeros([], masking.score_dtype(c.dtype)),
      graph_ir.threshold_name(c.name),
    )
    for c in candidates
  ]
  states = [
    None if saliency is None else _saliency_variables(c, saliency.order)
    for c in candidates
  ]
  # Under a strategy the graph captured per-device copies; the model,
  # optimizer and checkpoints hold their distributed containers.
  return tuple(
    PrunedWeight(distribute.container(c.variable), mask, threshold, plan, state)
    for c, mask, threshold, plan, state in zip(
      candidates, masks, thresholds, weight_plans, states
    )
  )


def _saliency_variables(candidate, order: int) -> saliency_lib.State:
  """The zero-initialised saliency state of one weight."""
  name = candidate.name
  dtype = candidate.dtype
  return saliency_lib.State(
    gradient=distribute.state_variable(
      tf.zeros(candidate.shape, masking.score_dtype(dtype)),
      graph_ir.gradient_name(name),
    ),
    old_weight=distribute.state_variable(
      tf.zeros(candidate.shape, dtype), graph_ir.old_weight_name(name)
    ),
    old_old_weight=(
      distribute.state_variable(
        tf.zeros(candidate.shape, dtype), graph_ir.old_old_weight_name(name)
      )
      if order == 2
      else None
    ),
  )


@dataclasses.dataclass(frozen=True, eq=False)
class UnitParam:
  """A unit parameter masked with its units (`unit_params=all`).

  Attributes:
    weight: the parameter (a bias, a BatchNorm scale or shift).
    mask: its mask variable, same shape and dtype, written by each update.
    plan: which kernel unit each position follows.
    name: the parameter's name.
  """

  weight: Any
  mask: tf.Variable
  plan: unit_groups.ParamPlan
  name: str


@dataclasses.dataclass(frozen=True)
class UnitStructure:
  """What `plan_units` found: coupled groups, unit parameters, the analysis.

  Attributes:
    groups: `unit_groups.GroupPlan`s over the pruned weights' indices; with
      `unit_groups=coupled` every unit-pruned weight is in one (a kernel
      coupled to no other is a group on its own).
    params: (name, variable, `unit_groups.ParamPlan`) per unit parameter.
    found: the `channel_groups.ChannelGroups` the plans came from.
  """

  groups: Tuple[unit_groups.GroupPlan, ...] = ()
  params: Tuple[Tuple[str, Any, unit_groups.ParamPlan], ...] = ()
  found: channel_groups.ChannelGroups = channel_groups.ChannelGroups()


def plan_units(
  scan: 'passes.WeightScan',
  candidates: Sequence[Any],
  hparams: hparams_lib.PruningHParams,
) -> UnitStructure:
  """Finds the unit parameters and coupled groups of unit-pruned kernels."""
  params = hparams.unit_params == 'all'
  coupled = hparams.unit_groups == 'coupled'
  if hparams.granularity != 'unit' or not (params or coupled):
    return UnitStructure()
  index = {c.name: i for i, c in enumerate(candidates)}
  infos = scan.analysis.infos
  variables = {info.name: info.variable for info in infos}
  # The producers and depthwise convs: top-level consumers of the kernels.
  consumers = {
    path: c.name
    for c in candidates
    for _, path in c.consumers
    if scan_lib.PATH_SEPARATOR not in path
  }
  found = channel_groups.analyse(
    scan.analysis, consumers, variables, coupled=coupled, params=params
  )
  if coupled:
    found = _with_heads(found, scan.analysis, consumers, variables, params)
  groups = []
  grouped = set()
  for group in found.groups:
    members = tuple(
      unit_groups.MemberPlan(index[m.weight], m.axis, m.channels)
      for m in group.members
    )
    grouped.update(m.index for m in members)
    groups.append(unit_groups.GroupPlan(members, group.channels, group.fixed))
  if coupled:
    groups.extend(
      unit_groups.singleton(i, c.shape)
      for i, c in enumerate(candidates)
      if i not in grouped
    )
  param_plans = tuple(
    (
      p.param,
      variables[p.param],
      unit_groups.ParamPlan(
        tuple(None if s is None else (index[s[0]], s[1]) for s in p.sources),
        p.axis,
        p.kernel_axis,
        tuple(variables[p.param].shape.as_list()),
      ),
    )
    for p in found.params
  )
  return UnitStructure(tuple(groups), param_plans, found)


def _with_heads(found, analysis, consumers, variables, params):
  """`found` with the attention heads' groups (`head_groups`) added, but
  for heads whose kernels are already in a channel group, and with their
  biases as unit parameters (`params`: `unit_params=all`).

  A channel group whose channels all stay (the residual stream, tied to the
  embeddings) takes nothing: an output kernel Keras lowered to a matrix
  product joins it along the hidden size, and leaves it for its heads.
  """
  fixed = [len(g.fixed) == g.channels for g in found.groups]
  taken = {
    m.weight
    for g, stays in zip(found.groups, fixed)
    if not stays
    for m in g.members
  }
  heads = head_groups.analyse(analysis, consumers, variables)
  groups = tuple(
    g for g in heads.groups if not taken & {m.weight for m in g.members}
  )
  kept = {m.weight for g in groups for m in g.members}
  _warn_headless(analysis, consumers, variables, taken | kept)
  if groups:
    _warn_embeddings(analysis, consumers)
  channel_groups_left = []
  for g, stays in zip(found.groups, fixed):
    if stays:
      members = tuple(m for m in g.members if m.weight not in kept)
      if not members:
        continue
      g = dataclasses.replace(g, members=members)
    channel_groups_left.append(g)
  moved = {m.weight for g in found.groups for m in g.members} & kept
  channel_params = tuple(
    p
    for p in found.params
    if not any(s is not None and s[0] in moved for s in p.sources)
  )
  biases = tuple(
    p
    for p in heads.params
    if params and all(s is None or s[0] in kept for s in p.sources)
  )
  return dataclasses.replace(
    found,
    groups=tuple(channel_groups_left) + groups,
    params=channel_params + biases,
  )


# Ops that read an attention projection's kernel (directly, or reshaped to
# rank 2 when Keras lowers an einsum).
_PROJECTION_OPS = ('Einsum', 'BatchMatMulV2', 'BatchMatMulV3', 'MatMul')


def _consumer_types(analysis, consumers) -> Dict[str, Tuple[str, str]]:
  """Top-level node -> (the kernel it consumes, its op type)."""
  graph = analysis.concrete_function.graph
  found = {}
  for node, name in consumers.items():
    try:
      found[node] = (name, graph.get_operation_by_name(node).type)
    except KeyError:
      continue
  return found


def _warn_headless(analysis, consumers, variables, grouped) -> None:
  """Warns of projection kernels of rank 3 left out of every group.

  A `[hidden, heads, head_dim]` kernel no head group took is pruned by its
  last axis alone, which removes no head; the user asked for coupled groups
  and would not know.
  """
  lost = {
    name
    for name, op_type in _consumer_types(analysis, consumers).values()
    if op_type in _PROJECTION_OPS
    and name not in grouped
    and name in variables
    and variables[name].shape.rank == 3
  }
  if lost:
    logging.warning(
      'graph_prune: unit_groups=coupled found no attention heads for %s; '
      'they are pruned by their last axis alone, which shrink cannot remove '
      'as heads. The heads walk did not reach an output kernel from them '
      '(an op it does not follow between them); where Keras lowered the '
      'einsums to transposes and matrix products (a fixed sequence length), '
      'an open one may help (keras.Input((None, features))).',
      ', '.join(sorted(lost)),
    )


def _warn_embeddings(analysis, consumers) -> None:
  """Warns of unit-pruned lookups (embeddings) in a transformer.

  Their units are the hidden size of the residual stream, which shrink
  keeps; zeroing them removes features of every token and nothing from the
  model. Pruned on request all the same (`do_not_prune` is the user's).
  """
  lookups = {
    name
    for name, op_type in _consumer_types(analysis, consumers).values()
    if op_type in ('ResourceGather', 'GatherV2', 'Gather')
  }
  if lookups:
    logging.warning(
      'graph_prune: %s unit-pruned along the hidden size of a transformer: '
      'shrink keeps those units (the residual stream keeps its width) and '
      'zeroing them removes features of every token; leave embeddings '
      'dense with do_not_prune=[embeddings].',
      ', '.join(sorted(lookups)),
    )


def create_unit_params(structure: UnitStructure) -> Tuple[UnitParam, ...]:
  """A mask variable (ones) per unit parameter."""
  return tuple(
    UnitParam(
      distribute.container(variable),
      distribute.state_variable(
        tf.ones(variable.shape, variable.dtype), graph_ir.mask_name(name)
      ),
      plan,
      name,
    )
    for name, variable, plan in structure.params
  )


def log_plan(plan: plans_lib.WeightPlan) -> None:
  logging.info(
    'graph_prune: masking %s %s, target sparsity %.4g, %s%s',
    plan.name,
    list(plan.shape),
    plan.target_sparsity,
    plan.scope,
    f' ({plan.note})' if plan.note else '',
  )
