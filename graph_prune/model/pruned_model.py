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

`apply_pruning` reads as its steps: trace, find the weights, plan each
weight's update (`plans.plan_weights`, which resolves the hparams once),
create the variables, insert the masks. State lives here and only here: one
`PrunedWeight` per masked weight and the last update step. `PrunedModel`
runs the rewritten graph (in either Keras mode) and exports it; its mask
update and the sparsity read-outs come from `mask_update.MaskUpdates`; the
math is in `plans`, `masking` and `schedule`.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from absl import logging
import tensorflow as tf

from graph_prune import errors
from graph_prune import passes
from graph_prune.config import hparams as hparams_lib
from graph_prune.model import distribute
from graph_prune.model import plans as plans_lib
from graph_prune.model import pruned_weights as pruned_weights_lib
from graph_prune.model import tracing
from graph_prune.model.mask_update import MaskUpdates
from graph_prune.model.mask_update import not_converted as _not_converted

# `Sparsity` moved to `mask_update`; re-exported for who imports it from here.
from graph_prune.model.mask_update import Sparsity  # noqa: F401
from graph_prune.model.pruned_weights import PrunedWeight
from graph_prune.model.saved_model_conventions import SavedModelConventions
from graph_prune.model.untracked import Untracked
from graph_prune.passes import graph_ir


