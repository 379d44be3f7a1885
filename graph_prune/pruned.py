"""The pruned computation: owns masks, thresholds and the mask update.

`apply_pruning(graph_fn, hparams)` traces `graph_fn`, finds its prunable
weights, creates a mask and a threshold variable next to each, rewrites the
graph so that it uses `weight * mask`, and returns a `PrunedModel`:

    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.9')

    @tf.function
    def train_step(x, y):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, pruned(x))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      pruned.conditional_mask_update(optimizer.iterations)

State lives here and only here: the variables, and the `tf.cond` on the
update condition; the math is in `update`, `masking` and `schedule`.
"""

from typing import Any, Dict, NamedTuple, Optional, Sequence, Union

from absl import logging
import tensorflow as tf

from graph_prune import errors
from graph_prune import hparams as hparams_lib
from graph_prune import masking
from graph_prune import rewrite
from graph_prune import schedule
from graph_prune import tracing
from graph_prune import update


class Sparsity(NamedTuple):
  """Current mask sparsity: per weight name, and over all masked weights."""
  per_weight: Dict[str, tf.Tensor]
  overall: tf.Tensor


class _Untracked:
  """Holds a value out of sight of tf.Module tracking and SavedModel.

  The rewritten function is a `tf.function` with an input signature; if the
  module tracked it, SavedModel would see two signature candidates (it and
  `__call__`) and write no `serving_default`.
  """
  __slots__ = ('value',)

  def __init__(self, value):
    self.value = value


# TensorBoard's scalar plugin reads summaries tagged with this metadata.
# tf.summary.scalar would do the same but needs the tensorboard package, which
# TensorFlow no longer installs; tf.summary.write is core TensorFlow.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
        plugin_name='scalars')).SerializeToString()


def _scalar_summary(tag, value, step):
  return tf.summary.write(tag, tf.cast(value, tf.float32), step=step,
                          metadata=_SCALAR_METADATA)


