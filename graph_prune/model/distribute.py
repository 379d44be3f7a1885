"""Pruning under `tf.distribute`: supported strategies and replica-local reads.

Supported strategies: the default (no strategy), `OneDeviceStrategy`,
`MirroredStrategy` (several devices of one machine) and
`MultiWorkerMirroredStrategy` (several machines). Build the model, call
`apply_pruning` and build the optimizer under `strategy.scope()`, then train
inside `strategy.run`, e.g. with `train.strategies.make_train_step`:

    strategy = strategies.make_strategy('mirrored', num_cpu_devices=2)
    with strategy.scope():
      model = build_model()
      pruned = graph_prune.apply_pruning(model, spec)
      optimizer = keras.optimizers.SGD(0.1)
    step = strategies.make_train_step(
        strategy, pruned, model.trainable_variables, optimizer,
        per_example_loss, global_batch_size, training=True)
    for x, y in strategy.experimental_distribute_dataset(dataset):
      loss, updated = step(x, y)

`graph_prune.train.strategies` builds the strategy a `--strategy` flag names
and the distributed training step.

How the variables stay in sync:
  * Masks, thresholds and the last update step are `MirroredVariable`s
    (`synchronization=ON_WRITE`): one copy per device, every write applied to
    every copy, so the forward pass of each replica reads its own local copy
    and all copies hold the same value. They are not trainable.
  * The mask update runs once per worker in cross-replica context: called
    from `strategy.run`, `PrunedModel.mask_update` and
    `conditional_mask_update` hand over to `merge_call`, compute the masks
    from the first local copy of each weight, and the strategy writes the
    result into every copy. (Updating in replica context instead would also
    need `merge_call` for the synchronised write, and TensorFlow does not
    allow one inside the update's `tf.cond`.) The weights are identical on
    every replica (the optimizer applies the same all-reduced gradient to
    each copy) and the mask computation is deterministic, so every worker
    writes the same masks.
  * `aggregation=ONLY_FIRST_REPLICA` only matters for a write made in
    replica context (e.g. a user's `mask.assign` inside `strategy.run`): the
    strategy then copies the first replica's value to all, which is right for
    a value every replica computes identically (SUM would multiply it, MEAN
    is not allowed for the int64 step, NONE would update one copy only).
  * The rewritten function is traced once per replica (TF retraces
    functions per device under a multi-device strategy); each trace reads
    that replica's copies of weights and masks (see `replica_local`), so a
    `GradientTape` in the replica sees its own variables. Variables the
    graph itself writes (batch norm statistics of a training graph, a
    dropout seed) are written in the replica's own copy, as Keras 3 does for
    them (their aggregation is NONE).

`ParameterServerStrategy`, `TPUStrategy` and `CentralStorageStrategy` keep
variables away from the replicas (on parameter servers, on TPU hosts, on one
central device) and are not supported: `apply_pruning` under them raises
`errors.UnsupportedStrategyError`.
"""

import contextlib
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.passes import replicas


def _supported_classes():
  return (
    tf.distribute.MirroredStrategy,
    tf.distribute.MultiWorkerMirroredStrategy,
    tf.distribute.OneDeviceStrategy,
  )


def check_strategy(strategy: tf.distribute.Strategy) -> None:
  """Raises `errors.UnsupportedStrategyError` for an unsupported `strategy`.

  Args:
    strategy: a `tf.distribute.Strategy` (the default strategy passes).

  Raises:
    errors.UnsupportedStrategyError: naming the strategy and the supported ones.
  """
  if strategy is _tf_internal.default_strategy() or isinstance(
    strategy, _supported_classes()
  ):
    return
  raise errors.UnsupportedStrategyError(
    f'graph_prune does not support {type(strategy).__name__} (nor any '
    'parameter server, TPU or central storage strategy); use '
    'MirroredStrategy, MultiWorkerMirroredStrategy, OneDeviceStrategy or no '
    'strategy.'
  )


# Replica-local variables.


# The variable-level helpers live with the graph pass that captures
# variables (passes may not import this edge module); re-exported here.
in_replica_context = replicas.in_replica_context
container = replicas.container
local_copies = replicas.local_copies
replica_local = replicas.replica_local


