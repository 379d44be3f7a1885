"""Running graph passes in order, the graph checked before and after each.

    graph_def, results = run_passes(graph_def, [
        Pass('fold_masks', lambda g, _: fold_masks.fold_masked_weights(...)),
        Pass('drop_unused', lambda g, _: drop_unused.drop_unused(g, outs)),
    ], 'the pruned model')

As TF's `optimize_for_inference` does (`ensure_graph_is_valid` between its
passes): a pass that leaves a dangling input or a duplicate node name fails
here, and the error names the pass and what it ran on.
"""

from typing import Any, Callable, Dict, Mapping, NamedTuple, Sequence, Tuple

from graph_prune.passes import graph_ir


class Pass(NamedTuple):
  """A pass: its name and (GraphDef, earlier results) -> `PassResult`.

  The earlier results, by pass name, serve a pass that needs what one before
  it found (shrink names the weights fold_masks folded).
  """

  name: str
  run: Callable[[Any, Mapping[str, graph_ir.PassResult]], graph_ir.PassResult]


def run_passes(
  graph_def, passes: Sequence[Pass], what: str, source: str = 'freezing'
) -> Tuple[Any, Dict[str, graph_ir.PassResult]]:
  """Runs `passes` in order, checking the graph before and after each.

  Args:
    graph_def: the input GraphDef; not modified (each pass copies).
    passes: the passes, in order.
    what: what the graph computes, for messages ('the pruned model').
    source: what made the input graph, for the first check's message.

  Returns:
    (the last pass's GraphDef, pass name -> its `PassResult`).

  Raises:
    GraphRewriteError: the graph is invalid after `source` or a pass.
  """
  graph_ir.check_valid(graph_def, f'{source} {what}')
  results = {}
  for p in passes:
    result = p.run(graph_def, dict(results))
    graph_def = result.graph
    graph_ir.check_valid(graph_def, f'pass {p.name!r} on {what}')
    results[p.name] = result
  return graph_def, results
