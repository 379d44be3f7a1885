"""Pruning under `tf.distribute`: strategies, replica-local reads, a step.

Supported strategies: the default (no strategy), `OneDeviceStrategy`,
`MirroredStrategy` (several devices of one machine) and
`MultiWorkerMirroredStrategy` (several machines). Build the model, call
`apply_pruning` and build the optimizer under `strategy.scope()`, then train
inside `strategy.run`, e.g. with `make_train_step`:

    strategy = distribute.make_strategy('mirrored', num_cpu_devices=2)
    with strategy.scope():
      model = build_model()
      pruned = graph_prune.apply_pruning(model, spec)
      optimizer = keras.optimizers.SGD(0.1)
    step = distribute.make_train_step(
        strategy, pruned, model.trainable_variables, optimizer,
        per_example_loss, global_batch_size, training=True)
    for x, y in strategy.experimental_distribute_dataset(dataset):
      loss, updated = step(x, y)

`make_strategy` builds the strategy a `--strategy` flag names;
`checkpoint_dir` tells a worker where to save.

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

import os
import tempfile
from typing import Any, Callable, Optional, Sequence, Tuple

import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors

STRATEGY_KINDS = ('default', 'mirrored', 'multi_worker')




def _supported_classes():
  return (tf.distribute.MirroredStrategy,
          tf.distribute.MultiWorkerMirroredStrategy,
          tf.distribute.OneDeviceStrategy)


def check_strategy(strategy: tf.distribute.Strategy) -> None:
  """Raises `errors.UnsupportedStrategyError` unless graph_prune supports `strategy`.

  Args:
    strategy: a `tf.distribute.Strategy` (the default strategy passes).

  Raises:
    errors.UnsupportedStrategyError: naming the strategy and the supported ones.
  """
  if (strategy is _tf_internal.default_strategy() or
      isinstance(strategy, _supported_classes())):
    return
  raise errors.UnsupportedStrategyError(
      f'graph_prune does not support {type(strategy).__name__} (nor any '
      'parameter server, TPU or central storage strategy); use '
      'MirroredStrategy, MultiWorkerMirroredStrategy, OneDeviceStrategy or no '
      'strategy.')


def make_strategy(kind: str,
                  num_cpu_devices: Optional[int] = None
                  ) -> tf.distribute.Strategy:
  """Builds the strategy a training binary's `--strategy` flag names.

  Args:
    kind: 'default' (no distribution), 'mirrored' (every local GPU, or the
      CPU) or 'multi_worker' (`MultiWorkerMirroredStrategy`, cluster read from
      the `TF_CONFIG` environment variable).
    num_cpu_devices: for 'mirrored' only: split the CPU into this many logical
      devices and mirror over them (for testing on one machine). Must be
      called before TensorFlow initializes its devices.

  Returns:
    The `tf.distribute.Strategy`.

  Raises:
    errors.StrategyError: unknown `kind`, `num_cpu_devices` with a kind other than
      'mirrored', or devices already initialized.
  """
  if kind not in STRATEGY_KINDS:
    raise errors.StrategyError(
        f'Unknown strategy {kind!r}; use one of {", ".join(STRATEGY_KINDS)}.')
  if num_cpu_devices is not None and kind != 'mirrored':
    raise errors.StrategyError(
        f'num_cpu_devices={num_cpu_devices} only applies to the mirrored '
        f'strategy, not {kind!r} (a multi_worker worker uses one CPU device; '
        'start more workers instead).')
  if kind == 'default':
    return _tf_internal.default_strategy()
  if kind == 'multi_worker':
    return tf.distribute.MultiWorkerMirroredStrategy()
  if num_cpu_devices is None:
    return tf.distribute.MirroredStrategy()
  devices = configure_cpu_devices(num_cpu_devices)
  return tf.distribute.MirroredStrategy(devices)


def configure_cpu_devices(num_cpu_devices: int) -> Sequence[str]:
  """Splits the first CPU into `num_cpu_devices` logical devices.

  TensorFlow fixes its devices when it first runs an op, so this must come
  before anything else touches TensorFlow in the process (a test that needs it
  runs in its own process).

  Args:
    num_cpu_devices: how many logical CPU devices, >= 1.

  Returns:
    Their names, e.g. ['/device:CPU:0', '/device:CPU:1'].

  Raises:
    errors.StrategyError: `num_cpu_devices` < 1, or the devices are already
      initialized with a different count.
  """
  if not isinstance(num_cpu_devices, int) or num_cpu_devices < 1:
    raise errors.StrategyError(
        f'num_cpu_devices must be a positive int, got {num_cpu_devices!r}.')
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)
  except RuntimeError as e:
    current = tf.config.list_logical_devices('CPU')
    if len(current) != num_cpu_devices:
      raise errors.StrategyError(
          f'Cannot split the CPU into {num_cpu_devices} devices: TensorFlow '
          f'already initialized {len(current)}; call make_strategy before '
          'any other TensorFlow call in the process.') from e
  return [d.name for d in tf.config.list_logical_devices('CPU')]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this worker writes checkpoints and summaries (always, on one
  machine)."""
  return bool(strategy.extended.should_checkpoint)


