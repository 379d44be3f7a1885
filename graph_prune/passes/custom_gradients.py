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

Only the function itself is rewritten, not the functions it calls: Keras
layers and TF ops trace their custom gradients into the caller's graph.
"""

from tensorflow.core.framework import function_pb2

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


def forward_gradients(fdef: function_pb2.FunctionDef) -> graph_ir.PassResult:
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
    return graph_ir.PassResult(fdef, (), changed=False)
  new = function_pb2.FunctionDef()
  new.CopyFrom(fdef)
  for node in new.node_def:
    if is_custom_gradient(node):
      del node.attr[GRADIENT_ATTR]
  return graph_ir.PassResult(new, names, changed=True)