def _variable(initial_value, name):
  # Masks, thresholds and the step are not trained: under a tf.distribute
  # strategy every replica computes the same update, and ONLY_FIRST_REPLICA
  # lets the assignment run in replica context without a reduction.
  return tf.Variable(
      initial_value, trainable=False, name=name,
      synchronization=tf.VariableSynchronization.ON_WRITE,
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class PrunedModel(tf.Module):
  """A computation whose prunable weights are used as `weight * mask`.

  Attributes:
    weights: the pruned weights (the original `tf.Variable`s).
    masks: one mask variable per weight, same shape and dtype.
    thresholds: one threshold variable per weight (shared value in global
      scope).
    last_mask_update_step: int64 variable, the step of the last update.
    hparams: the `PruningHParams`.
    report: what the graph pass did (`rewrite.RewriteReport`).
    plans: how each weight is pruned (`update.WeightPlan`).
  """

  def __init__(self, traced: tracing.Traced,
               hparams: hparams_lib.PruningHParams,
               scan: 'rewrite.WeightScan', name: Optional[str] = None):
    super().__init__(name=name or hparams.name)
    self.hparams = hparams
    candidates = tuple(scan.candidates)
    names = [c.name for c in candidates]
    self.plans = update.plan_weights(names, [c.shape for c in candidates],
                                     hparams)
    self.weights = [c.variable for c in candidates]
    # Every captured variable is tracked, so that checkpoints and SavedModels
    # hold the model's own weights too.
    self._model_variables = list(traced.variables)
    self.masks = [
        _variable(tf.ones(c.shape, c.dtype), f'{c.name}/mask')
        for c in candidates]
    self.thresholds = [
        _variable(tf.zeros([], masking.score_dtype(c.dtype)),
                  f'{c.name}/threshold') for c in candidates]
    self.last_mask_update_step = _variable(
        tf.constant(0, tf.int64), f'{hparams.name}/last_mask_update_step')
    fn, self.report = rewrite.insert_masks(
        traced, {w.ref(): m for w, m in zip(self.weights, self.masks)},
        scan_result=scan)
    self._fn = _Untracked(fn)
    self._update_fn = _Untracked(tf.function(
        lambda step: self._update(step) and None))
    self.__call__ = tf.function(self._call,
                                input_signature=traced.input_signature)

  def __call__(self, *args):  # pylint: disable=method-hidden
    # The instance attribute `__call__` set in __init__ is a tf.function with
    # the original input signature: SavedModel exports it as the loaded
    # object's `__call__` and as `serving_default`. Python looks `__call__`
    # up on the class, so this forwards to it.
    return self.__dict__['__call__'](*args)

  def _call(self, *args):
    return self._fn.value(*args)

  @property
  def weight_names(self):
    return [plan.name for plan in self.plans]

  def mask_update(self, step) -> tf.Operation:
    """Recomputes every mask at `step` and records `step` as the last update.

    Args:
      step: int step (e.g. `optimizer.iterations`); the schedule's position.

    Returns:
      The update op in graph mode; None eagerly.
    """
    step = tf.cast(step, tf.int64)
    if tf.executing_eagerly():
      self._update_fn.value(step)
      return None
    return self._update(step)

  def conditional_mask_update(self, step) -> tf.Tensor:
    """Updates the masks if contrib's condition holds at `step`.

    The condition: step in [begin_pruning_step, end_pruning_step] and at
    least `pruning_frequency` steps since the last update.

    Args:
      step: int step (e.g. `optimizer.iterations`).

    Returns:
      A bool scalar tensor: whether the masks were updated.
    """
    step = tf.cast(step, tf.int64)

    def do_update():
      with tf.control_dependencies([self._update(step)]):
        return tf.constant(True)

    if tf.executing_eagerly():
      return self._conditional_fn(step)
    return tf.cond(
        schedule.should_update(step, self.last_mask_update_step,
                               self.hparams),
        do_update, lambda: tf.constant(False))

  @property
  def _conditional_fn(self):
    if not hasattr(self, '_conditional'):
      self._conditional = _Untracked(
          tf.function(self.conditional_mask_update))
    return self._conditional.value

  def _update(self, step):
    step = tf.cast(step, tf.int64)
    values = [w.read_value() for w in self.weights]
    sparsities = update.scheduled_sparsities(step, self.plans, self.hparams)
    masks, thresholds = update.compute_masks(
        values, sparsities, self.plans, self.hparams,
        previous_thresholds=[t.read_value() for t in self.thresholds])
    ops = [var.assign(tf.cast(m, var.dtype))
           for var, m in zip(self.masks, masks)]
    ops += [var.assign(tf.cast(t, var.dtype))
            for var, t in zip(self.thresholds, thresholds)]
    ops.append(self.last_mask_update_step.assign(step))
    return tf.group(ops)

  def scheduled_sparsity(self, step) -> tf.Tensor:
    """The schedule's target sparsity at `step` (hparams.target_sparsity)."""
    return schedule.sparsity_at(step, self.hparams)

  def sparsity(self) -> Sparsity:
    """The masks' current sparsity, per weight and overall (float32)."""
    per_weight = {}
    zeros = tf.constant(0.0)
    total = 0
    for plan, mask in zip(self.plans, self.masks):
      fraction = masking.mask_sparsity(mask)
      per_weight[plan.name] = fraction
      size = mask.shape.num_elements()
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
    for plan, threshold in zip(self.plans, self.thresholds):
      _scalar_summary(f'{plan.name}/sparsity', current.per_weight[plan.name],
                        step=step)
      _scalar_summary(f'{plan.name}/threshold', threshold, step=step)
    prefix = self.hparams.name
    _scalar_summary(f'{prefix}/sparsity', self.scheduled_sparsity(step),
                      step=step)
    _scalar_summary(f'{prefix}/overall_sparsity', current.overall,
                      step=step)
    _scalar_summary(f'{prefix}/last_mask_update_step',
                      self.last_mask_update_step, step=step)


def apply_pruning(graph_fn: Any,
                  hparams: Union[str, hparams_lib.PruningHParams] = '',
                  input_signature: Optional[Sequence[Any]] = None,
                  training: Optional[bool] = False,
                  name: Optional[str] = None) -> PrunedModel:
  """Masks every prunable weight of a TF2 computation.

  Args:
    graph_fn: a `tf.function`, a `ConcreteFunction`, a Python callable (with
      `input_signature`), or a Keras model (Keras 3 or tf_keras).
    hparams: a contrib-style spec string or a `PruningHParams`.
    input_signature: the inputs, when `graph_fn` does not define them.
    training: for Keras models, the mode the model is traced in (False:
      inference graph, dropout off, batch norm using moving statistics).
    name: the module's name; defaults to `hparams.name`.

  Returns:
    A `PrunedModel`.

  Raises:
    HParamsError: bad hparams.
    UntraceableError: `graph_fn` cannot be traced into one graph.
    NoPrunableWeightsError: no weight of the graph can be pruned (the message
      lists every variable seen and why it was skipped).
  """
  if isinstance(hparams, str):
    hparams = hparams_lib.parse_hparams(hparams)
  elif not isinstance(hparams, hparams_lib.PruningHParams):
    raise errors.HParamTypeError(
        f'hparams must be a spec string or a PruningHParams, got '
        f'{type(hparams).__name__}.')
  traced = tracing.trace(graph_fn, input_signature=input_signature,
                         training=training)
  scan = rewrite.find_weights(traced, do_not_prune=hparams.do_not_prune)
  if not scan.candidates:
    seen = '; '.join(f'{s.name}: {s.reason}' for s in scan.skipped) or (
        'it captures no variable')
    raise errors.NoPrunableWeightsError(
        f'{traced.name} has no prunable weight (a trainable float variable of '
        f'rank >= 2 read by MatMul, Conv, Einsum or Gather). Seen: {seen}.')
  for entry in hparams.unmatched_map_entries([c.name for c in scan.candidates]):
    logging.warning('graph_prune: hparam map entry %r matches no pruned '
                    'weight of %s.', entry, traced.name)
  pruned = PrunedModel(traced, hparams, scan, name=name)
  for plan in pruned.plans:
    logging.info('graph_prune: masking %s %s, target sparsity %.4g, %s%s',
                 plan.name, list(plan.shape), plan.target_sparsity,
                 plan.scope, f' ({plan.note})' if plan.note else '')
  return pruned
