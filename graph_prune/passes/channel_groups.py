"""Which channels of a traced graph belong together: the analysis behind
`unit_params=all` and `unit_groups=coupled`.

Every output channel of a *producer* (a MatMul or channels-last Conv2D/3D
whose kernel is a unit-pruned weight) gets an id. The analysis walks the
traced graph once, in order, and carries each tensor's *layout* (channel ->
id along its last axis) through the ops that keep channels apart:
activations, bias and BatchNorm arithmetic (fused or not, training or
inference), pooling, padding, reductions over other axes, reshapes that keep
the last axis, depthwise convs (a channel per input channel and multiplier),
concatenations and splits along the channels (with offsets). It finds:

  * the *unit parameters* of each id: the trainable rank-1 variables (a
    bias, BatchNorm's scale and shift) whose values an elementwise op
    combines with the channel, i.e. what `unit_params=all` masks with the
    unit (`ParamMask`);
  * with `coupled`, which ids are one channel: an elementwise op of two
    layouts (a residual add, squeeze-and-excitation's `x * gate`) ties them
    position by position (union-find), a depthwise kernel joins as a member
    along its channel axis. A group is a set of kernels sharing channels; a
    channel that an add also takes from elsewhere (the network's input) is
    *fixed*: pruning it would remove nothing (`UnitGroup`).

Ops not listed end a layout: the channels are read by a next layer's kernel,
or mixed in a way that has no channels (a Softmax over them, a Flatten). It
reads `cf.graph` of the traced function and changes nothing: an analysis,
not a pass.
"""

import collections
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from graph_prune.passes import channel_classes
from graph_prune.passes import channel_ops
from graph_prune.passes import graph_cones
from graph_prune.passes.channel_group_types import ChannelGroups
from graph_prune.passes.channel_group_types import Member
from graph_prune.passes.channel_group_types import ParamMask
from graph_prune.passes.channel_group_types import UnitGroup
from graph_prune.passes.channel_ops import Kind


def analyse(
  analysis,
  consumers: Mapping[str, str],
  variables: Mapping[str, tf.Variable],
  coupled: bool,
  params: bool,
) -> ChannelGroups:
  """Finds unit parameters and coupled channel groups of a traced graph.

  Args:
    analysis: the scan's `Analysis` of the traced function.
    consumers: top-level node name -> the unit-pruned kernel it consumes
      (the scan's `WeightUse.consumers`): the producers and depthwise convs.
    variables: name -> variable of every captured variable.
    coupled: find coupled groups (`unit_groups=coupled`).
    params: find unit parameters (`unit_params=all`).

  Returns:
    A `ChannelGroups`.
  """
  walk = _Walk(analysis, consumers, variables, coupled)
  walk.run()
  return ChannelGroups(
    groups=walk.groups() if coupled else (),
    params=walk.param_masks() if params else (),
  )


