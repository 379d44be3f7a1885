"""Where each output unit of a layer flows: the analysis behind shrinking.

A *producer* is a MatMul `x @ W` or a Conv2D/Conv3D whose kernel is a
constant of the stripped graph; its output unit `u` is *zero* when
`W[..., u]` is all zero. The analysis follows the producer's output forward
through per-op rules (`RULES`, keyed by op type) and collects, for one
*group*, every constant slice that must go with the unit: the bias and
BatchNorm parameters on the way, the channels of a depthwise conv, the rows
of the consuming layer's kernel, the features of a Flatten. A group is the
natural unit of removal; today a group has one producer (a chain of
layers), and coupled channels (residual adds, concatenations) are where a
future rule would merge groups rather than stop.

Along the way each channel carries the value it takes when its unit is
removed (`Space.const`): 0 from the producer, then `act(bias)`, BatchNorm's
shift and so on. A consumer folds that constant into its own bias where it
is exact (Dense, 1x1 or VALID convs); a rule that cannot follow a tensor
(an op it does not know, a Softmax, a residual add, the model's output)
stops the group, which keeps every unit, and says why.

    flow = analyze(graph_def, output_names)
    for group in flow.groups: group.removable, group.reasons
"""

import collections
import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from graph_prune.passes import graph_ir

# Ops that pass a constant's value through unchanged on the way to a kernel
# or bias (the frozen reads of the weights, Conv1D's ExpandDims).
_CONST_CHAIN = frozenset(['Identity', 'Snapshot', 'ExpandDims'])
# Ops whose value changes between runs although they read no input.
_STATEFUL = frozenset(['RandomUniform', 'RandomStandardNormal', 'VarHandleOp'])


def tensor_name(text: str) -> str:
  """'n' -> 'n:0', 'n:1' -> 'n:1' (GraphDef names)."""
  return text if ':' in text else f'{text}:0'


@dataclasses.dataclass
class Space:
  """How a tensor's last axis relates to its group's units.

  Attributes:
    tensor: the tensor ('node:index').
    root: channel -> the producer unit it belongs to.
    const: channel -> the value it holds wherever its unit is removed.
    origin: the tensor where this channel layout began (the producer's
      output, a depthwise conv's, a Flatten's); two operands of a binary op
      are the same channels only if they share it.
  """

  tensor: str
  root: np.ndarray
  const: np.ndarray
  origin: str


@dataclasses.dataclass
class Edit:
  """A change to one constant input edge `(node, position)` of the graph.

  kind 'slice': drop positions along `axis` whose unit is removed (`root`
  maps each position to its unit); 'fold': add `fold(removed)` (a function
  of the removed-unit mask) to the value; 'reshape': give a Flatten's shape
  input the new feature count (`root` maps each feature to its unit).
  """

  kind: str
  node: str
  position: int
  axis: int = -1
  root: Optional[np.ndarray] = None
  fold: Optional[Callable[[np.ndarray], np.ndarray]] = None


@dataclasses.dataclass
class Group:
  """The units of one producer and everything that must go with them.

  Attributes:
    producer: the MatMul/Conv node.
    kernel: the Const node holding its kernel.
    zero: unit -> its kernel slice is all zero.
    keep: unit -> it must stay although it is zero (see `reasons`).
    reasons: why units are kept, one sentence each.
    edits: what removing units changes.
  """

  producer: str
  kernel: str
  zero: np.ndarray
  keep: np.ndarray
  reasons: List[str] = dataclasses.field(default_factory=list)
  edits: List[Edit] = dataclasses.field(default_factory=list)

  @property
  def removable(self) -> np.ndarray:
    return self.zero & ~self.keep

  def stop(self, reason: str, units: Optional[np.ndarray] = None) -> None:
    """Keeps `units` (default: all) of the group, for `reason`."""
    self.keep |= self.zero if units is None else units
    if reason not in self.reasons:
      self.reasons.append(reason)


@dataclasses.dataclass
class Flow:
  groups: Tuple[Group, ...]


