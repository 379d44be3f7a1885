"""The mask update of a pruned model, and what reads its result back.

`MaskUpdates` is the mixin that gives `PrunedModel` its update methods:
`mask_update` and `conditional_mask_update` (which run once per worker under
a `tf.distribute` strategy, turn a NaN/Inf weight into an error eagerly, and
assign every mask, threshold, saliency variable and the step all or
nothing), the schedule's sparsity at a step, the masks' current `Sparsity`
and the TensorBoard summaries of both.

It is separate from `pruned_model` because it is a different concern with a
narrow contract: the update only needs the model's state (the
`PrunedWeight`s, unit parameters, coupled groups and the step variable) and
what `plans` resolved once from the hparams; it knows nothing of tracing,
modes or export, which is what the rest of `PrunedModel` is about. The math
itself stays in `plans`, `masking` and `unit_groups`; this module is the
stateful edge that assigns its results.
"""

from typing import Dict, NamedTuple

import tensorflow as tf

from graph_prune.config import hparams as hparams_lib
from graph_prune.masks import criteria
from graph_prune.masks import masking
from graph_prune.masks import unit_groups as unit_groups_lib
from graph_prune.model import distribute
from graph_prune.model import nonfinite
from graph_prune.model import plans as plans_lib
from graph_prune.model import summaries
from graph_prune.model.untracked import Untracked


class Sparsity(NamedTuple):
  """Current mask sparsity: per weight name, and over all masked weights."""

  per_weight: Dict[str, tf.Tensor]
  overall: tf.Tensor


def not_converted(method):
  """Marks a method AutoGraph leaves as it is, when a user's tf.function
  calls it.

  graph_prune's graph code uses `tf.cond` itself and never Python control
  flow on tensors, so converting it gains nothing; but AutoGraph converts
  every function a traced function calls (its source parsed and rewritten
  once per process), which cost seconds of a user's first step: the mask
  update's code and the mode rewrite's.
  """
  return tf.autograph.experimental.do_not_convert(method)


