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
  per variable. No public API records an access without reading. The same
  call adds the variable to the `variables` of the `tf.function` being
  traced, which freezing (`convert_variables_to_constants_v2`, the TFLite
  converter) reads to find the value of each captured handle.

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


def distributed_container(variable):
  """The distributed variable `variable` is one per-device copy of, or None.

  Under a `tf.distribute` strategy a model variable is a `MirroredVariable`
  holding one `tf.Variable` per device. A traced graph captures one of those
  copies (the first, when traced in cross-replica context), and
  `cf.graph.variables` lists that copy, not the variable the model and the
  optimizer hold. TensorFlow links each copy back to its container with a
  private weak reference, which `distribute_utils.value_container` follows;
  the public `strategy.extended.value_container` does the same but only for
  the strategy currently in scope, and graph_prune must find the container
  before it knows (or enters) that strategy.

  Args:
    variable: a `tf.Variable`.

  Returns:
    The `tf.distribute.DistributedValues` variable, or None when `variable`
    is not a per-device copy.
  """
  # Imported here so that this wrapper, appended to the file, is
  # self-contained; TensorFlow has already loaded the module.
  from tensorflow.python.distribute import distribute_utils  # pylint: disable=g-import-not-at-top

  container = distribute_utils.value_container(variable)
  return None if container is variable else container


def default_strategy():
  """The default (no-op) `tf.distribute.Strategy`.

  `tf.distribute.get_strategy()` returns it only outside every
  `strategy.scope()`; graph_prune must recognise it (it is supported) and
  return it from `make_strategy('default')` wherever it is called.
  """
  from tensorflow.python.distribute import distribute_lib  # pylint: disable=g-import-not-at-top

  return distribute_lib._get_default_strategy()  # pylint: disable=protected-access


def freeze_function(concrete_function):
  """Returns `concrete_function` with every captured variable a constant.

  Freezing a TF2 function (variables to Const, resource arguments of loop
  bodies and branches retyped, function calls inlined by Grappler) is what
  `convert_variables_to_constants_v2` does, and what the TFLite converter
  uses internally; TensorFlow exports no public equivalent
  (`tf.compat.v1.graph_util.convert_variables_to_constants` needs a TF1
  session and reference variables). Control flow is not lowered, so While and
  If stay functional ops (which the TFLite converter and `import_graph_def`
  inside a `tf.function` both need).

  Args:
    concrete_function: a `ConcreteFunction` capturing variables.

  Returns:
    The frozen `ConcreteFunction`; its graph's Const node for a variable has
    the name of the placeholder that captured the variable's handle, and its
    `inputs`/`outputs` correspond to the original's non-captured inputs and
    outputs, in order.
  """
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top

  return convert_to_constants.convert_variables_to_constants_v2(
    concrete_function, lower_control_flow=False
  )


def tflite_schema():
  """The generated Python classes of the TFLite flatbuffer schema.

  Reading a converted model's tensors (their buffers, quantization and sparse
  encoding) needs the schema; `tf.lite` exports no reader (the interpreter
  densifies sparse tensors and hides constant buffers). The LiteRT package
  ships the same generated module publicly, so it is preferred when
  installed; TensorFlow's copy is the fallback.

  Returns:
    The `schema_py_generated` module (with `ModelT`).
  """
  try:
    from ai_edge_litert import schema_py_generated  # pylint: disable=g-import-not-at-top
  except ImportError:
    from tensorflow.lite.python import schema_py_generated  # pylint: disable=g-import-not-at-top
  return schema_py_generated


def gradient_function(op):
  """The gradient function `tf.gradients` would call for `op`, or None.

  The pruned graph is imported in place into a user's `tf.function`
  (`passes/tape_ops.py`), and its ops must reach the user's `GradientTape`
  with the gradients TensorFlow registered for them (a `tf.RegisterGradient`
  override named by the op's `_gradient_op_type` attr included). This is
  the lookup `tf.gradients` itself makes; no public API returns an op's
  registered gradient.

  Args:
    op: a `tf.Operation`.

  Returns:
    The gradient function, or None for an op without inputs or one
    registered as not differentiable.

  Raises:
    LookupError: no gradient is registered for the op's type.
  """
  from tensorflow.python.framework import ops as _ops  # pylint: disable=g-import-not-at-top

  return _ops.get_gradient_function(op)


def has_registered_gradient(op_type):
  """Whether a gradient (or "not differentiable") is registered for a type.

  Lets `passes/tape_ops.py` decide from a GraphDef, before importing it,
  whether every op can be recorded on a tape; `gradient_function` needs an
  op of a graph. No public API reads the gradient registry.

  Args:
    op_type: an op type name, or a `tf.RegisterGradient` name.
  """
  from tensorflow.python.framework import ops as _ops  # pylint: disable=g-import-not-at-top

  try:
    _ops.gradient_registry.lookup(op_type)
  except LookupError:
    return False
  return True


def tapes_active():
  """Whether any `tf.GradientTape` or `ForwardAccumulator` is recording.

  The pruned graph is imported in place, its ops recorded, only for a
  trace that a tape differentiates (`passes/insert.call`); serving and
  export traces keep the function call. No public API tells whether a tape
  is active.
  """
  from tensorflow.python.eager import record as _record  # pylint: disable=g-import-not-at-top

  return _record.could_possibly_record()


def record_operation(op_type, outputs, inputs, backward):
  """Records one operation on every active tape, as an op wrapper does.

  Ops that `import_graph_def` creates are built in C++ and bypass the
  Python op wrappers, which are what record an op on the tapes
  (`execute.record_gradient`); without a record `tape.gradient` returns None
  for every weight they read. `tf.custom_gradient` records through this
  same call but also adds an `IdentityN` with a Python gradient closure to
  the graph, which a SavedModel cannot save, and one closure for the whole
  graph would hide its ops from an outer tape (second-order gradients). No
  public API records an operation.

  Args:
    op_type: a name for the operation (shown in tape errors).
    outputs: its output tensors.
    inputs: its input tensors.
    backward: maps the outputs' gradients to the inputs' gradients.
  """
  from tensorflow.python.eager import record as _record  # pylint: disable=g-import-not-at-top

  _record.record_operation(op_type, outputs, inputs, backward)


def uninitialized_variable(shape, dtype, name):
  """A non-trainable resource variable of `shape` and `dtype` with no value.

  The export writes the folded weights into the SavedModel's checkpoint one
  at a time (`export/folded_checkpoint.py`), so their variables must exist,
  with their shapes, for the SavedModel's functions and object graph, but
  hold no memory. `tf.Variable` always initializes (a value of the full
  size); the loader makes its variables with this same class before it
  restores them, and nothing public makes one.

  Args:
    shape: the variable's `tf.TensorShape`.
    dtype: its `tf.DType`.
    name: its name.
  """
  return _rvo.UninitializedVariable(
    shape=shape, dtype=dtype, name=name, trainable=False
  )


def write_fingerprint(export_dir):
  """Writes `export_dir`'s `fingerprint.pb` again, from its files as they are.

  `tf.saved_model.save` writes the fingerprint (hashes of the graph and of
  the checkpoint's index) last; the export then adds the folded weights to
  the checkpoint (`export/folded_checkpoint.py`), which changes the index,
  so the checkpoint hash must be computed again. The public API only reads
  fingerprints (`tf.saved_model.experimental.read_fingerprint`).

  Args:
    export_dir: a SavedModel directory.
  """
  from tensorflow.python.saved_model import fingerprinting_utils  # pylint: disable=g-import-not-at-top

  fingerprinting_utils.write_fingerprint(export_dir)