class Graph:
  """A GraphDef with static shapes, consumers and constant values."""

  def __init__(self, graph_def, output_names: Sequence[str]):
    self.graph_def = graph_def
    self.nodes = {n.name: n for n in graph_def.node}
    self.outputs = {tensor_name(t) for t in output_names}
    self.consumers = collections.defaultdict(list)
    for node in graph_def.node:
      for position, text in enumerate(node.input):
        if not text.startswith('^'):
          self.consumers[tensor_name(text)].append((node, position))
    self._tf_graph = tf.Graph()
    with self._tf_graph.as_default():
      tf.graph_util.import_graph_def(graph_def, name='')
    self._session = None
    self._varying = self._varying_nodes(graph_def)

  def shape(self, tensor: str) -> Optional[List[Optional[int]]]:
    shape = self._tf_graph.get_tensor_by_name(tensor_name(tensor)).shape
    return None if shape.rank is None else shape.as_list()

  def input(self, node, position: int) -> str:
    return tensor_name(node.input[position])

  def is_constant(self, tensor: str) -> bool:
    """Whether `tensor` depends on no input of the graph."""
    return graph_ir.node_name(tensor) not in self._varying

  def _varying_nodes(self, graph_def):
    """Nodes that read an input or a stateful op, directly or not."""
    varying = {
      n.name
      for n in graph_def.node
      if n.op in ('Placeholder', 'PlaceholderWithDefault')
      or n.op in _STATEFUL
      or (not n.input and n.op != 'Const')
    }
    readers = collections.defaultdict(list)
    for node in graph_def.node:
      for text in node.input:
        if not text.startswith('^'):
          readers[graph_ir.node_name(text)].append(node.name)
    stack = list(varying)
    while stack:
      for reader in readers[stack.pop()]:
        if reader not in varying:
          varying.add(reader)
          stack.append(reader)
    return varying

  def value(self, tensor: str) -> np.ndarray:
    """The value of a constant tensor."""
    node = self.nodes[graph_ir.node_name(tensor)]
    if node.op == 'Const':
      return tf.make_ndarray(node.attr['value'].tensor)
    if self._session is None:
      self._session = tf.compat.v1.Session(graph=self._tf_graph)
    return np.asarray(self._session.run(tensor_name(tensor)))

  def const_source(self, tensor: str) -> Optional[str]:
    """The Const node `tensor` reads through identities, or None."""
    node = self.nodes[graph_ir.node_name(tensor)]
    while node.op in _CONST_CHAIN:
      node = self.nodes[graph_ir.node_name(node.input[0])]
    return node.name if node.op == 'Const' else None


# What a rule returns: the spaces its outputs carry (followed further), or
# None when the tensor ends here (a consumer that dropped the channels).
Outcome = Optional[List[Space]]
Rule = Callable[['Context', object, int, Space], Outcome]


class CannotFollowError(Exception):
  """Raised by a rule: the group keeps its units, for this reason."""


@dataclasses.dataclass
class Context:
  graph: Graph
  group: Group
  arrivals: Dict[str, Dict[int, Space]]


def analyze(graph_def, output_names: Sequence[str], rules) -> Flow:
  """Finds every producer's group and what removing its zero units takes.

  Args:
    graph_def: a stripped GraphDef (weights are Consts); not modified.
    output_names: its output tensors.
    rules: op type -> `Rule` (`unit_rules.RULES`); other ops stop a group.

  Returns:
    A `Flow` with one `Group` per producer that has a zero unit.
  """
  graph = Graph(graph_def, output_names)
  groups = []
  for node in graph_def.node:
    group = _producer_group(graph, node)
    if group is not None:
      groups.append(group)
      if group.zero.any():
        _follow(graph, group, node, rules)
  return Flow(tuple(groups))


def _producer_group(graph: Graph, node) -> Optional[Group]:
  if node.op == 'MatMul':
    if node.attr['transpose_a'].b or node.attr['transpose_b'].b:
      return None
  elif node.op not in ('Conv2D', 'Conv3D') or not node.attr[
    'data_format'
  ].s.endswith(b'C'):
    return None
  kernel = graph.const_source(graph.input(node, 1))
  if kernel is None or graph.is_constant(graph.input(node, 0)):
    return None
  value = graph.value(kernel)
  if value.ndim < 2:
    return None
  flat = value.reshape(-1, value.shape[-1])
  zero = ~flat.any(axis=0)
  group = Group(node.name, kernel, zero, np.zeros_like(zero))
  group.edits.append(Edit('slice', node.name, 1, -1, np.arange(zero.size)))
  return group


def _follow(graph: Graph, group: Group, producer, rules) -> None:
  width = group.zero.size
  start = Space(
    f'{producer.name}:0', np.arange(width), np.zeros(width), f'{producer.name}'
  )
  context = Context(graph, group, {})
  queue = collections.deque([start])
  while queue:
    space = queue.popleft()
    if space.tensor in graph.outputs:
      group.stop(f'the units are a model output ({space.tensor!r})')
      return
    for node, position in graph.consumers[space.tensor]:
      rule = rules.get(node.op)
      try:
        if rule is None:
          raise CannotFollowError(
            f'op {node.op} {node.name!r} is not known to shrinking'
          )
        outcome = rule(context, node, position, space)
      except CannotFollowError as stop:
        group.stop(str(stop))
        return
      queue.extend(outcome or ())
  for name in context.arrivals:
    node = graph.nodes[name]
    group.stop(
      f'{node.op} {name!r} combines the units with a tensor that keeps '
      'them (coupled channels are not shrunk)'
    )
    return


def follow_same(space: Space, node, const=None, index: int = 0) -> List[Space]:
  return [
    Space(
      f'{node.name}:{index}',
      space.root,
      space.const if const is None else const,
      space.origin,
    )
  ]


def zero_channels(space: Space, group: Group) -> np.ndarray:
  """Channel -> its unit is zero (and could be removed)."""
  return group.zero[space.root]


def units_of(space: Space, channels: np.ndarray, width: int) -> np.ndarray:
  units = np.zeros(width, dtype=bool)
  units[space.root[channels]] = True
  return units
