"""Where each output unit of a layer flows: the structures of the analysis.

A *producer* is a MatMul `x @ W` or a Conv2D/Conv3D whose kernel is a
constant of the stripped graph; its output unit `u` is *zero* when
`W[..., u]` is all zero. The analysis (`unit_traversal.analyze`) follows
the producer's output forward through per-op rules (`unit_rules.RULES`,
keyed by op type) and collects every constant slice that must go with the
unit: the bias and BatchNorm parameters on the way, the channels of a
depthwise conv, the rows of the consuming layer's kernel, the features of
a Flatten.

Every producer unit is an *element* (`Units`, ids from 1; id 0 is a channel
no producer owns, which never goes). Each tensor's channels map to
elements (`Space.root`); the analysis visits the graph once in topological
order, so an op sees all its inputs' channels together. Ops that tie
channels of several producers (a residual add, a squeeze-and-excitation
gate `x * sigmoid(conv(mean(x)))`) unite the elements position by position
(union-find, as Torch-Pruning's dependency groups), a concatenation places
each input's channels at its offset, a split takes them apart. A channel
can go only when every element of its class is a zero unit
(`unit_removal.decide`), and then every recorded slice of it goes.

Along the way each channel carries the value it takes when its class is
removed (`Space.const`): 0 from the producer, then `act(bias)`, BatchNorm's
shift, the sum of both sides' constants through an add and so on. A
consumer folds that constant into its own bias where it is exact (Dense, 1x1
or VALID convs); a rule that cannot follow a tensor (an op it does not know,
a Softmax, the model's output, an add of the network input) keeps the
tensor's channels (`Flow.stops`) and says why.

    flow = unit_traversal.analyze(graph_def, output_names, unit_rules.RULES)
    decision = unit_removal.decide(flow)
"""

import collections
import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from graph_prune.passes import channel_classes
from graph_prune.passes import channel_ops
from graph_prune.passes import graph_ir

# Ops that pass a constant's value through unchanged on the way to a kernel
# or bias (the frozen reads of the weights, Conv1D's ExpandDims).
_CONST_CHAIN = frozenset(['Identity', 'Snapshot', 'ExpandDims'])
# Ops whose value changes between runs although they read no input.
_STATEFUL = channel_ops.RANDOM_OPS | {'VarHandleOp'}


def tensor_name(text: str) -> str:
  """'n' -> 'n:0', 'n:1' -> 'n:1' (GraphDef names)."""
  return text if ':' in text else f'{text}:0'


@dataclasses.dataclass
class Space:
  """How a tensor's last axis relates to the producers' units.

  Attributes:
    tensor: the tensor ('node:index').
    root: channel -> the element (producer unit) it belongs to; 0 for a
      channel no producer owns.
    const: channel -> the value it holds wherever its class is removed.
  """

  tensor: str
  root: np.ndarray
  const: np.ndarray


@dataclasses.dataclass
class Edit:
  """A change to one constant input edge `(node, position)` of the graph.

  kind 'slice': drop positions along `axis` whose element is removed
  (`root` maps each position to its element); 'fold': add `fold(removed)`
  (a function of the removed-element mask; `root`: the channels it folds)
  to the value; 'reshape': give a Reshape the
  shape `fold(removed)` (a Flatten's new feature count, a reshape's new
  channel count; `root` maps each position of its last axis to its
  element).
  """

  kind: str
  node: str
  position: int
  axis: int = -1
  root: Optional[np.ndarray] = None
  fold: Optional[Callable[[np.ndarray], np.ndarray]] = None


class Units(channel_classes.Classes):
  """Every producer's output units as elements, in classes.

  Element 0 stands for channels that no producer owns (the network input,
  an op shrinking does not follow); it is fixed and never zero, so a class
  holding it never goes.
  """

  def __init__(self):
    super().__init__()
    self.fix(self.new(1))
    self.zero = np.zeros(1, dtype=bool)  # element -> its unit is zero

  def add(self, zero: np.ndarray) -> np.ndarray:
    """New elements, one per unit; returns their ids."""
    self.zero = np.concatenate([self.zero, np.asarray(zero, dtype=bool)])
    return self.new(np.size(zero))

  def classes(self) -> np.ndarray:
    """Element -> the root of its class."""
    return self.roots()


@dataclasses.dataclass
class Group:
  """The units of one producer.

  Attributes:
    producer: the MatMul/Conv node.
    kernel: the Const node holding its kernel.
    zero: unit -> its kernel slice is all zero.
    ids: unit -> its element in `Flow.units`.
  """

  producer: str
  kernel: str
  zero: np.ndarray
  ids: np.ndarray