class MaskUpdates:
  """Mixin: the mask update and its read-outs (see module doc).

  A subclass calls `_resolve_update(hparams)` once when built, sets
  `_update_fn` to a `tf.function` of `_update` (held by an `Untracked`), and
  provides `hparams`, `pruned_weights`, `unit_params`, `unit_groups` and
  `last_mask_update_step`.
  """

  def _resolve_update(self, hparams: hparams_lib.PruningHParams) -> None:
    """Resolves from `hparams`, once, all the update reads of them."""
    self._condition = plans_lib.update_condition(hparams)
    self._schedule = plans_lib.model_schedule(hparams)
    self._criterion = plans_lib.criterion_for(hparams)
    self._saliency = plans_lib.saliency_for(hparams)

  @not_converted
  def mask_update(self, step) -> tf.Operation:
    """Recomputes every mask at `step` and records `step` as the last update.

    Under a gradient `prune_option` it first advances each weight's saliency
    (`masks/saliency.py`: g folds in the weight's movement, the old weights
    shift), and the masks rank |w| * g with the new g.

    Inside `strategy.run` the update runs once per worker in cross-replica
    context (through `merge_call`) and the strategy writes the masks into every
    replica's copy.

    Args:
      step: int step (e.g. `optimizer.iterations`); the schedule's position.

    Returns:
      The update op in graph mode; None eagerly.

    Raises:
      NonFiniteWeightError: (eagerly) a weight holds NaN or Inf; inside a
        `tf.function` the same message comes as `InvalidArgumentError`.
        Either way no mask, threshold or step was changed.
    """
    if distribute.in_replica_context():
      return distribute.call_in_cross_replica_context(self.mask_update, step)
    step = tf.cast(step, tf.int64)
    if tf.executing_eagerly():
      with nonfinite.non_finite_as_error():
        self._update_fn.value(step)
      return None
    return self._update(step)

  @not_converted
  def conditional_mask_update(self, step) -> tf.Tensor:
    """Updates the masks if contrib's condition holds at `step`.

    The condition: step in [begin_pruning_step, end_pruning_step] and at
    least `pruning_frequency` steps since the last update.

    Under a gradient `prune_option` every call, updating or not, advances
    each weight's saliency (google-research's semantics), as `mask_update`
    does before it ranks.

    Inside `strategy.run` the condition and the update run once per worker in
    cross-replica context (through `merge_call`, so not from inside a
    `tf.cond` of the replica function) and the strategy writes the masks into
    every replica's copy.

    Args:
      step: int step (e.g. `optimizer.iterations`).

    Returns:
      A bool scalar tensor: whether the masks were updated.

    Raises:
      NonFiniteWeightError: as in `mask_update`.
    """
    if distribute.in_replica_context():
      return distribute.call_in_cross_replica_context(
        self.conditional_mask_update, step
      )
    step = tf.cast(step, tf.int64)

    def do_update():
      with tf.control_dependencies([self._update(step)]):
        return tf.constant(True)

    if tf.executing_eagerly():
      with nonfinite.non_finite_as_error():
        return self._conditional_fn(step)

    def no_update():
      if self._saliency is None:
        return tf.constant(False)
      with tf.control_dependencies([self._advance_saliency()]):
        return tf.constant(False)

    return tf.cond(
      self._condition(step, self.last_mask_update_step),
      do_update,
      no_update,
    )

  @property
  def _conditional_fn(self):
    if not hasattr(self, '_conditional'):
      self._conditional = Untracked(tf.function(self.conditional_mask_update))
    return self._conditional.value

  def _update(self, step):
    step = tf.cast(step, tf.int64)
    pruned = self.pruned_weights
    weight_plans = [w.plan for w in pruned]
    values = _checked_first(pruned)
    states = self._saliency_states(values)
    masks, thresholds = plans_lib.compute_masks(
      values,
      plans_lib.scheduled_sparsities(step, weight_plans),
      weight_plans,
      previous_thresholds=[w.threshold.read_value() for w in pruned],
      groups=self.unit_groups,
      criterion=self._criterion,
      criterion_inputs=(
        None
        if states is None
        else [{criteria.GRADIENT: s.gradient} for s in states]
      ),
    )
    params = unit_groups_lib.param_masks(
      masks,
      [p.plan for p in self.unit_params],
      [p.mask.dtype for p in self.unit_params],
    )
    # All or nothing: every value above is computed after every weight
    # passed its NaN/Inf check (`_checked_first`), the only error an update
    # raises, so each mask can be written as soon as it is computed: the new
    # masks are never all held at once. The saliency's new values are read
    # before any of its variables is written.
    ops = []
    with tf.control_dependencies(_tensors(states)):
      ops.extend(self._assign_saliency(states))
    for w, mask, threshold in zip(pruned, masks, thresholds):
      ops.append(w.mask.assign(tf.cast(mask, w.mask.dtype)))
      ops.append(w.threshold.assign(tf.cast(threshold, w.threshold.dtype)))
    for p, mask in zip(self.unit_params, params):
      ops.append(p.mask.assign(mask))
    with tf.control_dependencies(ops):
      ops.append(self.last_mask_update_step.assign(step))
    return tf.group(ops)

  def _saliency_states(self, values):
    """Each weight's new `saliency.State` from its value, or None."""
    if self._saliency is None:
      return None
    return [
      self._saliency.update(value, w.saliency)
      for value, w in zip(values, self.pruned_weights)
    ]

  def _assign_saliency(self, states):
    """The assigns of new saliency states to the variables (none if None)."""
    if states is None:
      return []
    ops = []
    for w, new in zip(self.pruned_weights, states):
      for variable, value in zip(w.saliency, new):
        if variable is not None:
          ops.append(variable.assign(value))
    return ops

  def _advance_saliency(self):
    """Advances the saliency alone (a call that does not update masks).

    All or nothing too: each weight passes its NaN/Inf check before any
    variable is written.
    """
    values = [
      masking.checked_weight(w.weight.read_value(), w.name)
      for w in self.pruned_weights
    ]
    states = self._saliency_states(values)
    with tf.control_dependencies(_tensors(states)):
      return tf.group(self._assign_saliency(states))

  def scheduled_sparsity(self, step) -> tf.Tensor:
    """The schedule's target sparsity at `step` (hparams.target_sparsity)."""
    return self._schedule(step)

  def sparsity(self) -> Sparsity:
    """The masks' current sparsity, per weight and overall (float32)."""
    per_weight = {}
    zeros = tf.constant(0.0)
    total = 0
    for w in self.pruned_weights:
      fraction = masking.mask_sparsity(w.mask)
      per_weight[w.name] = fraction
      size = w.mask.shape.num_elements()
      zeros += fraction * size
      total += size
    return Sparsity(per_weight, zeros / float(max(total, 1)))

  def write_summaries(self, step) -> None:
    """Writes sparsity and threshold per weight, the schedule's sparsity and
    the last update step to the default `tf.summary` writer.

    Args:
      step: the step to record the summaries at.
    """
    step = tf.cast(step, tf.int64)
    current = self.sparsity()
    for w in self.pruned_weights:
      summaries.scalar(
        f'{w.name}/sparsity', current.per_weight[w.name], step=step
      )
      summaries.scalar(f'{w.name}/threshold', w.threshold, step=step)
    prefix = self.hparams.name
    summaries.scalar(
      f'{prefix}/sparsity', self.scheduled_sparsity(step), step=step
    )
    summaries.scalar(f'{prefix}/overall_sparsity', current.overall, step=step)
    summaries.scalar(
      f'{prefix}/last_mask_update_step', self.last_mask_update_step, step=step
    )


def _checked_first(pruned):
  """The weights' values, each after every weight's NaN/Inf check.

  What is computed from them (masks, thresholds, saliency) waits for all the
  checks, so a weight that fails its check stops the update before any of
  its variables is written.
  """
  checked = [
    masking.checked_weight(w.weight.read_value(), w.name) for w in pruned
  ]
  with tf.control_dependencies(checked):
    return [tf.identity(value) for value in checked]


def _tensors(states):
  """The tensors of a list of `saliency.State`s (none if None)."""
  if states is None:
    return []
  return [t for state in states for t in state if t is not None]