class _Walk:
  """One pass over the ops of `cf.graph`, in creation (topological) order."""

  def __init__(self, analysis, consumers, variables, coupled):
    cf = analysis.concrete_function
    self.graph = cf.graph
    self.consumers = consumers
    self.kernels = set(consumers.values())
    self.variables = variables
    self.coupled = coupled
    self.ids = channel_classes.Classes()
    self.layouts: Dict[str, np.ndarray] = {}
    self.kernel_ids: Dict[str, np.ndarray] = {}
    self.owner: Dict[int, Tuple[str, int]] = {}  # id -> (kernel, unit)
    self.followers: List[Tuple[str, np.ndarray]] = []  # depthwise kernels
    self.params: Dict[str, np.ndarray] = {}
    self.conflicts = set()
    self.cones = graph_cones.Cones(analysis)

  def run(self) -> None:
    for op in self.graph.get_operations():
      self._visit(op)

  # -- layouts --------------------------------------------------------------

  def _visit(self, op) -> None:
    self.cones.track(op)
    rule = channel_ops.rule(op.type)
    if rule is None:
      return  # the channels end here
    if rule.kind is Kind.PRODUCER:
      self._producer(op)
      return
    ins = [self.layouts.get(t.name) for t in op.inputs]
    if any(x is not None for x in ins):
      _HANDLERS[rule.kind](self, op, ins, rule)

  def _unary(self, op, ins, rule) -> None:
    del rule  # every unary op keeps channel c at c
    self._set(op.outputs[0], ins[0])

  def _identity_n(self, op, ins, rule) -> None:
    del rule  # output k is input k
    for t, layout in zip(op.outputs, ins):
      self._set(t, layout)

  def _batch_norm(self, op, ins, rule) -> None:
    del rule  # training or inference alike: scale and shift per channel
    if ins[0] is not None:
      self._param_inputs(op, ins[0], [1, 2])
      self._set(op.outputs[0], ins[0])

  def _spatial(self, op, ins, rule) -> None:
    """Pooling and padding: fine while the last axis is left alone."""
    del rule
    if ins[0] is not None and self._keeps_last_axis(op):
      self._set(op.outputs[0], ins[0])

  def _reshape(self, op, ins, rule) -> None:
    del rule  # followed while the last axis stays the same
    if ins[0] is not None and _last(op.inputs[0]) == _last(op.outputs[0]):
      self._set(op.outputs[0], ins[0])

  def _transpose(self, op, ins, rule) -> None:
    del rule  # followed while the last axis stays last
    perm = tf.get_static_value(op.inputs[1])
    rank = op.inputs[0].shape.rank
    if ins[0] is None or perm is None or not rank:
      return
    if int(np.ravel(perm)[-1]) % rank == rank - 1:
      self._set(op.outputs[0], ins[0])

  def _ends(self, op, ins, rule) -> None:
    del op, ins, rule  # reads only the shape: the channels end here

  def _set(self, t, layout) -> None:
    if layout is not None and _last(t) == layout.size:
      self.layouts[t.name] = layout

  def _producer(self, op) -> None:
    if op.type == 'MatMul':
      if op.get_attr('transpose_a') or op.get_attr('transpose_b'):
        return
    elif op.type == 'BatchMatMulV2':
      if op.get_attr('adj_x') or op.get_attr('adj_y'):
        return
      if op.inputs[1].shape.rank != 2:
        return  # no kernel: attention's scores and contexts
    elif not op.get_attr('data_format').endswith(b'C'):
      return
    kernel = self.consumers.get(op.name)
    if kernel is None or not self.cones.varies(op.inputs[0]):
      return
    units = _last(op.inputs[1])
    if units is None:
      return
    if kernel not in self.kernel_ids:
      ids = self.ids.new(units)
      self.kernel_ids[kernel] = ids
      for unit, i in enumerate(ids.tolist()):
        self.owner[i] = (kernel, unit)
    self._set(op.outputs[0], self.kernel_ids[kernel])

  def _elementwise(self, op, ins, rule) -> None:
    out = op.outputs[0]
    width = _last(out)
    carried = [
      (t, x)
      for t, x in zip(op.inputs, ins)
      if x is not None and _last(t) == width
    ]
    if not carried:
      return
    layout = carried[0][1]
    for _, other in carried[1:]:
      if np.array_equal(other, layout):
        continue
      if not self.coupled:
        return
      self.ids.union(layout, other)
    for t, x in zip(op.inputs, ins):
      if x is not None:
        continue
      if self.cones.is_param(t):
        self._param(t, layout, width)
      elif rule.additive and _last(t) == width:
        if not self.coupled:
          return
        self.ids.fix(layout)
    self._set(out, layout)

  def _param_inputs(self, op, layout, positions) -> None:
    for position in positions:
      t = op.inputs[position]
      if self.cones.is_param(t):
        self._param(t, layout, layout.size)

  def _param(self, t, layout, width) -> None:
    """The trainable rank-1 variables of width `width` in `t`'s cone."""
    shape = t.shape
    if shape.rank is None or any(d != 1 for d in shape.as_list()[:-1]):
      return
    for name in self.cones.variables(t):
      v = self.variables.get(name)
      if v is None or not v.trainable or v.shape.as_list() != [width]:
        continue
      if name in self.params and not np.array_equal(self.params[name], layout):
        self.conflicts.add(name)
      self.params.setdefault(name, layout)

  def _keeps_last_axis(self, op) -> bool:
    if channel_ops.rule(op.type).kind is Kind.POOL:
      return op.get_attr('data_format').endswith(b'C')
    paddings = tf.get_static_value(op.inputs[1])
    return paddings is not None and not np.any(np.asarray(paddings)[-1])

  def _reduce(self, op, ins, rule) -> None:
    del rule  # kept while the last axis is not reduced
    layout = ins[0]
    axes = tf.get_static_value(op.inputs[1])
    rank = op.inputs[0].shape.rank
    if layout is None or axes is None or rank is None:
      return
    if (rank - 1) not in {int(a) % rank for a in np.ravel(axes)}:
      self._set(op.outputs[0], layout)

  def _depthwise(self, op, ins, rule) -> None:
    del rule
    layout = ins[0]
    if layout is None or not op.get_attr('data_format').endswith(b'C'):
      return
    multiplier = _last(op.inputs[1])
    if multiplier is None:
      return
    kernel = self.consumers.get(op.name)
    if self.coupled and kernel is not None:
      self.followers.append((kernel, layout))
    self._set(op.outputs[0], np.repeat(layout, multiplier))

  def _axis(self, op, t) -> Optional[int]:
    axis = tf.get_static_value(t)
    rank = op.outputs[0].shape.rank
    if axis is None or rank is None:
      return None
    return int(np.ravel(axis)[0]) % rank

  def _concat(self, op, ins, rule) -> None:
    del rule
    values, layouts = list(op.inputs[:-1]), ins[:-1]
    axis = self._axis(op, op.inputs[-1])
    if axis is None:
      return
    if axis != op.outputs[0].shape.rank - 1:
      self._elementwise_all(op, values, layouts)
      return
    parts = []
    for t, layout in zip(values, layouts):
      width = _last(t)
      if width is None:
        return
      if layout is None:
        layout = self.ids.new(width)
        self.ids.fix(layout)
      parts.append(layout)
    self._set(op.outputs[0], np.concatenate(parts))

  def _elementwise_all(self, op, values, layouts) -> None:
    present = [x for x in layouts if x is not None]
    if len(present) != len(layouts):
      return
    for other in present[1:]:
      if not np.array_equal(other, present[0]):
        if not self.coupled:
          return
        self.ids.union(present[0], other)
    self._set(op.outputs[0], present[0])

  def _split(self, op, ins, rule) -> None:
    del rule
    value_index, axis_index = (1, 0) if op.type == 'Split' else (0, 2)
    layout = ins[value_index]
    if layout is None:
      return
    axis = self._axis(op, op.inputs[axis_index])
    if axis is None:
      return
    if axis != op.outputs[0].shape.rank - 1:
      for t in op.outputs:
        self._set(t, layout)
      return
    start = 0
    for t in op.outputs:
      width = _last(t)
      if width is None:
        return
      self._set(t, layout[start : start + width])
      start += width

  # -- results --------------------------------------------------------------

  def param_masks(self) -> Tuple[ParamMask, ...]:
    owners = {}  # channel class -> a producer unit in it
    for i, unit in sorted(self.owner.items()):
      owners.setdefault(self.ids.find(i), unit)

    def source(i):
      root = self.ids.find(i)
      return None if self.ids.is_fixed(root) else owners.get(root)

    masks = []
    for name, layout in self.params.items():
      if name in self.conflicts or name in self.kernels:
        continue
      sources = tuple(source(i) for i in layout.tolist())
      if any(s is not None for s in sources):
        masks.append(ParamMask(name, sources))
    return tuple(masks)

  def groups(self) -> Tuple[UnitGroup, ...]:
    entries = [(k, -1, ids) for k, ids in self.kernel_ids.items()]
    entries += [(k, -2, ids) for k, ids in self.followers]
    return tuple(group_entries(self.ids, entries, min_entries=2))


