"""Strategies for training runs: building them, chief duties, a step.

`make_strategy` builds the strategy a `--strategy` flag names,
`checkpoint_dir` tells a worker where to save, `distribute_batch` splits a
global batch over the replicas and `make_train_step` is the distributed
training step that also updates the masks. How pruning's variables stay in
sync under a strategy is explained in `graph_prune.model.distribute`.
"""

import dataclasses
import os
import tempfile
from typing import Any, Callable, List, Optional, Sequence

import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.model import distribute

STRATEGY_KINDS = ('default', 'mirrored', 'multi_worker')


def make_strategy(
  kind: str, num_cpu_devices: Optional[int] = None
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
    errors.StrategyError: unknown `kind`, `num_cpu_devices` with a kind other
      than
      'mirrored', or devices already initialized.
  """
  if kind not in STRATEGY_KINDS:
    raise errors.StrategyError(
      f'Unknown strategy {kind!r}; use one of {", ".join(STRATEGY_KINDS)}.'
    )
  if num_cpu_devices is not None and kind != 'mirrored':
    raise errors.StrategyError(
      f'num_cpu_devices={num_cpu_devices} only applies to the mirrored '
      f'strategy, not {kind!r} (a multi_worker worker uses one CPU device; '
      'start more workers instead).'
    )
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
      f'num_cpu_devices must be a positive int, got {num_cpu_devices!r}.'
    )
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
    )
  except RuntimeError as e:
    current = tf.config.list_logical_devices('CPU')
    if len(current) != num_cpu_devices:
      raise errors.StrategyError(
        f'Cannot split the CPU into {num_cpu_devices} devices: TensorFlow '
        f'already initialized {len(current)}; call make_strategy before '
        'any other TensorFlow call in the process.'
      ) from e
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
    prefix=f'{resolver.task_type}_{resolver.task_id}_tmp', dir=directory
  )


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
      'batches; use a batch size divisible by the number of replicas.'
    )
  per_replica = size // n

  def values(i):
    def fn(ctx):
      start = ctx.replica_id_in_sync_group * per_replica
      return tf.convert_to_tensor(arrays[i][start : start + per_replica])

    return strategy.experimental_distribute_values_from_function(fn)

  return tuple(values(i) for i in range(len(arrays)))


def make_train_step(
  strategy: tf.distribute.Strategy,
  pruned: Any,
  variables: Sequence[Any],
  optimizer: Any,
  per_example_loss: Callable[[Any, Any], Any],
  global_batch_size: Optional[int] = None,
  training: Optional[bool] = None,
  forward: Optional[Callable[..., Any]] = None,
  with_accuracy: bool = False,
):
  """Builds a distributed training step that also updates the masks.

  The step runs, in every replica: the pruned forward pass, the loss averaged
  over the global batch (`tf.nn.compute_average_loss`), gradients, the
  optimizer (which all-reduces them) and
  `pruned.conditional_mask_update(optimizer.iterations)`. It is the one
  distributed step of graph_prune: `graph_prune.train.loop.Run` trains with it.

  Args:
    strategy: the strategy `pruned`, the model and `optimizer` were built
      under (the default strategy for a single device).
    pruned: the `PrunedModel`, or None to train `forward` without masks.
    variables: the variables to train (e.g. `model.trainable_variables`).
    optimizer: a Keras optimizer (Keras 3 or tf_keras).
    per_example_loss: `(labels, outputs) -> [batch]` losses, e.g. a Keras loss
      built with `reduction=None` (Keras 3) or `'none'`.
    global_batch_size: the global batch size; when None, the replica batch
      size times the number of replicas.
    training: passed to `forward(inputs, training=...)`: True runs a Keras
      model's training graph (dropout, batch statistics); None the graph
      `apply_pruning` traced.
    forward: `(inputs, training=...) -> outputs`; default `pruned`. Needed
      when `pruned` is None (e.g. the Keras model, to train it dense).
    with_accuracy: the step also returns the accuracy of the outputs as
      logits over integer labels, over the global batch.

  Returns:
    A `tf.function` `step(inputs, labels) -> (loss, updated)` (or `(loss,
    updated, accuracy)` with `with_accuracy`): inputs and labels are
    distributed values (from a distributed dataset or `distribute_batch`) or,
    without a strategy, tensors; `loss` is the global mean loss and `updated`
    whether the masks were updated (always False without `pruned`).
  """
  distribute.check_strategy(strategy)
  variables = list(variables)
  _build_optimizer(strategy, optimizer, variables)
  step = _TrainStep(
    strategy=strategy,
    pruned=pruned,
    forward=forward or pruned,
    variables=variables,
    optimizer=optimizer,
    per_example_loss=per_example_loss,
    global_batch_size=global_batch_size,
    training=training,
    with_accuracy=with_accuracy,
  )
  return tf.function(step.run)


@dataclasses.dataclass(frozen=True)
class _TrainStep:
  """What `make_train_step` built its step from (see there)."""

  strategy: tf.distribute.Strategy
  pruned: Any
  forward: Callable[..., Any]
  variables: List[Any]
  optimizer: Any
  per_example_loss: Callable[[Any, Any], Any]
  global_batch_size: Optional[int]
  training: Optional[bool]
  with_accuracy: bool

  def run(self, inputs, labels):
    """The global step: every replica's step, then their sums."""
    loss, updated, counts = self.strategy.run(
      self.replica_step, args=(inputs, labels)
    )
    loss = self._total(loss)
    updated = self.strategy.experimental_local_results(updated)[0]
    if self.with_accuracy:
      correct, count = counts
      return loss, updated, self._total(correct) / self._total(count)
    return loss, updated

  def replica_step(self, inputs, labels):
    with tf.GradientTape() as tape:
      outputs = self.forward(inputs, training=self.training)
      loss = tf.nn.compute_average_loss(
        self.per_example_loss(labels, outputs),
        global_batch_size=self.global_batch_size,
      )
    grads = tape.gradient(loss, self.variables)
    self.optimizer.apply_gradients(zip(grads, self.variables))
    if self.pruned is None:
      updated = tf.constant(False)
    else:
      # After the optimizer step: the masks see the updated weights, and
      # optimizer.iterations already counts this step.
      updated = self.pruned.conditional_mask_update(self.optimizer.iterations)
    if self.with_accuracy:
      return loss, updated, _correct_and_count(labels, outputs)
    return loss, updated, ()

  def _total(self, value):
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)


def _build_optimizer(strategy, optimizer, variables) -> None:
  # A Keras 3 optimizer creates its slots on its first apply_gradients; under
  # MirroredStrategy that first call inside a tf.function fails at run time
  # ("You must feed a value for placeholder tensor 'cond/...'"), with or
  # without pruning, so the slots are created here, under the scope.
  build = getattr(optimizer, 'build', None)
  if callable(build) and not getattr(optimizer, 'built', False):
    with strategy.scope():
      build(variables)


def _correct_and_count(labels, logits):
  """How many of a replica's examples `logits` classify right, and of how
  many (float32 sums, for the all-reduce)."""
  correct = tf.equal(
    tf.argmax(logits, -1, output_type=tf.int32), tf.cast(labels, tf.int32)
  )
  return (
    tf.reduce_sum(tf.cast(correct, tf.float32)),
    tf.cast(tf.size(correct), tf.float32),
  )
