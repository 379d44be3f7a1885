"""The traversal of the unit flow: one visit per node, in graph order.

`analyze` walks the stripped graph once in topological order, so that an op
sees the channels of all its inputs together (a residual add, a
concatenation); each node whose inputs carry producers' channels runs its
rule (`unit_rules.RULES`), and each producer (MatMul/Conv with a constant
kernel) starts new elements. The structures it fills are in `unit_flow`.

    flow = analyze(graph_def, output_names, unit_rules.RULES)
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from graph_prune.passes import channel_ops
from graph_prune.passes.channel_ops import Kind
from graph_prune.passes.unit_flow import Edit
from graph_prune.passes.unit_flow import Flow
from graph_prune.passes.unit_flow import Graph
from graph_prune.passes.unit_flow import Group
from graph_prune.passes.unit_flow import Space
from graph_prune.passes.unit_flow import tensor_name
from graph_prune.passes.unit_flow import Units

# What a rule returns: the spaces its outputs carry (followed further), or
# None when the tensor ends here (a consumer that dropped the channels).
Outcome = Optional[List[Space]]
Rule = Callable[['Context', object, int, Space], Outcome]


class CannotFollowError(Exception):
  """Raised by a rule: the channels it was given stay, for this reason."""


@dataclasses.dataclass
class Context:
  """What the rules read and record.

  Attributes:
    graph: the graph.
    units: the elements; `units.union` ties channels together.
    spaces: tensor -> its `Space`, for every tensor seen so far whose
      channels belong to producers (a tensor not here carries none).
    edits: the edits recorded so far.
    stops: (reason, elements) recorded so far.
  """

  graph: Graph
  units: Units
  spaces: Dict[str, Space] = dataclasses.field(default_factory=dict)
  edits: List[Edit] = dataclasses.field(default_factory=list)
  stops: List[Tuple[str, np.ndarray]] = dataclasses.field(default_factory=list)

  @property
  def zero(self) -> np.ndarray:
    return self.units.zero

  def space(self, tensor: str) -> Optional[Space]:
    return self.spaces.get(tensor_name(tensor))

  def stop(self, reason: str, elements: np.ndarray) -> None:
    """Keeps the classes of `elements` (ids, or a mask over all elements)."""
    elements = np.asarray(elements)
    if elements.dtype == bool:
      elements = np.flatnonzero(elements)
    if elements.size:
      self.stops.append((reason, elements))


# Kinds whose rule reads every input's channels itself (ties or concatenates
# them); an op of another kind given the channels of two inputs stops.
_MULTI_INPUT = frozenset([Kind.ELEMENTWISE, Kind.IDENTITY_N, Kind.CONCAT])


def analyze(graph_def, output_names: Sequence[str], rules, values=None) -> Flow:
  """Finds every producer's units and what removing zero units takes.

  Args:
    graph_def: a stripped GraphDef (weights are Consts); not modified.
    output_names: its output tensors.
    rules: op type -> `Rule` (`unit_rules.RULES`); other ops keep the
      channels they read.
    values: Const name -> a function giving its value, for Consts that
      hold none (variables' stubs, `variable_view.const_view`).

  Returns:
    A `Flow` with one `Group` per producer.
  """
  graph = Graph(graph_def, output_names, values)
  ctx = Context(graph, Units())
  groups = []
  for node in graph.topological():
    _visit(ctx, node, rules)
    group = _producer_group(graph, node, ctx.units)
    if group is not None:
      groups.append(group)
      width = group.ids.size
      _record(ctx, Space(f'{node.name}:0', group.ids, np.zeros(width)))
      ctx.edits.append(Edit('slice', node.name, 1, -1, group.ids))
  return Flow(
    tuple(groups), ctx.units, tuple(ctx.edits), tuple(ctx.stops), graph
  )


def _visit(ctx: Context, node, rules) -> None:
  """Runs `node`'s rule once if any of its inputs carries channels."""
  positions = [
    p
    for p, text in enumerate(node.input)
    if not text.startswith('^') and ctx.space(text) is not None
  ]
  if not positions:
    return
  rule = rules.get(node.op)
  try:
    if rule is None:
      raise CannotFollowError(
        f'op {node.op} {node.name!r} is not known to shrinking'
      )
    kind = getattr(channel_ops.rule(node.op), 'kind', None)
    if len(positions) > 1 and kind not in _MULTI_INPUT:
      raise CannotFollowError(
        f'{node.op} {node.name!r} reads the channels of several layers'
      )
    outcome = rule(ctx, node, positions[0], ctx.space(node.input[positions[0]]))
  except CannotFollowError as stop:
    for p in positions:
      ctx.stop(str(stop), ctx.space(node.input[p]).root)
    return
  for space in outcome or ():
    _record(ctx, space)


def _record(ctx: Context, space: Space) -> None:
  ctx.spaces[space.tensor] = space
  if space.tensor in ctx.graph.outputs:
    ctx.stop(f'the units are a model output ({space.tensor!r})', space.root)


def _producer_group(graph: Graph, node, units: Units) -> Optional[Group]:
  if getattr(channel_ops.rule(node.op), 'kind', None) is not Kind.PRODUCER:
    return None
  if node.op == 'MatMul':
    if node.attr['transpose_a'].b or node.attr['transpose_b'].b:
      return None
  elif node.op == 'BatchMatMulV2':
    if node.attr['adj_x'].b or node.attr['adj_y'].b:
      return None
  elif not node.attr['data_format'].s.endswith(b'C'):
    return None
  kernel = graph.const_source(graph.input(node, 1))
  if kernel is None or graph.is_constant(graph.input(node, 0)):
    return None
  value = graph.value(kernel)
  if value.ndim < 2 or (node.op == 'BatchMatMulV2' and value.ndim != 2):
    return None
  channels = (graph.shape(graph.input(node, 0)) or [None])[-1]
  if 'MatMul' not in node.op and channels != value.shape[-2]:
    return None  # a grouped conv: its output channels are tied to groups
  flat = value.reshape(-1, value.shape[-1])
  zero = ~flat.any(axis=0)
  return Group(node.name, kernel, zero, units.add(zero))


def follow_same(space: Space, node, const=None, index: int = 0) -> List[Space]:
  return [
    Space(
      f'{node.name}:{index}',
      space.root,
      space.const if const is None else const,
    )
  ]


def zero_channels(space: Space, ctx: Context) -> np.ndarray:
  """Channel -> its own unit is zero (its class may still keep it)."""
  return ctx.zero[space.root]