def group_entries(
  ids: channel_classes.Classes, entries, min_entries: int = 1
) -> List[UnitGroup]:
  """Kernels sharing any channel class, as groups (one per cluster).

  Args:
    ids: the channel classes.
    entries: (kernel, axis, ids along that axis) per member slice set.
    min_entries: clusters of fewer entries are left out.

  Returns:
    One `UnitGroup` per cluster of at least `min_entries` entries.
  """
  by_root = collections.defaultdict(set)
  for index, (_, _, members) in enumerate(entries):
    for i in members.tolist():
      by_root[ids.find(i)].add(index)
  # Entries sharing any channel form one group.
  clusters_of = channel_classes.Classes()
  clusters_of.new(len(entries))
  for members in by_root.values():
    first, *rest = sorted(members)
    for other in rest:
      clusters_of.union(first, other)
  clusters = collections.defaultdict(list)
  for index in range(len(entries)):
    clusters[clusters_of.find(index)].append(index)
  return [
    _group(ids, [entries[i] for i in indices])
    for indices in clusters.values()
    if len(indices) >= min_entries
  ]


def _group(ids, entries) -> UnitGroup:
  roots: Dict[int, int] = {}
  members = []
  seen = set()
  for kernel, axis, slots in entries:
    if (kernel, axis) in seen:
      continue
    seen.add((kernel, axis))
    channels = []
    for i in slots.tolist():
      root = ids.find(i)
      channels.append(roots.setdefault(root, len(roots)))
    members.append(Member(kernel, axis, tuple(channels)))
  fixed = tuple(
    channel for root, channel in roots.items() if ids.is_fixed(root)
  )
  return UnitGroup(tuple(members), len(roots), fixed)


def _last(t) -> Optional[int]:
  shape = t.shape
  if shape.rank is None or shape.rank == 0:
    return None
  return shape.as_list()[-1]


# One handler per kind of `channel_ops.TABLE` (the producer's is separate:
# it starts channels rather than carrying them).
_HANDLERS = {
  Kind.UNARY: _Walk._unary,
  Kind.ELEMENTWISE: _Walk._elementwise,
  Kind.IDENTITY_N: _Walk._identity_n,
  Kind.BATCH_NORM: _Walk._batch_norm,
  Kind.POOL: _Walk._spatial,
  Kind.PAD: _Walk._spatial,
  Kind.REDUCE: _Walk._reduce,
  Kind.RESHAPE: _Walk._reshape,
  Kind.SHAPE: _Walk._ends,
  Kind.DEPTHWISE: _Walk._depthwise,
  Kind.CONCAT: _Walk._concat,
  Kind.SPLIT: _Walk._split,
  Kind.TRANSPOSE: _Walk._transpose,
}

KINDS_FOLLOWED = frozenset(_HANDLERS) | {Kind.PRODUCER}