def checkpoint_dir(strategy: tf.distribute.Strategy, directory: str) -> str:
  """Where this worker writes checkpoints: `directory` for the chief.

  With `MultiWorkerMirroredStrategy` every worker must call `save` (saving
  may involve collective ops), but only the chief's copy is kept; the others
  write to a temporary directory of their own, which the caller deletes
  afterwards.

  Args:
    strategy: the strategy.
    directory: the training's checkpoint directory.

  Returns:
    `directory`, or on a non-chief worker a fresh directory inside it named
    after the worker (e.g. 'worker_1_tmp...').
  """
  if is_chief(strategy):
    return directory
  resolver = strategy.cluster_resolver
  os.makedirs(directory, exist_ok=True)
  return tempfile.mkdtemp(
      prefix=f'{resolver.task_type}_{resolver.task_id}_tmp', dir=directory)


# Replica-local variables.


def in_replica_context() -> bool:
  """True inside `strategy.run` of a strategy other than the default."""
  return (tf.distribute.has_strategy() and
          not tf.distribute.in_cross_replica_context())


def container(variable: Any) -> Any:
  """The distributed variable `variable` is a copy of, else `variable`.

  A graph traced under a strategy captures one per-device copy of each
  `MirroredVariable`; the model, the optimizer and checkpoints hold the
  container.
  """
  return _tf_internal.distributed_container(variable) or variable


def local_copies(variable: Any) -> Tuple[Any, ...]:
  """The per-device copies of a distributed variable on this worker.

  Args:
    variable: a variable, distributed or not.

  Returns:
    A tuple of `tf.Variable`s, `(variable,)` for a plain variable.
  """
  variable = container(variable)
  strategy = getattr(variable, 'distribute_strategy', None)
  if strategy is None or not isinstance(variable,
                                        tf.distribute.DistributedValues):
    return (variable,)
  return tuple(strategy.experimental_local_results(variable))


def replica_local(variable: tf.Variable) -> tf.Variable:
  """The copy of `variable` the current replica reads.

  Inside `strategy.run` this is the current replica's own copy of the
  distributed variable `variable` belongs to; elsewhere it is `variable`.
  A graph pass that re-captures variables must capture this copy: the
  replica's `GradientTape` watches its own copy, and capturing another
  replica's would pin every replica to it and leave the gradients None.

  Args:
    variable: a `tf.Variable`, possibly one copy of a distributed variable.

  Returns:
    A `tf.Variable`.
  """
  if not in_replica_context():
    return variable
  distributed = _tf_internal.distributed_container(variable)
  if distributed is None:
    return variable
  handle = distributed.handle  # the current replica's copy's handle
  for copy in local_copies(distributed):
    if copy.handle is handle:
      return copy
  return variable


