"""Which copy of a distributed variable a graph reads.

Under a `tf.distribute` strategy a traced graph captures one per-device copy
of each variable; the mask pass must capture the copy the current replica
reads, and find a weight by any of its copies. `graph_prune.model.distribute`
(the edge that handles strategies) re-exports these.
"""

from typing import Any, Tuple

import tensorflow as tf

from graph_prune import _tf_internal


def in_replica_context() -> bool:
  """True inside `strategy.run` of a strategy other than the default."""
  return (
    tf.distribute.has_strategy()
    and not tf.distribute.in_cross_replica_context()
  )


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
  if strategy is None or not isinstance(
    variable, tf.distribute.DistributedValues
  ):
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
