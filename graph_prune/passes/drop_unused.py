"""Dropping what no output of a GraphDef needs.

`drop_unused(graph_def, outputs)` keeps the nodes the outputs depend
on (through data and control edges) and the library functions those call,
after dropping control edges that order nothing: edges from stateless nodes
that depend only on stateless nodes, such as the frozen reads of weights and
masks and the NoOps that Grappler's function inlining leaves to order them.

  before: m = Const; r = Identity(m); n = NoOp(^r); y = Identity(x, ^n)
  after:  y = Identity(x)
"""

import dataclasses
from typing import Sequence, Set, Tuple

from tensorflow.core.framework import graph_pb2

from graph_prune import _tf_internal
from graph_prune.passes import driver
from graph_prune.passes import graph_ir


@dataclasses.dataclass(frozen=True)
class Dropped:
  """What `drop_unused` removed.

  Attributes:
    nodes: names of the dropped top-level nodes, in graph order.
    functions: names of the dropped library functions, in library order.
    control_edges: how many control edges that order nothing it dropped
      (see the module docstring), counted before dropping nodes.
  """

  nodes: Tuple[str, ...]
  functions: Tuple[str, ...]
  control_edges: int


def drop_unused(
  graph_def, outputs: Sequence[str]
) -> driver.PassResult[graph_pb2.GraphDef, 'Dropped']:
  """Keeps only the nodes and functions the outputs need.

  See the module docstring.

  Args:
    graph_def: a GraphDef; not modified.
    outputs: tensor or node names of the outputs.

  Returns:
    A `PassResult`: the new GraphDef and a `Dropped` report.
  """
  graph_def = graph_ir.copy_graph_def(graph_def)
  by_name = {n.name: n for n in graph_def.node}
  edges = _drop_ordering_edges(graph_def, by_name)
  needed = _needed(outputs, by_name)
  nodes = [n for n in graph_def.node if n.name in needed]
  dropped_nodes = tuple(n.name for n in graph_def.node if n.name not in needed)
  del graph_def.node[:]
  graph_def.node.extend(nodes)
  library = {f.signature.name: f for f in graph_def.library.function}
  called = sorted(
    {fname for n in nodes for _, fname in graph_ir.called_functions(n, library)}
  )
  keep = set(graph_ir.reachable(called, library))
  functions = [
    f for f in graph_def.library.function if f.signature.name in keep
  ]
  dropped_functions = tuple(
    f.signature.name
    for f in graph_def.library.function
    if f.signature.name not in keep
  )
  del graph_def.library.function[:]
  graph_def.library.function.extend(functions)
  gradients = [g for g in graph_def.library.gradient if g.function_name in keep]
  del graph_def.library.gradient[:]
  graph_def.library.gradient.extend(gradients)
  report = Dropped(dropped_nodes, dropped_functions, edges)
  changed = bool(dropped_nodes or dropped_functions or edges)
  return driver.PassResult(graph_def, report, changed)


def _drop_ordering_edges(graph_def, by_name) -> int:
  """Drops control edges from stateless closures, in place; returns how many."""
  stateless = _stateless_closure(graph_def.node, by_name)
  dropped = 0
  for node in graph_def.node:
    kept = [
      t for t in node.input if not (t.startswith('^') and t[1:] in stateless)
    ]
    if len(kept) != len(node.input):
      dropped += len(node.input) - len(kept)
      del node.input[:]
      node.input.extend(kept)
  return dropped


def _needed(outputs, by_name) -> Set[str]:
  """Names of the nodes the outputs depend on (data and control edges)."""
  needed, frontier = set(), [graph_ir.node_name(o) for o in outputs]
  while frontier:
    name = frontier.pop()
    if name in needed or name not in by_name:
      continue
    needed.add(name)
    frontier.extend(graph_ir.node_name(t) for t in by_name[name].input)
  return needed


def _stateless_closure(nodes, by_name) -> Set[str]:
  """Names of the nodes that are stateless and depend only on such nodes."""
  result, state = set(), {}  # state: 1 visiting, 2 done
  for root in nodes:
    stack = [(root.name, False)]
    while stack:
      name, expanded = stack.pop()
      if state.get(name) == 2:
        continue
      node = by_name.get(name)
      if node is None:
        state[name] = 2
        continue
      inputs = [graph_ir.node_name(t) for t in node.input]
      if not expanded:
        if state.get(name) == 1:
          continue  # a cycle (not in a TF2 graph): leave it stateful
        state[name] = 1
        stack.append((name, True))
        stack.extend((i, False) for i in inputs if state.get(i) != 2)
        continue
      op_def = _tf_internal.op_def(node.op)
      if (
        op_def is not None
        and not op_def.is_stateful
        and all(i in result for i in inputs)
      ):
        result.add(name)
      state[name] = 2
  return result
