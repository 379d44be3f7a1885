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

import contextlib
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

from absl import logging
import tensorflow as tf

from graph_prune import distribute
from graph_prune import errors
from graph_prune import hparams as hparams_lib
from graph_prune import masking
from graph_prune import passes as rewrite
from graph_prune import plans as update
from graph_prune import schedule
from graph_prune import tracing


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
  plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name='scalars')
).SerializeToString()


def _scalar_summary(tag, value, step):
  return tf.summary.write(
    tag, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA
  )


def _variable(initial_value, name):
  # Masks, thresholds and the step are not trained. Under a tf.distribute
  # strategy they are MirroredVariables (ON_WRITE: a copy per device, every
  # write goes to every copy). The update writes them in cross-replica context
  # (see `mask_update`); ONLY_FIRST_REPLICA makes a write made in replica
  # context copy the first replica's value to all. distribute.py explains.
  return tf.Variable(
    initial_value,
    trainable=False,
    name=name,
    synchronization=tf.VariableSynchronization.ON_WRITE,
    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
  )


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

  def __init__(
    self,
    traced: tracing.Traced,
    hparams: hparams_lib.PruningHParams,
    scan: 'rewrite.WeightScan',
    name: Optional[str] = None,
    keras_model: Any = None,
    training: Optional[bool] = False,
    owners: Optional[Dict[int, Any]] = None,
  ):
    """Creates the masks and rewrites `traced`; see `apply_pruning`.

    Args:
      traced: the traced computation.
      hparams: the `PruningHParams`.
      scan: `rewrite.find_weights(traced, ...)`: the weights to mask.
      name: the module's name; defaults to `hparams.name`.
      keras_model: the Keras model `traced` was traced from, which
        `__call__(..., training=mode)` traces in another mode; None for other
        computations.
      training: the mode `traced` was traced in.
      owners: id of a captured `tf.Variable` -> the object the model tracks
        it as (`tracing.variable_owners`).
    """
    super().__init__(name=name or hparams.name)
    self.hparams = hparams
    candidates = tuple(scan.candidates)
    names = [c.name for c in candidates]
    self.plans = update.plan_weights(
      names, [c.shape for c in candidates], hparams
    )
    # Under a strategy the graph captured per-device copies; the model,
    # optimizer and checkpoints hold their distributed containers.
    self._weights = _Untracked(
      [distribute.container(c.variable) for c in candidates]
    )
    # Every captured variable is tracked, so that checkpoints and SavedModels
    # hold the model's own weights too: through the object the model itself
    # tracks (a Keras 3 variable wraps the tf.Variable the graph captured),
    # so that a checkpoint of the model and this module stores each weight
    # once.
    owners = owners or {}
    self._model_variables = [
      owners.get(id(v), v) for v in map(distribute.container, traced.variables)
    ]
    self.masks = [
      _variable(tf.ones(c.shape, c.dtype), f'{c.name}/mask') for c in candidates
    ]
    self.thresholds = [
      _variable(
        tf.zeros([], masking.score_dtype(c.dtype)), f'{c.name}/threshold'
      )
      for c in candidates
    ]
    self.last_mask_update_step = _variable(
      tf.constant(0, tf.int64), f'{hparams.name}/last_mask_update_step'
    )
    fn, self.report = rewrite.insert_masks(
      traced, dict(zip(names, self.masks)), scan_result=scan
    )
    self._fn = _Untracked(fn)
    self._training = training
    self._keras_model = _Untracked(keras_model)
    self._input_signature = _Untracked(traced.input_signature)
    self._mode_fns = _Untracked({})  # training mode -> rewritten tf.function
    self._update_fn = _Untracked(
      tf.function(lambda step: self._update(step) and None)
    )
    self.__call__ = tf.function(
      self._call, input_signature=traced.input_signature
    )

  def __call__(
    self,
    *args,  # pylint: disable=method-hidden
    training: Optional[bool] = None,
  ):
    """Runs the pruned computation.

    Args:
      *args: inputs matching the traced input signature.
      training: for Keras models, the mode. None runs the graph
        `apply_pruning` traced (its `training` argument: inference by
        default); True the training graph (dropout active, batch norm using
        batch statistics and updating its moving statistics); False the
        inference graph. A mode's graph `apply_pruning` did not trace is
        traced and rewritten on first use, with the same masks.

    Returns:
      The computation's outputs.

    Raises:
      UntraceableError: `training` is not a Python bool or None, or is given
        for a computation that is not a Keras model.
    """
    # The instance attribute `__call__` set in __init__ is a tf.function with
    # the original input signature: SavedModel exports it as the loaded
    # object's `__call__` and as `serving_default`. Python looks `__call__`
    # up on the class, so this forwards to it. The other mode's function is
    # held by an `_Untracked`, so it is no signature candidate.
    if training is None or training is self._training:
      return self.__dict__['__call__'](*args)
    return self._mode_function(training)(*args)

  def _call(self, *args):
    return self._fn.value(*args)

  def _mode_function(self, training):
    """The rewritten graph of `training` mode, traced on first use."""
    if not isinstance(training, bool):
      raise errors.UntraceableError(
        f'training must be None, True or False, got {training!r}; pass a '
        'Python bool (each mode is a separate graph).'
      )
    functions = self._mode_fns.value
    if training not in functions:
      if self.keras_model is None:
        raise errors.UntraceableError(
          f'training={training} selects the mode of a Keras model, but '
          f'{self.name} was not traced from one; apply_pruning a function '
          'of the wanted mode instead.'
        )
      # Out of any tf.function being traced (the first call is usually in a
      # training step): tracing and rewriting build functions of their own.
      with tf.init_scope():
        traced = tracing.trace(
          self.keras_model,
          input_signature=self.input_signature,
          training=training,
        )
        functions[training], _ = rewrite.insert_masks(
          traced, {w.ref(): m for w, m in zip(self.weights, self.masks)}
        )
    return functions[training]

  @property
  def keras_model(self) -> Any:
    """The Keras model `apply_pruning` traced, or None for other inputs."""
    return self._keras_model.value

  @property
  def input_signature(self) -> tuple:
    """One `tf.TensorSpec` structure per positional input."""
    return tuple(self._input_signature.value)

  @property
  def weights(self) -> List[tf.Variable]:
    """The pruned weights, aligned with `masks` and `thresholds`."""
    return list(self._weights.value)

  @property
  def weight_names(self):
    return [plan.name for plan in self.plans]

  def mask_update(self, step) -> tf.Operation:
    """Recomputes every mask at `step` and records `step` as the last update.

    Inside `strategy.run` the update runs once per worker in cross-replica
    context (through `merge_call`) and the strategy writes the masks into every
    replica's copy.

    Args:
      step: int step (e.g. `optimizer.iterations`); the schedule's position.

    Returns:
      The update op in graph mode; None eagerly.
    """
    if distribute.in_replica_context():
      return distribute.call_in_cross_replica_context(self.mask_update, step)
    step = tf.cast(step, tf.int64)
    if tf.executing_eagerly():
      self._update_fn.value(step)
      return None
    return self._update(step)

  def conditional_mask_update(self, step) -> tf.Tensor:
    """Updates the masks if contrib's condition holds at `step`.

    The condition: step in [begin_pruning_step, end_pruning_step] and at
    least `pruning_frequency` steps since the last update.

    Inside `strategy.run` the condition and the update run once per worker in
    cross-replica context (through `merge_call`, so not from inside a
    `tf.cond` of the replica function) and the strategy writes the masks into
    every replica's copy.

    Args:
      step: int step (e.g. `optimizer.iterations`).

    Returns:
      A bool scalar tensor: whether the masks were updated.
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
      return self._conditional_fn(step)
    return tf.cond(
      schedule.should_update(step, self.last_mask_update_step, self.hparams),
      do_update,
      lambda: tf.constant(False),
    )

  @property
  def _conditional_fn(self):
    if not hasattr(self, '_conditional'):
      self._conditional = _Untracked(tf.function(self.conditional_mask_update))
    return self._conditional.value

  def _update(self, step):
    step = tf.cast(step, tf.int64)
    values = [w.read_value() for w in self.weights]
    sparsities = update.scheduled_sparsities(step, self.plans, self.hparams)
    masks, thresholds = update.compute_masks(
      values,
      sparsities,
      self.plans,
      self.hparams,
      previous_thresholds=[t.read_value() for t in self.thresholds],
    )
    ops = [
      var.assign(tf.cast(m, var.dtype)) for var, m in zip(self.masks, masks)
    ]
    ops += [
      var.assign(tf.cast(t, var.dtype))
      for var, t in zip(self.thresholds, thresholds)
    ]
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
      _scalar_summary(
        f'{plan.name}/sparsity', current.per_weight[plan.name], step=step
      )
      _scalar_summary(f'{plan.name}/threshold', threshold, step=step)
    prefix = self.hparams.name
    _scalar_summary(
      f'{prefix}/sparsity', self.scheduled_sparsity(step), step=step
    )
    _scalar_summary(f'{prefix}/overall_sparsity', current.overall, step=step)
    _scalar_summary(
      f'{prefix}/last_mask_update_step', self.last_mask_update_step, step=step
    )


def apply_pruning(
  graph_fn: Any,
  hparams: Union[str, hparams_lib.PruningHParams] = '',
  input_signature: Optional[Sequence[Any]] = None,
  training: Optional[bool] = False,
  name: Optional[str] = None,
) -> PrunedModel:
  """Masks every prunable weight of a TF2 computation.

  Args:
    graph_fn: a `tf.function`, a `ConcreteFunction`, a Python callable (with
      `input_signature`), or a Keras model (Keras 3 or tf_keras).
    hparams: a contrib-style spec string or a `PruningHParams`.
    input_signature: the inputs, when `graph_fn` does not define them.
    training: for Keras models, the mode the model is traced in (False:
      inference graph, dropout off, batch norm using moving statistics), the
      mode `pruned(x)` runs; `pruned(x, training=True)` runs the other mode,
      traced on first use with the same masks.
    name: the module's name; defaults to `hparams.name`.

  Returns:
    A `PrunedModel`.

  Raises:
    HParamsError: bad hparams.
    UntraceableError: `graph_fn` cannot be traced into one graph.
    NoPrunableWeightsError: no weight of the graph can be pruned (the message
      lists every variable seen and why it was skipped).
    UnsupportedStrategyError: called under a `tf.distribute` strategy
      graph_prune does not support (see `graph_prune.distribute`).
    StrategyError: called inside `strategy.run`, or the weights were created
      under another strategy than the current one.
  """
  if isinstance(hparams, str):
    hparams = hparams_lib.parse_hparams(hparams)
  elif not isinstance(hparams, hparams_lib.PruningHParams):
    raise errors.HParamTypeError(
      f'hparams must be a spec string or a PruningHParams, got '
      f'{type(hparams).__name__}.'
    )
  current = tf.distribute.get_strategy()
  distribute.check_strategy(current)
  if distribute.in_replica_context():
    raise errors.StrategyError(
      'apply_pruning was called inside strategy.run; call it once under '
      'strategy.scope(), where the model was built.'
    )
  traced = tracing.trace(
    graph_fn, input_signature=input_signature, training=training
  )
  scan = rewrite.find_weights(traced, do_not_prune=hparams.do_not_prune)
  if not scan.candidates:
    seen = '; '.join(f'{s.name}: {s.reason}' for s in scan.skipped) or (
      'it captures no variable'
    )
    raise errors.NoPrunableWeightsError(
      f'{traced.name} has no prunable weight (a trainable float variable of '
      f'rank >= 2 read by MatMul, Conv, Einsum or Gather). Seen: {seen}.'
    )
  for entry in hparams.unmatched_map_entries([c.name for c in scan.candidates]):
    logging.warning(
      'graph_prune: hparam map entry %r matches no pruned weight of %s.',
      entry,
      traced.name,
    )
  keras_model = graph_fn if tracing.is_keras_model(graph_fn) else None
  with _strategy_scope(current, scan, traced.name):
    pruned = PrunedModel(
      traced,
      hparams,
      scan,
      name=name,
      keras_model=keras_model,
      training=training,
      owners=tracing.variable_owners(graph_fn),
    )
  for plan in pruned.plans:
    logging.info(
      'graph_prune: masking %s %s, target sparsity %.4g, %s%s',
      plan.name,
      list(plan.shape),
      plan.target_sparsity,
      plan.scope,
      f' ({plan.note})' if plan.note else '',
    )
  return pruned


def _strategy_scope(current, scan, what):
  """The scope the masks are created in: the weights' strategy.

  Masks must be distributed like the weights they multiply. Under the
  weights' strategy's scope (or with plain weights) that is the current
  scope; called outside any scope with distributed weights, apply_pruning
  enters their strategy's scope itself.
  """
  owner = distribute.strategy_of([c.variable for c in scan.candidates])
  default = not tf.distribute.has_strategy()
  if owner is None:
    if not default and current.num_replicas_in_sync > 1:
      raise errors.StrategyError(
        f'The weights of {what} were created outside '
        f'{type(current).__name__}.scope(); build the model under the '
        'scope apply_pruning is called in.'
      )
    return contextlib.nullcontext()
  distribute.check_strategy(owner)
  if default:
    return owner.scope()
  if owner is not current:
    raise errors.StrategyError(
      f'The weights of {what} were created under another '
      f'{type(owner).__name__} than the current {type(current).__name__}; '
      'call apply_pruning under the scope the model was built in.'
    )
  return contextlib.nullcontext()
