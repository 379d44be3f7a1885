"""Attention heads in shrink's unit flow: whole heads removed.

`head_walk` follows the heads axis of every attention of the stripped
graph; this recorder turns what it finds into the unit flow's terms
(`unit_flow`): each query, key, value and output kernel is a `Group` whose
units are its heads (a head is zero when the kernel's slice along the heads
axis is all zero), the union-find ties a head's slices in all four (and, under
grouped-query attention, a key/value head with its query heads), and the
edits slice the kernels and the `[heads, head_dim]` biases along the heads
axis and rewrite the constant head counts of reshapes (Gemma's grouped
query `[b, s, kv, rep, d]`). A head goes when every slice of it is zero: its
output kernel slice then adds exactly nothing, and no other head reads it
(each head's softmax is its own). Any op the walk cannot follow keeps the
heads it reads, and says so.

    flow = head_flow.extend(unit_traversal.analyze(graph_def, outputs, RULES))
"""

import dataclasses
from typing import Optional

import numpy as np

from graph_prune.passes import head_walk
from graph_prune.passes.unit_flow import Edit
from graph_prune.passes.unit_flow import Flow
from graph_prune.passes.unit_flow import Group


def extend(flow: Flow) -> Flow:
  """`flow` with the attention heads of its graph as groups and edits.

  Args:
    flow: from `unit_traversal.analyze`; its `units` gain the heads.

  Returns:
    A `Flow` with one more `Group` per attention kernel, the edits that
    remove heads, and the reasons some heads stay.
  """
  recorder = _Heads(flow)
  walk = head_walk.Walk(recorder)
  for op in flow.graph.operations():
    walk.visit(op)
  for tensor, (_, ids) in walk.layouts.items():
    if tensor in flow.graph.outputs:
      recorder.stop(f'the heads are a model output ({tensor!r})', ids)
  notes = ()
  if recorder.hidden:
    sizes = ', '.join(str(h) for h in sorted(recorder.hidden))
    notes = (
      f'the hidden size of the residual stream ({sizes}) stays: attention '
      'and feed-forward outputs are added to it, and LayerNorm/RMSNorm '
      'statistics range over it',
    )
  return dataclasses.replace(
    flow,
    groups=flow.groups + tuple(recorder.groups),
    edits=flow.edits + tuple(recorder.edits),
    stops=flow.stops + tuple(recorder.stops),
    notes=flow.notes + notes,
  )


class _Heads(head_walk.Recorder):
  """Groups, edits and stops of the heads, in the unit flow's elements."""

  def __init__(self, flow: Flow):
    self.graph = flow.graph
    self.ids = flow.units
    self.groups = []
    self.edits = []
    self.stops = []
    self.hidden = set()  # the output kernels' widths

  def stop(self, reason: str, ids) -> None:
    self.stops.append((reason, np.asarray(ids)))

  def is_param(self, t) -> bool:
    return self.graph.is_constant(t.name)

  def kernel(self, op) -> Optional[int]:
    found = [
      p
      for p, t in enumerate(op.inputs)
      if self.graph.is_constant(t.name)
      and self.graph.const_source(_unreshaped(t).name) is not None
    ]
    return found[0] if len(found) == 1 and len(op.inputs) == 2 else None

  def _group(self, op, position, axis, kernel=None) -> Group:
    """The kernel at `position` (or the `kernel` it reshapes) as a group of
    heads along `axis`."""
    # A lowered einsum's kernel is sliced where its Reshape reads it.
    site, index = (op, position)
    if kernel is not None:
      site, index = op.inputs[position].op, 0
      while site.inputs[0].name != kernel.name:  # through a Transpose
        site = site.inputs[0].op
    tensor = site.inputs[index].name
    source = self.graph.const_source(tensor)
    value = np.moveaxis(np.asarray(self.graph.value(tensor)), axis, 0)
    zero = ~value.reshape(value.shape[0], -1).any(axis=1)
    group = Group(op.name, source, zero, self.ids.add(zero))
    self.groups.append(group)
    self.edits.append(Edit('slice', site.name, index, axis, group.ids))
    return group

  def start(self, op, position, axis, kernel=None) -> np.ndarray:
    return self._group(op, position, axis, kernel).ids

  def end(self, op, position, axis, ids, kernel=None) -> None:
    self.ids.union(self._group(op, position, axis, kernel).ids, ids)
    width = op.inputs[position].shape[-1]
    if width is not None:
      self.hidden.add(int(width))

  def operand(self, op, index, axis, ids) -> None:
    """A bias `[heads, head_dim]` (or a per-head scale): sliced."""
    shape = op.inputs[index].shape
    if shape.rank is None or -axis > shape.rank or shape[axis] != ids.size:
      self.stop(f'{op.type} {op.name!r} has an operand of shape {shape}', ids)
      return
    self.edits.append(Edit('slice', op.name, index, axis, np.asarray(ids)))

  def fixed(self, op, ids) -> None:
    self.stop(
      f'{op.type} {op.name!r} adds the heads to a tensor no attention makes',
      ids,
    )

  def reshaped(self, op, position, ids) -> None:
    """The head count at dim `position` of a Reshape's shape, if constant."""
    shape = op.inputs[1]
    if not self.graph.is_constant(shape.name):
      source = shape.op
      if source.type != 'Pack':
        return  # computed from the tensor's own shape when the graph runs
      part = source.inputs[position]
      if not self.graph.is_constant(part.name):
        return
      # (A count computed from constants only gets a Const of its own.)
      self.edits.append(
        Edit('reshape', source.name, position, root=ids, fold=_count(ids, 0))
      )
      return
    # A shape computed from constants only (Llama's k/v repeat with a fixed
    # sequence length) is evaluated, and the new one is a Const of its own.
    value = np.asarray(self.graph.value(shape.name))
    self.edits.append(
      Edit('reshape', op.name, 1, root=ids, fold=_count(ids, position, value))
    )

  def dropped(self, op, ids) -> None:
    self.stop(
      f'op {op.type} {op.name!r} reads attention heads and shrinking does '
      'not follow them',
      ids,
    )


def _unreshaped(t):
  """The tensor a Reshape (of a Transpose) reshapes: a lowered einsum's
  kernel; else `t`."""
  if t.op.type == 'Reshape':
    t = t.op.inputs[0]
    if t.op.type == 'Transpose':
      t = t.op.inputs[0]
  return t


def _count(ids, position, shape=None):
  """fold(removed): the kept heads' count, alone or at `position` of
  `shape`."""

  def fold(removed):
    kept = int((~removed[ids]).sum())
    if shape is None:
      return np.asarray(kept)
    new = np.array(shape)
    new[position] = kept
    return new

  return fold