def strategy_of(variables: Sequence[Any]) -> Optional[tf.distribute.Strategy]:
  """The strategy the distributed variables among `variables` belong to.

  Args:
    variables: `tf.Variable`s (per-device copies or containers).

  Returns:
    The strategy, or None when no variable is distributed.

  Raises:
    errors.StrategyError: the variables belong to different strategies.
  """
  found = None
  for v in variables:
    v = container(v)
    if not isinstance(v, tf.distribute.DistributedValues):
      continue
    strategy = v.distribute_strategy
    if found is not None and strategy is not found:
      raise errors.StrategyError(
        f'The variables belong to two strategies ({type(found).__name__} '
        f'and {type(strategy).__name__}); build the whole model under one '
        'strategy.scope().'
      )
    found = strategy
  return found


def call_in_cross_replica_context(fn: Callable[..., Any], *args):
  """Calls `fn(*args)` once per worker in cross-replica context.

  From inside `strategy.run`, through `merge_call`: writes to mirrored
  variables made there go to every copy. Distributed arguments (e.g. a value
  that differs per replica) are replaced by the first replica's value.
  Not callable inside a `tf.cond` or loop of the replica function (a
  TensorFlow limitation of `merge_call`): raises `StrategyError` there.

  Args:
    fn: the function.
    *args: its arguments.

  Returns:
    What `fn` returns.
  """

  def merge_fn(strategy, *grouped):
    firsts = [strategy.experimental_local_results(a)[0] for a in grouped]
    return fn(*firsts)

  try:
    return tf.distribute.get_replica_context().merge_call(merge_fn, args=args)
  except RuntimeError as e:
    # TensorFlow's message blames "defining a new graph or a tf.function"
    # when the call sits in a tf.cond branch or loop body of the replica
    # function, which are graphs of their own.
    if '`merge_call` called while defining a new graph' not in str(e):
      raise
    raise errors.StrategyError(
      f'{getattr(fn, "__name__", fn)} was called inside a tf.cond, '
      'tf.while_loop or nested tf.function of the function given to '
      'strategy.run, where TensorFlow cannot switch to cross-replica '
      'context; call it directly in that function (conditional_mask_update '
      'checks the schedule itself).'
    ) from e


# The pruning variables.


def state_variable(initial_value, name: str) -> tf.Variable:
  """A non-trainable variable of the pruning state (mask, threshold, step).

  Under a tf.distribute strategy it is a MirroredVariable (ON_WRITE: a copy
  per device, every write goes to every copy). The update writes it in
  cross-replica context (see `PrunedModel.mask_update`); ONLY_FIRST_REPLICA
  makes a write made in replica context copy the first replica's value to
  all (see the module docstring).
  """
  return tf.Variable(
    initial_value,
    trainable=False,
    name=name,
    synchronization=tf.VariableSynchronization.ON_WRITE,
    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
  )


def check_apply_context() -> tf.distribute.Strategy:
  """The current strategy, checked to be supported and not in `run`.

  Raises:
    errors.UnsupportedStrategyError: the strategy is not supported.
    errors.StrategyError: called inside `strategy.run`.
  """
  current = tf.distribute.get_strategy()
  check_strategy(current)
  if in_replica_context():
    raise errors.StrategyError(
      'apply_pruning was called inside strategy.run; call it once under '
      'strategy.scope(), where the model was built.'
    )
  return current


def weights_scope(current, weights: Sequence[Any], what: str):
  """The scope the masks are created in: the weights' strategy.

  Masks must be distributed like the weights they multiply. Under the
  weights' strategy's scope (or with plain weights) that is the current
  scope; called outside any scope with distributed weights, apply_pruning
  enters their strategy's scope itself.

  Args:
    current: the current strategy (`check_apply_context`).
    weights: the weights to mask (per-device copies or containers).
    what: the computation's description, for messages.

  Returns:
    A context manager.

  Raises:
    errors.StrategyError: the weights were created under another strategy
      than the current one, or outside a multi-replica current strategy.
  """
  owner = strategy_of(weights)
  default = not tf.distribute.has_strategy()
  if owner is None:
    if not default and current.num_replicas_in_sync > 1:
      raise errors.StrategyError(
        f'The weights of {what} were created outside '
        f'{type(current).__name__}.scope(); build the model under the '
        'scope apply_pruning is called in.'
      )
    return contextlib.nullcontext()
  check_strategy(owner)
  if default:
    return owner.scope()
  if owner is not current:
    raise errors.StrategyError(
      f'The weights of {what} were created under another '
      f'{type(owner).__name__} than the current {type(current).__name__}; '
      'call apply_pruning under the scope the model was built in.'
    )
  return contextlib.nullcontext()
