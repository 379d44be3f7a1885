"""Removing zero units from a stripped graph: smaller dense kernels.

`shrink_units(graph_def, outputs)` finds each layer's zero output units and
what goes with them (`unit_traversal.analyze` with `unit_rules`),
decides which go (`unit_removal.decide`: channels tied by a residual add,
a gate or a join go only when they are zero in every layer of their coupled
group), then slices every constant involved and folds the constant a
removed unit emits into the next layer's bias:

  before:  h = Relu(BiasAdd(MatMul(x, W1[64, 8]), b1[8]))
           y = BiasAdd(MatMul(h, W2[8, 3]), b2[3])      # W1[:, 5:] == 0
  after:   h = Relu(BiasAdd(MatMul(x, W1[64, 5]), b1[5]))
           y = BiasAdd(MatMul(h, W2[5, 3]), b2 + relu(b1[5:]) @ W2[5:])

  residual: y = Conv(x, K1) + Conv(x, K2)   # K1[..., 2] == K2[..., 2] == 0
            -> channel 2 leaves K1, K2 and the next layer's kernel rows

A constant that feeds more than the edited node is copied first, so other
readers keep their values; a frozen variable (a bias) is sliced in place so
that the stripped model's variable copies can follow it. The input is not
modified; what the edits left unread (BatchNorm parameters computed into
one constant, for instance) is dropped (`drop_unused`).
"""

import collections
import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from graph_prune.passes import driver
from graph_prune.passes import drop_unused
from graph_prune.passes import graph_ir
from graph_prune.passes import head_flow
from graph_prune.passes import unit_costs
from graph_prune.passes import unit_flow
from graph_prune.passes import unit_removal
from graph_prune.passes import unit_rules
from graph_prune.passes import unit_traversal


@dataclasses.dataclass(frozen=True)
class LayerUnits:
  """One layer (a producer of units) before and after shrinking.

  Attributes:
    kernel: the Const node of its kernel (the folded weight's node).
    op: MatMul, Conv2D or Conv3D.
    units_before, units_after: output units.
    zero_units: units whose kernel slice is all zero.
    macs_before, macs_after: its multiply-adds per example.
    kept: why zero units were kept, one sentence each.
    remaining: the indices of the output units that stay, in order (what a
      rebuilt Keras layer slices its folded-away parameters by).
  """

  kernel: str
  op: str
  units_before: int
  units_after: int
  zero_units: int
  macs_before: int
  macs_after: int
  kept: Tuple[str, ...]
  remaining: Tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class ShrinkResult:
  """What `shrink_units` did.

  Attributes:
    layers: one entry per producer, in graph order.
    params_before, params_after: float constant values in the graph.
    macs_before, macs_after: multiply-adds per example of every MatMul and
      convolution of the graph.
    coupled: the groups of layers whose channels are tied (residual adds,
      gates), `unit_removal.CoupledGroup`s.
    notes: what stays by design, one sentence each (a transformer's
      residual stream).
  """

  layers: Tuple[LayerUnits, ...]
  params_before: int
  params_after: int
  macs_before: int
  macs_after: int
  coupled: Tuple[unit_removal.CoupledGroup, ...] = ()
  notes: Tuple[str, ...] = ()


def shrink_units(
  graph_def,
  output_names: Sequence[str],
  suffix: str = 'shrunk',
  weight_names: Optional[Mapping[str, str]] = None,
  values: Optional[Mapping[str, Callable[[], np.ndarray]]] = None,
) -> driver.PassResult[graph_pb2.GraphDef, 'ShrinkResult']:
  """Removes every removable zero unit of `graph_def` (see module docstring).

  Args:
    graph_def: a stripped GraphDef (every weight a Const); not modified.
    output_names: its output tensors.
    suffix: ends the names of the Consts the pass adds (unique per call
      keeps several shrunk graphs importable into one function).
    weight_names: kernel Const node -> its weight's name, which the kept
      reasons then name instead of the node (`unit_removal.decide`).
    values: Const name -> a function giving its value, for Consts that
      hold none (a variable's stub, `variable_view.const_view`): the graph
      then keeps its weights as variables, and each sliced one is written
      into its stub for `variable_view.thaw`.

  Returns:
    A `PassResult` with the new GraphDef and a `ShrinkResult`.
  """
  flow = head_flow.extend(
    unit_traversal.analyze(graph_def, output_names, unit_rules.RULES, values)
  )
  decision = unit_removal.decide(flow, weight_names)
  graph = flow.graph
  removed = decision.removed
  new = graph_ir.copy_graph_def(graph_def)
  edits = collections.defaultdict(list)
  for edit in flow.edits:
    if removed[edit.root].any():
      edits[(edit.node, edit.position)].append(edit)
  values = {
    edge: _edited(graph, edge, on_edge, removed)
    for edge, on_edge in edits.items()
  }
  _write(new, graph, values, suffix)
  for node in new.node:
    if '_output_shapes' in node.attr:
      del node.attr['_output_shapes']
  new = drop_unused.drop_unused(new, output_names).graph
  before = unit_costs.costs(graph_def)
  after = unit_costs.costs(new)
  layers = tuple(_layer(graph, g, decision, before, after) for g in flow.groups)
  report = ShrinkResult(
    layers,
    before.params,
    after.params,
    before.total_macs,
    after.total_macs,
    decision.coupled,
    tuple(flow.notes) + _cost_notes(before),
  )
  return driver.PassResult(new, report, changed=bool(values))