@dataclasses.dataclass
class Flow:
  """What the analysis found.

  Attributes:
    groups: one `Group` per producer, in topological order.
    units: the elements and their classes.
    edits: every constant slice, fold and reshape that removing elements
      takes (an edit of a kept element changes nothing).
    stops: (reason, elements): these elements' classes must stay.
    graph: the analysed graph.
    notes: sentences for the report about what stays by design (the
      residual stream's hidden size of a transformer).
  """

  groups: Tuple[Group, ...]
  units: Units
  edits: Tuple[Edit, ...]
  stops: Tuple[Tuple[str, np.ndarray], ...]
  graph: 'Graph'
  notes: Tuple[str, ...] = ()


class Graph:
  """A GraphDef with static shapes, consumers and constant values."""

  def __init__(self, graph_def, output_names: Sequence[str], values=None):
    """Args: the graph, its outputs, and Const name -> a function giving
    the value of a Const that holds none (a variable's stub,
    `variable_view.const_view`)."""
    self.graph_def = graph_def
    self._values = dict(values or {})
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
    self._computed: Dict[str, np.ndarray] = {}
    self._varying = self._varying_nodes(graph_def)

  def shape(self, tensor: str) -> Optional[List[Optional[int]]]:
    shape = self._tf_graph.get_tensor_by_name(tensor_name(tensor)).shape
    return None if shape.rank is None else shape.as_list()

  def operations(self) -> List:
    """The graph's ops imported into TensorFlow (static shapes, inputs), in
    creation (topological) order."""
    return self._tf_graph.get_operations()

  def input(self, node, position: int) -> str:
    return tensor_name(node.input[position])

  def topological(self) -> List:
    """The nodes, each after every node it reads (a cycle's are left out)."""
    return graph_ir.topological_order(self.graph_def)

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
    tensor = tensor_name(tensor)
    node = self.nodes[graph_ir.node_name(tensor)]
    while node.op in ('Identity', 'Snapshot'):
      tensor = tensor_name(node.input[0])
      node = self.nodes[graph_ir.node_name(tensor)]
    if node.op == 'Const':
      if node.name in self._values:
        return self._values[node.name]()
      return tf.make_ndarray(node.attr['value'].tensor)
    if self._session is None:
      self._session = tf.compat.v1.Session(graph=self._tf_graph)
      self._computed = self._computed_constants()
    if tensor not in self._computed:
      self._computed[tensor] = np.asarray(
        self._session.run(tensor, feed_dict=self._stub_feeds([tensor]))
      )
    return self._computed[tensor]

  def _stub_feeds(self, tensors) -> Dict[str, np.ndarray]:
    """The values of the stubs `tensors` depend on, to feed a session."""
    if not self._values:
      return {}
    seen, stack = set(), [graph_ir.node_name(t) for t in tensors]
    while stack:
      name = stack.pop()
      if name in seen or name not in self.nodes:
        continue
      seen.add(name)
      stack.extend(graph_ir.node_name(t) for t in self.nodes[name].input)
    return {f'{n}:0': self._values[n]() for n in seen if n in self._values}

  def _computed_constants(self) -> Dict[str, np.ndarray]:
    """Every computed constant (BatchNorm's folded vectors...) in one run.

    One `Session.run` per tensor costs a pass over the whole graph each
    time, which dominates the analysis of a large model.
    """
    fetches = {}
    for node in self.graph_def.node:
      if node.op in ('Const', 'Identity', 'Snapshot', 'NoOp'):
        continue
      if not self.is_constant(node.name):
        continue
      op = self._tf_graph.get_operation_by_name(node.name)
      for out in op.outputs:
        if out.dtype.is_floating or out.dtype.is_integer or out.dtype.is_bool:
          fetches[out.name] = out
    try:
      values = self._session.run(
        fetches, feed_dict=self._stub_feeds(list(fetches))
      )
    except (tf.errors.OpError, ValueError, TypeError):
      return {}  # one tensor at a time, then
    return {name: np.asarray(v) for name, v in values.items()}

  def const_source(self, tensor: str) -> Optional[str]:
    """The Const node `tensor` reads through identities, or None."""
    node = self.nodes[graph_ir.node_name(tensor)]
    while node.op in _CONST_CHAIN:
      node = self.nodes[graph_ir.node_name(node.input[0])]
    return node.name if node.op == 'Const' else None
