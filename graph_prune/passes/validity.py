"""Whether a graph is well formed, for each kind of graph a pass rewrites.

What TF's `optimize_for_inference` checks between its passes
(`ensure_graph_is_valid`), for every kind of graph graph_prune's passes
take and return (`CHECKS`, keyed by type):
  * a GraphDef: its top-level nodes, and each function of its library;
  * a FunctionDef: its nodes, whose inputs may also name its arguments, and
    its returns;
  * a library (function name -> FunctionDef): each function, under the name
    it is filed by;
  * a `graph_ir.FunctionGraph` (a function and its library): both, and every
    function a node calls must be in the library.
In each body node names are unique and every input, return and control
return names a node (or argument) of that body: a pass that leaves a
dangling input or a duplicate name fails here, not at import or run time.

    check(graph, "pass 'fold_masks' on the model")  # or GraphRewriteError
"""

from typing import Any, Callable, Dict, Iterable, Mapping

from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import graph_pb2

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.passes import graph_ir


def check_valid(graph_def, after: str) -> None:
  """Raises unless `graph_def` and each of its library functions is valid.

  Args:
    graph_def: a GraphDef.
    after: what produced it, for the message (e.g. "pass 'fold_masks'").

  Raises:
    GraphRewriteError: naming the first offending node.
  """
  _check_body('the graph', graph_def.node, (), after)
  for fdef in graph_def.library.function:
    check_function(fdef, after)


def check_function(fdef, after: str, where: str = '') -> None:
  """Raises unless every name `fdef` reads is one of its nodes or arguments.

  Args:
    fdef: a FunctionDef.
    after: what produced it, for the message.
    where: how to name it in the message; default its signature's name.

  Raises:
    GraphRewriteError: a duplicate node name, or an input, return or control
      return naming nothing in the function.
  """
  where = where or f'function {fdef.signature.name!r}'
  names = _check_body(where, fdef.node_def, graph_ir.arg_names(fdef), after)
  outputs = {a.name for a in fdef.signature.output_arg}
  for key, text in fdef.ret.items():
    if key not in outputs:
      raise errors.GraphRewriteError(
        f'After {after}, {where} returns {key!r}, which is not an output of '
        'its signature.'
      )
    if graph_ir.node_name(text) not in names:
      raise errors.GraphRewriteError(
        f'After {after}, {where} returns {text!r} as {key!r}, which is not '
        'in it.'
      )
  missing = outputs - set(fdef.ret)
  if missing:
    raise errors.GraphRewriteError(
      f'After {after}, {where} returns nothing for its outputs '
      f'{sorted(missing)}.'
    )
  for key, text in fdef.control_ret.items():
    if text not in names:
      raise errors.GraphRewriteError(
        f'After {after}, control return {key!r} of {where} names {text!r}, '
        'which is not in it.'
      )


def check_library(library: Mapping[str, Any], after: str) -> None:
  """Raises unless each function of `library` is valid and filed by name.

  Raises:
    GraphRewriteError: a function is invalid (see `check_function`) or is
      filed under a name other than its signature's.
  """
  for name, fdef in library.items():
    if fdef.signature.name != name:
      raise errors.GraphRewriteError(
        f'After {after}, the library files function '
        f'{fdef.signature.name!r} under the name {name!r}.'
      )
    check_function(fdef, after)


def check_function_graph(graph: graph_ir.FunctionGraph, after: str) -> None:
  """Raises unless the function, its library and every call are valid.

  Raises:
    GraphRewriteError: see `check_function`; or a node of the function or
      of a library function calls a function the library lacks.
  """
  check_function(graph.top, after, f'the function {graph.top.signature.name!r}')
  check_library(graph.library, after)
  bodies = [graph.top] + list(graph.library.values())
  for fdef in bodies:
    _check_calls(fdef.node_def, graph.library, fdef.signature.name, after)


def _check_calls(nodes, library, where, after):
  """Raises if a node calls (by func attr) a function absent from `library`.

  A func attr may also name an op (`SymbolicGradient`-style attrs); those
  are registered, not in the library.
  """
  for node in nodes:
    for attr, _, name in graph_ir.function_attrs(node):
      if name not in library and _tf_internal.op_def(name) is None:
        raise errors.GraphRewriteError(
          f'After {after}, node {node.name!r} in function {where!r} calls '
          f'{name!r} (attr {attr!r}), which is not in the library.'
        )


def _check_body(where, nodes: Iterable[Any], args, after: str):
  """Checks names in one body; returns the set of its node and arg names."""
  names = set(args)
  for node in nodes:
    if node.name in names:
      raise errors.GraphRewriteError(
        f'After {after}, {where} has two nodes named {node.name!r}.'
      )
    names.add(node.name)
  for node in nodes:
    for text in node.input:
      if graph_ir.node_name(text) not in names:
        raise errors.GraphRewriteError(
          f'After {after}, node {node.name!r} in {where} reads {text!r}, '
          'which is not in it.'
        )
  return names


# The check of each kind of graph a pass may take or return.
CHECKS: Dict[type, Callable[[Any, str], None]] = {
  graph_pb2.GraphDef: check_valid,
  function_pb2.FunctionDef: check_function,
  dict: check_library,
  graph_ir.FunctionGraph: check_function_graph,
}


def check(graph, after: str) -> None:
  """Checks `graph` by its kind (`CHECKS`).

  Raises:
    GraphRewriteError: `graph` is invalid (see the checks above).
    TypeError: `graph` is of no kind in `CHECKS` (a programming error: a
      pass returned something that is not a graph).
  """
  checker = CHECKS.get(type(graph))
  if checker is None:
    raise TypeError(
      f'After {after}, got a {type(graph).__name__}, which is not a graph '
      f'kind graph_prune checks ({", ".join(t.__name__ for t in CHECKS)}).'
    )
  checker(graph, after)