def _cost_notes(before: unit_costs.Costs) -> Tuple[str, ...]:
  if not before.unknown_dims:
    return ()
  return (
    'multiply-adds count each dimension the graph leaves open (a sequence '
    'length) as 1: per token for a transformer, its attention scores as '
    'for one token',
  )


def _edited(graph, edge, edits, removed) -> np.ndarray:
  """The new value of one constant input edge: folds first, then slices."""
  node = graph.nodes[edge[0]]
  if edits[0].kind == 'reshape':
    # The rule gives the new shape (`unit_rules._reshape`): the batch -1.
    # Reshape's shape, or one part of a computed shape (ConcatV2, Pack).
    dtype = node.attr['Tshape' if node.op == 'Reshape' else 'T'].type
    dtype = tf.as_dtype(dtype).as_numpy_dtype
    return np.asarray(edits[0].fold(removed), dtype=dtype)
  value = graph.value(graph.input(node, edge[1]))
  for edit in edits:
    if edit.kind == 'fold':
      value = (value + edit.fold(removed)).astype(value.dtype)
  for edit in edits:
    if edit.kind == 'slice':
      value = np.compress(~removed[edit.root], value, axis=edit.axis)
  return value


def _write(new, graph, values: Dict[Tuple[str, int], np.ndarray], suffix):
  """Puts each new value in its Const, or in a new Const for that edge."""
  nodes = {n.name: n for n in new.node}
  added = []
  for (name, position), value in sorted(values.items()):
    node = nodes[name]
    source = _exclusive_source(graph, node.input[position])
    proto = tf.make_tensor_proto(value)
    if source is not None:
      nodes[source].attr['value'].tensor.CopyFrom(proto)
      continue
    const = new.node.add(name=f'{name}/{suffix}_{position}', op='Const')
    const.attr['dtype'].type = proto.dtype
    const.attr['value'].tensor.CopyFrom(proto)
    added.append(const)
    node.input[position] = const.name
  return added


def _exclusive_source(graph, text: str):
  """The Const `text` reads through Identities only it reads, or None."""
  tensor = unit_flow.tensor_name(text)
  while True:
    if len(graph.consumers[tensor]) != 1 or tensor in graph.outputs:
      return None
    node = graph.nodes[graph_ir.node_name(tensor)]
    if tensor != f'{node.name}:0':
      return None
    if node.op == 'Const':
      return node.name
    if node.op not in ('Identity', 'Snapshot'):
      return None
    tensor = unit_flow.tensor_name(node.input[0])


def _layer(graph, group, decision, before, after) -> LayerUnits:
  node = graph.nodes[group.producer]
  removed = decision.removed[group.ids]
  return LayerUnits(
    kernel=group.kernel,
    op=node.op,
    units_before=int(group.zero.size),
    units_after=int(group.zero.size - removed.sum()),
    zero_units=int(group.zero.sum()),
    macs_before=before.macs.get(group.producer, 0),
    macs_after=after.macs.get(group.producer, 0),
    kept=decision.layer_reasons[group.producer],
    remaining=tuple(int(i) for i in np.flatnonzero(~removed)),
  )


def describe(result: ShrinkResult) -> List[str]:
  """One line per layer that kept zero units and per coupled group."""
  lines = [
    f'{layer.kernel}: kept {layer.zero_units - removed} zero units: '
    + '; '.join(layer.kept)
    for layer in result.layers
    for removed in [layer.units_before - layer.units_after]
    if layer.kept
  ]
  for group in result.coupled:
    kept = group.zero_channels - (group.channels_before - group.channels_after)
    lines.append(
      f'coupled {", ".join(group.members)}: channels '
      f'{group.channels_before}->{group.channels_after}'
      + (
        f', kept {kept} zero channels: ' + '; '.join(group.kept) if kept else ''
      )
    )
  return lines