class PrunedModel(SavedModelConventions, MaskUpdates, tf.Module):
  """A computation whose prunable weights are used as `weight * mask`.

  Attributes:
    weights: the pruned weights (the original `tf.Variable`s).
    masks: one mask variable per weight, same shape and dtype.
    thresholds: one threshold variable per weight (shared value in global
      scope).
    last_mask_update_step: int64 variable, the step of the last update.
    gradients, old_weights, old_old_weights: under a gradient
      `prune_option`, each weight's saliency g and its old weights
      (`masks/saliency.py`; old_old_weights second order only); else empty.
    hparams: the `PruningHParams`.
    report: what the graph pass did (`passes.RewriteReport`).
    plans: how each weight is pruned (`plans_lib.WeightPlan`).
    pruned_weights: one `PrunedWeight` per masked weight, holding the
      above (which are views of it, in the same order).
  """

  def __init__(
    self,
    traced: tracing.Traced,
    hparams: hparams_lib.PruningHParams,
    pruned_weights: Sequence[PrunedWeight],
    last_mask_update_step: tf.Variable,
    rewritten: Tuple[Any, 'passes.RewriteReport'],
    name: Optional[str] = None,
    keras_model: Any = None,
    training: Optional[bool] = False,
    owners: Optional[Dict[int, Any]] = None,
    units: Tuple[Sequence[Any], Sequence[Any]] = ((), ()),
  ):
    """Holds the pruning state of `traced`; built by `apply_pruning`.

    Args:
      traced: the traced computation.
      hparams: the `PruningHParams`.
      pruned_weights: one `PrunedWeight` per masked weight, in scan order.
      last_mask_update_step: the int64 step variable.
      rewritten: (the rewritten `tf.function`, its `passes.RewriteReport`),
        from `passes.insert_masks`.
      name: the module's name; defaults to `hparams.name`.
      keras_model: the Keras model `traced` was traced from, which
        `__call__(..., training=mode)` traces in another mode; None for other
        computations.
      training: the mode `traced` was traced in.
      owners: id of a captured `tf.Variable` -> the object the model tracks
        it as (`tracing.variable_owners`).
      units: (coupled `unit_groups.GroupPlan`s, `UnitParam`s) from
        `pruned_weights.plan_units` (`unit_groups`, `unit_params`).
    """
    super().__init__(name=name or hparams.name)
    self.hparams = hparams
    self._pruned_weights = Untracked(tuple(pruned_weights))
    # Resolved once: nothing after this reads the hparams.
    self._resolve_update(hparams)
    # Every captured variable is tracked, so that checkpoints and SavedModels
    # hold the model's own weights too: through the object the model itself
    # tracks (a Keras 3 variable wraps the tf.Variable the graph captured),
    # so that a checkpoint of the model and this module stores each weight
    # once.
    owners = owners or {}
    self._model_variables = [
      owners.get(id(v), v) for v in map(distribute.container, traced.variables)
    ]
    # Tracked lists, views of `pruned_weights`: checkpoints and SavedModels
    # key the variables by these attributes (`masks/0`, `thresholds/0`).
    self.masks = [w.mask for w in pruned_weights]
    self.thresholds = [w.threshold for w in pruned_weights]
    states = [w.saliency for w in pruned_weights if w.saliency is not None]
    self.gradients = [s.gradient for s in states]
    self.old_weights = [s.old_weight for s in states]
    self.old_old_weights = [
      s.old_old_weight for s in states if s.old_old_weight is not None
    ]
    self._groups = Untracked(tuple(units[0]))
    self._unit_params = Untracked(tuple(units[1]))
    self.unit_param_masks = [p.mask for p in units[1]]
    self.last_mask_update_step = last_mask_update_step
    fn, self.report = rewritten
    self._fn = Untracked(fn)
    self._training = training
    self._keras_model = Untracked(keras_model)
    self._input_signature = Untracked(traced.input_signature)
    self._mode_fns = Untracked({})  # training mode -> rewritten tf.function
    self._update_fn = Untracked(
      tf.function(lambda step: self._update(step) and None)
    )
    self.__call__ = tf.function(
      self._call, input_signature=traced.input_signature
    )

  @_not_converted
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
      UntraceableError: `training` is a tensor (each mode is a separate
        graph), or is given for a computation that is not a Keras model.
      ArgumentTypeError: `training` is not None, a Python bool or a tensor.
    """
    # The instance attribute `__call__` set in __init__ is a tf.function with
    # the original input signature: SavedModel exports it as the loaded
    # object's `__call__` and as `serving_default`. Python looks `__call__`
    # up on the class, so this forwards to it. The other mode's function is
    # held by an `Untracked`, so it is no signature candidate.
    if training is None or training is self._training:
      if tf.inside_function():
        return passes.call(self._fn.value, *args)
      return self.__dict__['__call__'](*args)
    return passes.call(self._mode_function(training), *args)

  def _call(self, *args):
    return self._fn.value(*args)

  def _mode_function(self, training):
    """The rewritten graph of `training` mode, traced on first use."""
    tracing.check_training(training)
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
        functions[training] = passes.insert_masks(
          traced,
          {w.weight.ref(): w.mask for w in self.pruned_weights},
          param_masks={p.weight.ref(): p.mask for p in self.unit_params},
        ).graph
    return functions[training]

  def _export_variables(self):
    """The model's variables, then masks, thresholds, saliency, the step."""
    return (
      list(self._model_variables)
      + list(self.masks)
      + list(self.thresholds)
      + list(self.unit_param_masks)
      + self.saliency_variables()
      + [self.last_mask_update_step]
    )

  def saliency_variables(self) -> List[tf.Variable]:
    """g and the old weights of every weight (empty for prune_option=weight)."""
    return (
      list(self.gradients) + list(self.old_weights) + list(self.old_old_weights)
    )

  def _export_serve(self):
    return self.__dict__.get('__call__')

  @property
  def keras_model(self) -> Any:
    """The Keras model `apply_pruning` traced, or None for other inputs."""
    return self._keras_model.value

  @property
  def input_signature(self) -> tuple:
    """One `tf.TensorSpec` structure per positional input."""
    return tuple(self._input_signature.value)

  @property
  def pruned_weights(self) -> Tuple[PrunedWeight, ...]:
    """One `PrunedWeight` per masked weight, in the graph's capture order."""
    return self._pruned_weights.value

  @property
  def unit_params(self) -> Tuple[pruned_weights_lib.UnitParam, ...]:
    """The unit parameters masked with their units (`unit_params=all`)."""
    return self._unit_params.value

  @property
  def unit_groups(self) -> Tuple[Any, ...]:
    """The coupled channel groups (`unit_groups=coupled`), as
    `unit_groups.GroupPlan`s over the indices of `weights`."""
    return self._groups.value

  @property
  def weights(self) -> List[tf.Variable]:
    """The pruned weights, aligned with `masks` and `thresholds`."""
    return [w.weight for w in self.pruned_weights]

  @property
  def plans(self) -> Tuple[plans_lib.WeightPlan, ...]:
    """How each weight is pruned, aligned with `weights`."""
    return tuple(w.plan for w in self.pruned_weights)

  @property
  def weight_names(self) -> List[str]:
    return [w.name for w in self.pruned_weights]


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
    ArgumentTypeError: `input_signature` or `training` has the wrong type.
    NoPrunableWeightsError: no weight of the graph can be pruned (the message
      lists every variable seen and why it was skipped).
    UnsupportedStrategyError: called under a `tf.distribute` strategy
      graph_prune does not support (see `graph_prune.model.distribute`).
    StrategyError: called inside `strategy.run`, or the weights were created
      under another strategy than the current one.
  """
  hparams = _resolve_hparams(hparams)
  current = distribute.check_apply_context()
  traced = tracing.trace(
    graph_fn, input_signature=input_signature, training=training
  )
  scan = pruned_weights_lib.find(traced, hparams)
  candidates = tuple(scan.candidates)
  weight_plans = plans_lib.plan_weights(
    [c.name for c in candidates], [c.shape for c in candidates], hparams
  )
  units = pruned_weights_lib.plan_units(scan, candidates, hparams)
  weights = [c.variable for c in candidates]
  with distribute.weights_scope(current, weights, traced.name):
    pruned_weights = pruned_weights_lib.create_variables(
      candidates, weight_plans, plans_lib.saliency_for(hparams)
    )
    unit_params = pruned_weights_lib.create_unit_params(units)
    last_mask_update_step = distribute.state_variable(
      tf.constant(0, tf.int64), graph_ir.step_name(hparams.name)
    )
    result = passes.insert_masks(
      traced,
      {w.name: w.mask for w in pruned_weights},
      scan_result=scan,
      param_masks={p.name: p.mask for p in unit_params},
    )
    report = dataclasses.replace(
      result.report,
      unit_groups=tuple(g.describe() for g in units.found.groups),
    )
    rewritten = (result.graph, report)
    pruned = PrunedModel(
      traced,
      hparams,
      pruned_weights,
      last_mask_update_step,
      rewritten,
      name=name,
      keras_model=graph_fn if tracing.is_keras_model(graph_fn) else None,
      training=training,
      owners=tracing.variable_owners(graph_fn),
      units=(units.groups, unit_params),
    )
  for plan in weight_plans:
    pruned_weights_lib.log_plan(plan)
  for line in report.unit_groups:
    logging.info('graph_prune: coupled channels, %s', line)
  return pruned


def _resolve_hparams(hparams) -> hparams_lib.PruningHParams:
  if isinstance(hparams, str):
    return hparams_lib.parse_hparams(hparams)
  if not isinstance(hparams, hparams_lib.PruningHParams):
    raise errors.HParamTypeError(
      f'hparams must be a spec string or a PruningHParams, got '
      f'{type(hparams).__name__}.'
    )
  return hparams