def strategy_of(variables: Sequence[Any]
                ) -> Optional[tf.distribute.Strategy]:
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
          'strategy.scope().')
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
        'checks the schedule itself).') from e


# Training.


def distribute_batch(strategy: tf.distribute.Strategy, *arrays):
  """Splits a global batch into equal, contiguous per-replica slices.

  Replica `r` of `n` gets rows `[r * b / n, (r + 1) * b / n)` of each array:
  deterministic, so a run with any number of replicas sees the same global
  batch as a single-device run.

  Args:
    strategy: the strategy.
    *arrays: arrays or tensors with the same first dimension, divisible by
      the number of replicas.

  Returns:
    One distributed value per array, for `strategy.run`.

  Raises:
    errors.StrategyError: the batch does not split evenly.
  """
  n = strategy.num_replicas_in_sync
  size = int(arrays[0].shape[0])
  if size % n:
    raise errors.StrategyError(
        f'A global batch of {size} does not split into {n} equal replica '
        'batches; use a batch size divisible by the number of replicas.')
  per_replica = size // n

  def values(i):
    def fn(ctx):
      start = ctx.replica_id_in_sync_group * per_replica
      return tf.convert_to_tensor(arrays[i][start:start + per_replica])
    return strategy.experimental_distribute_values_from_function(fn)

  return tuple(values(i) for i in range(len(arrays)))


def make_train_step(strategy: tf.distribute.Strategy, pruned: Any,
                    variables: Sequence[Any], optimizer: Any,
                    per_example_loss: Callable[[Any, Any], Any],
                    global_batch_size: Optional[int] = None,
                    training: Optional[bool] = None):
  """Builds a distributed training step that also updates the masks.

  The step runs, in every replica: the pruned forward pass, the loss averaged
  over the global batch (`tf.nn.compute_average_loss`), gradients, the
  optimizer (which all-reduces them) and
  `pruned.conditional_mask_update(optimizer.iterations)`.

  Args:
    strategy: the strategy `pruned`, the model and `optimizer` were built
      under (the default strategy for a single device).
    pruned: the `PrunedModel`.
    variables: the variables to train (e.g. `model.trainable_variables`).
    optimizer: a Keras optimizer (Keras 3 or tf_keras).
    per_example_loss: `(labels, outputs) -> [batch]` losses, e.g. a Keras loss
      built with `reduction=None` (Keras 3) or `'none'`.
    global_batch_size: the global batch size; when None, the replica batch
      size times the number of replicas.
    training: passed to `pruned(inputs, training=...)`: True runs a Keras
      model's training graph (dropout, batch statistics); None the graph
      `apply_pruning` traced.

  Returns:
    A `tf.function` `step(inputs, labels) -> (loss, updated)`: inputs and
    labels are distributed values (from a distributed dataset or
    `distribute_batch`) or, without a strategy, tensors; `loss` is the global
    mean loss and `updated` whether the masks were updated.
  """
  check_strategy(strategy)
  variables = list(variables)
  # A Keras 3 optimizer creates its slots on its first apply_gradients; under
  # MirroredStrategy that first call inside a tf.function fails at run time
  # ("You must feed a value for placeholder tensor 'cond/...'"), with or
  # without pruning, so the slots are created here, under the scope.
  build = getattr(optimizer, 'build', None)
  if callable(build) and not getattr(optimizer, 'built', False):
    with strategy.scope():
      build(variables)

  def replica_step(inputs, labels):
    with tf.GradientTape() as tape:
      losses = per_example_loss(labels, pruned(inputs, training=training))
      loss = tf.nn.compute_average_loss(
          losses, global_batch_size=global_batch_size)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    updated = pruned.conditional_mask_update(optimizer.iterations)
    return loss, updated

  @tf.function
  def step(inputs, labels):
    loss, updated = strategy.run(replica_step, args=(inputs, labels))
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    updated = strategy.experimental_local_results(updated)[0]
    return loss, updated

  return step
