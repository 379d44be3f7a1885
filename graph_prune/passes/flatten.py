"""A traced function as one flat GraphDef: its calls inlined, handles kept.

`flat_graph(concrete_function)` returns the function's body as a GraphDef
whose top level holds every op of the function and of the functions it
calls (`PartitionedCall`/`StatefulPartitionedCall`, inlined as Grappler
would before running it; see inline.py), so that an analysis that walks the
top level (shrink's unit analysis) sees the whole model. Loops and branches
stay functional ops with their bodies in the library. Each argument becomes
a Placeholder named after it; the captured variables' handles stay resource
Placeholders, nothing is frozen:

  before:  y = StatefulPartitionedCall(x, h_kernel, f=model)
           model(x, h): r = ReadVariableOp(h); y = MatMul(x, r)
  after:   x = Placeholder; h_kernel = Placeholder[resource]
           call/r = ReadVariableOp(h_kernel); call/y = MatMul(x, call/r)

Two passes, run by `driver.run_passes`: `inline_calls` (inline.py) and
`lower` (lower.py).
"""

import dataclasses
from typing import Any, Mapping, Tuple

from graph_prune.passes import driver
from graph_prune.passes import graph_ir
from graph_prune.passes import inline
from graph_prune.passes import lower


@dataclasses.dataclass(frozen=True)
class FlatGraph:
  """A function's body as a flat GraphDef.

  Attributes:
    graph_def: the GraphDef (with the library its loops and branches use).
    input_names: tensor names of the function's own inputs, in order.
    output_names: tensor names of its flat outputs, in order.
    captures: Placeholder node name -> the external tensor it captures (a
      variable's handle, or a captured constant).
  """

  graph_def: Any
  input_names: Tuple[str, ...]
  output_names: Tuple[str, ...]
  captures: Mapping[str, Any]


def flat_graph(concrete_function) -> FlatGraph:
  """The body of `concrete_function` with every call inlined.

  Args:
    concrete_function: a `ConcreteFunction`; not modified.

  Returns:
    A `FlatGraph`.

  Raises:
    GraphRewriteError: a called function is missing from the library.
  """
  cf = concrete_function
  source = cf.graph.as_graph_def()
  library = {f.signature.name: f for f in source.library.function}
  shapes = [
    t.shape.as_proto() if t.shape.rank is not None else None for t in cf.inputs
  ]
  passes = (
    driver.Pass('inline_calls', lambda g, _: inline.inline_top(g)),
    # Only what the flat graph still calls (loop bodies, branches): an
    # inlined callee left in the library would hold a second copy of its
    # ops.
    driver.Pass(
      'lower',
      lambda g, _: lower.lower(g, shapes, source.library.gradient),
    ),
  )
  graph_def, results = driver.run_passes(
    graph_ir.FunctionGraph(cf.function_def, library),
    passes,
    f'the function {cf.name!r}',
    'tracing',
  )
  fdef = results['inline_calls'].graph.top
  flat = results['lower'].report.flat_name
  args = graph_ir.arg_names(fdef)
  n_inputs = len(cf.inputs) - len(cf.captured_inputs)
  outputs = tuple(
    flat(fdef.ret[arg.name])
    if fdef.ret[arg.name] not in args
    else f'{fdef.ret[arg.name]}:0'
    for arg in fdef.signature.output_arg
  )
  return FlatGraph(
    graph_def,
    tuple(f'{name}:0' for name in args[:n_inputs]),
    outputs,
    dict(zip(args[n_inputs:], cf.captured_inputs)),
  )
