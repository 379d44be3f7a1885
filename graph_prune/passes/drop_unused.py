"""Dropping what no output of a GraphDef needs.

`prune_unreachable(graph_def, outputs)` keeps the nodes the outputs depend
on (through data and control edges) and the library functions those call,
after dropping control edges that order nothing: edges from stateless nodes
that depend only on stateless nodes, such as the frozen reads of weights and
masks and the NoOps that Grappler's function inlining leaves to order them.

  before: m = Const; r = Identity(m); n = NoOp(^r); y = Identity(x, ^n)
  after:  y = Identity(x)
"""

from typing import Sequence, Set

from tensorflow.core.framework import graph_pb2

from graph_prune import _tf_internal
from graph_prune.passes import graph_ir as fdefs


def prune_unreachable(graph_def, outputs: Sequence[str]) -> graph_pb2.GraphDef:
  """Keeps only the nodes and functions the outputs need.

  See the module docstring.

  Args:
    graph_def: a GraphDef; not modified.
    outputs: tensor or node names of the outputs.

  Returns:
    The pruned GraphDef.
  """
  copy = graph_pb2.GraphDef()
  copy.CopyFrom(graph_def)
  graph_def = copy
  by_name = {n.name: n for n in graph_def.node}
  stateless = _stateless_closure(graph_def.node, by_name)
  for node in graph_def.node:
    kept = [
      t for t in node.input if not (t.startswith('^') and t[1:] in stateless)
    ]
    if len(kept) != len(node.input):
      del node.input[:]
      node.input.extend(kept)
  needed, frontier = set(), [_node_name(o) for o in outputs]
  while frontier:
    name = frontier.pop()
    if name in needed or name not in by_name:
      continue
    needed.add(name)
    frontier.extend(_node_name(t) for t in by_name[name].input)
  nodes = [n for n in graph_def.node if n.name in needed]
  del graph_def.node[:]
  graph_def.node.extend(nodes)
  library = {f.signature.name: f for f in graph_def.library.function}
  called = sorted({fname for n in nodes for _, fname in _called(n, library)})
  keep = set(fdefs.reachable(called, library))
  functions = [
    f for f in graph_def.library.function if f.signature.name in keep
  ]
  del graph_def.library.function[:]
  graph_def.library.function.extend(functions)
  gradients = [g for g in graph_def.library.gradient if g.function_name in keep]
  del graph_def.library.gradient[:]
  graph_def.library.gradient.extend(gradients)
  return graph_def


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
      inputs = [_node_name(t) for t in node.input]
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


def _node_name(text: str) -> str:
  return text.lstrip('^').split(':')[0]


def _called(node, library):
  """(attr, function name) pairs of a node, plus ('', op) for a direct call."""
  called = fdefs.called_functions(node)
  if node.op in library:
    called.append(('', node.op))
  return called
