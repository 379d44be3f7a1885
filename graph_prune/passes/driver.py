"""The pass interface: what a pass returns, and running passes in order.

A pass is a function that takes a graph and returns a new one with a report
of what it did, a `PassResult[GraphT, ReportT]`; it never modifies its
input. The graph kinds are the ones `validity.CHECKS` knows: a GraphDef, a
FunctionDef, a library (name -> FunctionDef) and a `graph_ir.FunctionGraph`
(a function with its library). An analysis (`scan.find_weights`,
`fold_checks.check_stripped`, ...) reads a graph and returns its own typed
result, never a `PassResult`.

    graph_def, results = run_passes(graph_def, [
        Pass('fold_masks', lambda g, _: fold_masks.fold_masked_weights(...)),
        Pass('drop_unused', lambda g, _: drop_unused.drop_unused(g, outs)),
    ], 'the pruned model')

As TF's `optimize_for_inference` does (`ensure_graph_is_valid` between its
passes): the graph is checked before the first pass and after each, so a
pass that leaves a dangling input or a duplicate node name fails at once,
and the error names the pass and what it ran on. Every pass sequence of
graph_prune runs here: insertion (`insert.insert_masks`), flattening
(`flatten.flat_graph`), stripping (`export/stripped_model.strip_function`)
and shrinking (`export/shrink_variables.shrink_stripped`).
"""

import dataclasses
from typing import (
  Any,
  Callable,
  Dict,
  Generic,
  Mapping,
  NamedTuple,
  Sequence,
  Tuple,
  TypeVar,
)

from graph_prune.passes import validity

GraphT = TypeVar('GraphT')
ReportT = TypeVar('ReportT')


@dataclasses.dataclass(frozen=True)
class PassResult(Generic[GraphT, ReportT]):
  """What a graph pass returns.

  Attributes:
    graph: the new graph, of the kind the pass returns (a GraphDef, a
      FunctionDef, a library or a `graph_ir.FunctionGraph`; `insert_masks`
      returns a `tf.function` built from one). The pass's input is never
      modified; a pass that changed nothing may return it.
    report: what the pass did, of a type each pass documents.
    changed: whether `graph` computes differently from the input (masks
      inserted, weights folded, nodes dropped).
  """

  graph: GraphT
  report: ReportT
  changed: bool


class Pass(NamedTuple):
  """A pass: its name and (graph, earlier results) -> `PassResult`.

  The earlier results, by pass name, serve a pass that needs what one before
  it found (shrink names the weights fold_masks folded).
  """

  name: str
  run: Callable[[Any, Mapping[str, PassResult]], PassResult]


def run_passes(
  graph, passes: Sequence[Pass], what: str, source: str = 'freezing'
) -> Tuple[Any, Dict[str, PassResult]]:
  """Runs `passes` in order, checking the graph before and after each.

  Args:
    graph: the input graph, of a kind `validity.check` knows; not modified
      (each pass makes a new graph).
    passes: the passes, in order; their names must be unique.
    what: what the graph computes, for messages ('the pruned model').
    source: what made the input graph, for the first check's message.

  Returns:
    (the last pass's graph, pass name -> its `PassResult`).

  Raises:
    GraphRewriteError: the graph is invalid after `source` or a pass (the
      message names it and `what`).
    TypeError: a pass returned no `PassResult` (an analysis in a pass list).
    ValueError: two passes share a name.
  """
  names = [p.name for p in passes]
  if len(set(names)) != len(names):
    raise ValueError(f'Pass names must be unique, got {names}.')
  validity.check(graph, f'{source} {what}')
  results = {}
  for p in passes:
    result = p.run(graph, dict(results))
    if not isinstance(result, PassResult):
      raise TypeError(
        f'Pass {p.name!r} on {what} returned a {type(result).__name__}, not '
        'a PassResult.'
      )
    graph = result.graph
    validity.check(graph, f'pass {p.name!r} on {what}')
    results[p.name] = result
  return graph, results
