"""The only module of graph_prune that touches `tensorflow.python.*`.

Each helper wraps one private TensorFlow entry point and says why no public
API serves. When TensorFlow changes, this is the file to fix.
"""

from tensorflow.python.eager import context as _context
from tensorflow.python.framework import op_def_registry as _op_def_registry
from tensorflow.python.ops import resource_variable_ops as _rvo


def capture(graph, tensor):
  """Captures an outer (eager) tensor into the `tf.function` graph being built.

  `tf.graph_util.import_graph_def(input_map=...)` needs graph tensors, and a
  variable's resource handle is an eager tensor. `FuncGraph.capture` is how
  TF itself turns one into a placeholder of the function; there is no public
  equivalent (`tf.identity(handle)` would add an op per handle and lose the
  handle's shape/dtype data).

  Args:
    graph: the `FuncGraph` being traced (the default graph inside the body of a
      `tf.function`).
    tensor: the external tensor (e.g. `variable.handle`).

  Returns:
    The placeholder of `graph` that stands for `tensor`.
  """
  return graph.capture(tensor)


def mark_variable_accessed(variable):
  """Records, as a public read would, that `variable` is used by the graph.

  A `tf.GradientTape` only watches variables that were accessed through the
  variable API while the function was traced; reads imported by
  `import_graph_def` are raw `ReadVariableOp`s and are not recorded, so
  `tape.gradient` would return None for those variables. This is the call
  `ResourceVariable.read_value` makes; using it avoids adding a dummy read op
  per variable. No public API records an access without reading.

  Args:
    variable: a `tf.Variable`.
  """
  _rvo.variable_accessed(variable)


def register_function_def(function_def):
  """Registers a FunctionDef with the eager runtime.

  Functions brought in through `import_graph_def` are only known to the
  Python graph; rewritten ones (new names) must be added to the runtime
  before the outer function runs or execution fails with "Op type not
  registered". There is no public API to add a FunctionDef.

  Args:
    function_def: a `FunctionDef` proto.
  """
  _context.context().add_function_def(function_def)


def op_def(op_type):
  """Returns the registered `OpDef` of `op_type`, or None if unknown.

  Needed to turn FunctionDef tensor names (`node:output_arg:index`) into
  flat output indices; `tf.raw_ops` exposes functions, not OpDefs.

  Args:
    op_type: an op type name such as "MatMul".
  """
  return _op_def_registry.get(op_type)

