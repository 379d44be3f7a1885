"""Letting gradient tapes see the ops `import_graph_def` creates.

The mask pass imports the rewritten graph with `import_graph_def`. Its ops
are created in C++, not by the Python op wrappers, and a wrapper is what
records an op on the active `tf.GradientTape`s; so a tape differentiating
through imported ops gets None for every weight they read. Wrapping the
import in a `tf.function` (what `insert_masks` returns) works around that:
a tape records the call, and TensorFlow differentiates the call's graph on
its own. But that gradient of a function call costs a traced forward
function that exports every intermediate and a backward function that
captures each of them; on MobileNetV2 it was most of the first training
step's extra cost (BUILD_NOTES, "first step").

`record(ops)` records each imported op on the active tapes with the same
gradient `tf.gradients` would use for it, so the pruned graph can be
imported in place into the user's training step and differentiated as the
dense model's ops are: the same per-op gradients, second-order gradients
through nested tapes, forward-mode accumulators (TensorFlow transposes the
recorded gradient). `recordable(graph_def)` says beforehand whether that is
possible: every node's type (or its `tf.RegisterGradient` override) has a
registered gradient or is registered as not differentiable (ops without
float outputs, such as `AssignVariableOp` or a random op's key and counter,
need none). A function call
node (`PartitionedCall`) has none, since `tf.gradients` differentiates it
through `SymbolicGradient`; a graph with one keeps the function call.
"""

import functools
from typing import Any, Iterable, Mapping

import tensorflow as tf

from graph_prune import _tf_internal

_GRADIENT_OVERRIDE_ATTR = '_gradient_op_type'


def recordable(graph_def: tf.compat.v1.GraphDef) -> bool:
  """Whether every node of `graph_def` can be recorded with its gradient.

  Args:
    graph_def: the graph to import (its top-level nodes; functions of its
      library are differentiated by their callers' gradients).
  """
  for node in graph_def.node:
    if not node.input or not _may_carry_gradient(node):
      continue
    override = node.attr.get(_GRADIENT_OVERRIDE_ATTR)
    op_type = override.s.decode() if override is not None else node.op
    if not _tf_internal.has_registered_gradient(op_type):
      return False
  return True


def _may_carry_gradient(node) -> bool:
  """Whether a node can have a float output (False only when known)."""
  op_def = _tf_internal.op_def(node.op)
  if op_def is None:  # a function call by name: its outputs are unknown
    return True
  for arg in op_def.output_arg:
    if arg.type_list_attr:
      types = node.attr[arg.type_list_attr].list.type
    elif arg.type_attr:
      types = [node.attr[arg.type_attr].type]
    else:
      types = [arg.type]
    if any(_is_float(tf.dtypes.as_dtype(t)) for t in types if t):
      return True
  return False


def _is_float(dtype) -> bool:
  return dtype.is_floating or dtype.is_complex


def _backward(op, grad_fn, variable_shapes, *output_grads):
  """`grad_fn` of `op` with the output gradients a tape leaves out filled.

  As in `tf.gradients`: a float output nothing depends on gets a zero
  gradient (except for `IdentityN`, whose gradient passes None through);
  other outputs (integers, resource handles) keep None. Each input's
  gradient gets the input's static shape, and a variable handle's (a loop
  or branch reading the variable inside) the variable's: a `While`'s
  gradient has none of its own, and a Keras 3 variable's `assign_sub`
  refuses a tensor of unknown rank.
  """
  grads = list(output_grads)
  if op.type != 'IdentityN':
    for i, (grad, output) in enumerate(zip(grads, op.outputs)):
      if grad is None and _is_float(output.dtype):
        grads[i] = tf.zeros_like(output)
  with tf.name_scope(op.name.replace('/', '_') + '_grad'):
    in_grads = grad_fn(op, *grads)
  if not isinstance(in_grads, (list, tuple)):
    in_grads = [in_grads]
  for grad, t in zip(in_grads, op.inputs):
    if isinstance(grad, tf.Tensor):
      shape = (
        variable_shapes.get(t.ref()) if t.dtype == tf.resource else t.shape
      )
      if shape is not None and grad.shape.is_compatible_with(shape):
        grad.set_shape(shape)
  return list(in_grads)


def record(
  ops: Iterable[tf.Operation],
  variable_shapes: Mapping[Any, tf.TensorShape] = (),
) -> int:
  """Records `ops`, in order, on every active tape.

  Args:
    ops: operations of the graph being built, producers before consumers
      (the order `import_graph_def` creates them in), from a graph that
      `recordable` accepted.
    variable_shapes: `handle.ref()` -> the variable's shape, for the
      variable handles the ops read.

  Returns:
    How many operations were recorded (0 when no tape is active).
  """
  if not _tf_internal.tapes_active():
    return 0
  variable_shapes = dict(variable_shapes)
  count = 0
  for op in ops:
    if not op.inputs or not any(_is_float(t.dtype) for t in op.outputs):
      continue
    grad_fn = _tf_internal.gradient_function(op)
    if grad_fn is None:  # registered as not differentiable
      continue
    _tf_internal.record_operation(
      op.type,
      list(op.outputs),
      list(op.inputs),
      functools.partial(_backward, op, grad_fn, variable_shapes),
    )
    count += 1
  return count
