"""Unlinking `tf.custom_gradient` ops from their Python gradient functions.

`tf.custom_gradient` (and what is built on it: `tf.nn.silu`/`swish`, which
Keras 3's `swish`/`silu` activations call, `tf.recompute_grad`) marks its
result in graph mode with an `IdentityN` node whose inputs are the forward
results, the function's arguments and the variables it read, and whose
`_gradient_op_type` attr names a gradient registered in Python for that one
trace (`CustomGradient-<uid>`). That gradient is a closure over tensors of
the original trace. The mask pass rebuilds the graph with `import_graph_def`,
which keeps the attr, so differentiating the rebuilt graph calls the old
closure and fails (`InaccessibleTensorError`), and so does saving it
(`Found invalid capture ... when saving custom gradients`).

`forward_gradients(fdef)` removes the link: the `IdentityN` loses its
`_gradient_op_type` (it becomes a plain `IdentityN`, whose gradient is the
identity), so the gradient of its result outputs flows into the forward
computation that produced them, and TensorFlow differentiates that with its
own op gradients. (The variables a custom gradient reads are IdentityN
inputs as read values, so the scan follows them like any other read.)

  before:  y, x', w' = IdentityN(x * sigmoid(x), x, ReadVariableOp(w))
                       [_gradient_op_type = "CustomGradient-7"]
  after:   the same IdentityN without the attr

For the custom gradients of TensorFlow and Keras (silu/swish, recompute_grad)
the result is the same gradient up to rounding; recompute_grad then keeps the
forward activations instead of recomputing them. A user's custom gradient
that is not the derivative of its forward computation (a straight-through
estimator, gradient clipping) gets the true derivative instead; write those
with a gradient registered once by op type (`tf.RegisterGradient` with
`gradient_override_map` on a node), which the rebuilt graph keeps.

Keras layers and TF ops trace their custom gradients into the caller's
graph, but a custom gradient can also sit in a function the graph calls: a
nested `tf.function` (a `StatefulPartitionedCall` node, which the mask pass
inlines with its attrs), a `tf.while_loop` body (a recurrent layer with a
swish activation) or a `tf.cond` branch. TensorFlow differentiates those
from the function library too, so `forward_library` applies the same
rewrite to every function of the library, and `forward_function_graph` to
a function with its library (insertion's first pass). The rewritten
functions keep their names: TensorFlow compares function definitions
without their internal (`_`-prefixed) attrs, so they do not clash with the
originals already registered in the eager context, and run the same
computation.
"""

from typing import Dict, Mapping, Tuple

from tensorflow.core.framework import function_pb2

from graph_prune.passes import driver
from graph_prune.passes import graph_ir

GRADIENT_ATTR = '_gradient_op_type'
# tf.custom_gradient's gradient names (custom_gradient.generate_name).
CUSTOM_GRADIENT_PREFIX = b'CustomGradient-'


def is_custom_gradient(node) -> bool:
  """Whether `node` is the `IdentityN` of a `tf.custom_gradient` call."""
  attr = node.attr.get(GRADIENT_ATTR)
  return (
    node.op == 'IdentityN'
    and attr is not None
    and attr.s.startswith(CUSTOM_GRADIENT_PREFIX)
  )


def forward_gradients(
  fdef: function_pb2.FunctionDef,
) -> driver.PassResult[function_pb2.FunctionDef, Tuple[str, ...]]:
  """Returns `fdef` with every custom-gradient `IdentityN` made plain.

  Args:
    fdef: a FunctionDef; not modified.

  Returns:
    A `PassResult`: `graph` the new FunctionDef (`fdef` itself when no node
    has a custom gradient), `report` the tuple of the rewritten nodes'
    names, `changed` whether there was any.
  """
  names = tuple(n.name for n in fdef.node_def if is_custom_gradient(n))
  if not names:
    return driver.PassResult(fdef, (), changed=False)
  new = function_pb2.FunctionDef()
  new.CopyFrom(fdef)
  for node in new.node_def:
    if is_custom_gradient(node):
      del node.attr[GRADIENT_ATTR]
  return driver.PassResult(new, names, changed=True)


def forward_library(
  library: Mapping[str, function_pb2.FunctionDef],
) -> driver.PassResult[
  Dict[str, function_pb2.FunctionDef], Tuple[Tuple[str, str], ...]
]:
  """Returns `library` with `forward_gradients` applied to every function.

  Args:
    library: function name -> FunctionDef; not modified.

  Returns:
    A `PassResult`: `graph` a new dict of the same names (the unchanged
    FunctionDefs themselves, new ones where a node had a custom gradient),
    `report` the `(function name, node name)` pairs rewritten, `changed`
    whether there was any.
  """
  new, report = {}, []
  for name, fdef in library.items():
    result = forward_gradients(fdef)
    new[name] = result.graph
    report.extend((name, node) for node in result.report)
  return driver.PassResult(new, tuple(report), changed=bool(report))


def forward_function_graph(
  graph: graph_ir.FunctionGraph,
) -> driver.PassResult[graph_ir.FunctionGraph, Tuple[Tuple[str, str], ...]]:
  """`forward_gradients` on a function and every function of its library.

  The first pass of insertion (`insert.insert_masks`).

  Args:
    graph: the traced function and its library; not modified.

  Returns:
    A `PassResult`: the new `FunctionGraph` (sharing the unchanged
    FunctionDefs), `report` the `(function name, node name)` pairs
    rewritten, the top function's first, `changed` whether there was any.
  """
  top = forward_gradients(graph.top)
  library = forward_library(graph.library)
  name = graph.top.signature.name
  report = tuple((name, node) for node in top.report) + library.report
  return driver.PassResult(
    graph_ir.FunctionGraph(top.graph, library.graph),
    report,
    changed=bool(report),
  )
