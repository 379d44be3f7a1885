"""Lowering a function with its library to the GraphDef that is imported.

`lower(graph)` turns a `graph_ir.FunctionGraph` into a GraphDef: the
function's arguments become Placeholders, its nodes the top level with
tensor names in the GraphDef convention (`graph_ir.to_graph_def`), and the
library keeps only the functions the top level still calls, and theirs
(callees first): a function the passes inlined or copied under a new name
would otherwise travel with the graph as a second, unused definition.

  before: f(x, h): r = ReadVariableOp(h); y = MatMul(x, r:value:0)
          library {f, g_unused}
  after:  x = Placeholder; h = Placeholder; r = ReadVariableOp(h);
          y = MatMul(x, r:0); library {}

The last step of insertion (`insert.insert_masks`) and flattening
(`flatten.flat_graph`); it computes what its input computes (`changed`
False).
"""

import dataclasses
from typing import Callable, Sequence

from tensorflow.core.framework import graph_pb2

from graph_prune.passes import driver
from graph_prune.passes import graph_ir


@dataclasses.dataclass(frozen=True)
class Lowered:
  """What `lower` did.

  Attributes:
    flat_name: maps a tensor name of the function (`node:output_arg:index`
      or an argument) to the GraphDef's (`node:flat_index`).
    functions: the library functions kept, callees first.
  """

  flat_name: Callable[[str], str]
  functions: Sequence[str]


def lower(
  graph: graph_ir.FunctionGraph, input_shapes=None, gradients=()
) -> driver.PassResult[graph_pb2.GraphDef, Lowered]:
  """The GraphDef of `graph.top`, with the library functions it calls.

  Args:
    graph: the function and its library; not modified.
    input_shapes: a TensorShapeProto (or None) per argument, for the
      Placeholders; default the shapes the FunctionDef records.
    gradients: GradientDefs of the library; those of kept functions are
      kept.

  Returns:
    A `PassResult`: the GraphDef and a `Lowered` report.
  """
  graph_def, flat_name = graph_ir.to_graph_def(
    graph.top, graph.library, input_shapes
  )
  called = {
    name
    for node in graph_def.node
    for _, name in graph_ir.called_functions(node, graph.library)
  }
  kept = graph_ir.reachable(sorted(called), graph.library)
  graph_def.library.function.extend(graph.library[name] for name in kept)
  graph_def.library.gradient.extend(
    g for g in gradients if g.function_name in set(kept)
  )
  return driver.PassResult(
    graph_def, Lowered(flat_name, tuple(kept)), changed=False
  )
