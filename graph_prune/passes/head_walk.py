"""The heads axis followed through attention: one walk for training and shrink.

A head is a slice along a non-last axis of several kernels: the heads axis
of the query, key and value kernels of an `EinsumDense` (`[hidden, heads,
head_dim]`, Gemma's `[heads, hidden, head_dim]`) and axis 0 of the output
kernel (`[heads, head_dim, hidden]`). The channel analyses follow channels
along the last axis only, so this walk follows the heads axis instead: a
*head layout* is (the axis, counted from the end so that broadcast operands
align; an id per position along it). It starts at an `Einsum` whose kernel
(a constant input of rank 3 or more) has two or more axes the data input
does not have (heads, head_dim: the first is the heads axis), and is carried
through the attention: bias adds and scalings (the elementwise ops of
`channel_ops.TABLE`), `Transpose`, the scores' and context's
`BatchMatMulV2` or `Einsum` (which tie the query's and key's heads), the
`Softmax` over keys, rotary embeddings' splits and stacks inside head_dim,
and the reshapes of grouped-query attention. It ends at the output
`Einsum`, whose kernel's axis contracts the heads.

Grouped-query attention needs no rule of its own: Llama repeats each key
and value head for its query heads (`Reshape [b, s, kv, rep, d] -> [b, s,
kv * rep, d]`: ids repeated), Gemma splits the query heads into (kv, rep)
(ids of a block tied), so the union-find ties each key/value head with the
query heads that read it.

What the analyses need besides the layouts goes to a `Recorder`: training's
(`head_groups`) makes groups of kernels, shrink's (`head_flow`) the slices
to cut, the shape constants to rewrite and the heads that must stay.

    walk = Walk(graph, recorder)
    for op in graph.get_operations():
      walk.visit(op)
"""

import re
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from graph_prune.passes import channel_classes
from graph_prune.passes import channel_ops
from graph_prune.passes.channel_ops import Kind

# A layout: (axis < 0, one id per position along it).
Layout = Tuple[int, np.ndarray]

_EQUATION = re.compile(r'^([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$')


class Recorder:
  """What an analysis does where the walk starts, ties or ends heads.

  `ids` is the union-find the walk ties heads in; `kernel(op)` says which
  input of an `Einsum` is a kernel (or None); the other methods record.
  """

  ids: channel_classes.Classes

  def kernel(self, op) -> Optional[int]:
    """The input position of `op`'s kernel, if `op` is a dense einsum."""
    raise NotImplementedError

  def is_param(self, t) -> bool:
    """Whether `t` depends on no input (a bias, a constant)."""
    raise NotImplementedError

  def track(self, op) -> None:
    """Called first for every op, in order."""

  def start(self, op, position: int, axis: int, kernel=None) -> np.ndarray:
    """Heads start at kernel input `position`'s `axis`: their ids.

    `kernel`, when given, is the rank-3 kernel tensor that input reshapes
    (an einsum Keras lowered to a matrix product); `axis` is then its axis.
    """
    raise NotImplementedError

  def end(self, op, position: int, axis: int, ids: np.ndarray, kernel=None):
    """Kernel input `position` contracts heads `ids` along `axis` (of
    `kernel`, when given, as in `start`)."""

  def operand(self, op, index: int, axis: int, ids: np.ndarray) -> None:
    """Constant input `index` of an elementwise op spans the heads."""

  def fixed(self, op, ids: np.ndarray) -> None:
    """Heads `ids` are added to a tensor from outside: they stay."""
    self.ids.fix(ids)

  def reshaped(self, op, position: int, ids: np.ndarray) -> None:
    """A Reshape puts heads `ids` at its output's dim `position`."""

  def dropped(self, op, ids: np.ndarray) -> None:
    """`op` reads heads `ids` and the walk cannot follow them."""


class Walk:
  """One pass over the ops of a graph, in creation (topological) order."""

  def __init__(self, recorder: Recorder):
    self.recorder = recorder
    self.ids = recorder.ids
    self.layouts: Dict[str, Layout] = {}

  def visit(self, op) -> None:
    self.recorder.track(op)
    ins = [self.layouts.get(t.name) for t in op.inputs]
    lowered = _LOWERED.get(op.type) and self._lowered_dense(op, ins)
    if lowered is not None:
      ended = lowered
    elif op.type == 'Einsum':
      ended = self._einsum(op)
    elif all(x is None for x in ins):
      return
    else:
      ended = False
      handler = _HANDLERS.get(op.type)
      if handler is None:
        rule = channel_ops.rule(op.type)
        handler = _BY_KIND.get(None if rule is None else rule.kind)
      if handler is not None:
        handler(self, op, ins)
    if ended or op.type == 'Shape':
      return  # contracted by an output kernel; a shape read when run
    if not any(t.name in self.layouts for t in op.outputs):
      for layout in ins:
        if layout is not None:
          self.recorder.dropped(op, layout[1])

  def _set(self, t, layout: Optional[Layout]) -> None:
    if layout is None:
      return
    axis, ids = layout
    shape = t.shape
    if shape.rank is None or -axis > shape.rank:
      return
    if shape[axis] is not None and shape[axis] != ids.size:
      return
    self.layouts[t.name] = (axis, ids)

  # -- einsums: projections, scores, contexts, the output ----------------

  def _einsum(self, op) -> bool:
    """Returns whether the einsum ended the heads (an output kernel)."""
    match = _EQUATION.match(op.get_attr('equation').decode())
    if match is None or len(op.inputs) != 2:
      return False
    labels = match.group(1), match.group(2)
    out = match.group(3)
    position = self.recorder.kernel(op)
    if position is not None:
      return self._dense_einsum(op, position, labels, out)
    carried = None
    for t, text in zip(op.inputs, labels):
      layout = self.layouts.get(t.name)
      if layout is None:
        continue
      label = text[len(text) + layout[0]]
      if label not in out:
        continue
      if carried is None:
        carried = (label, layout[1])
      elif carried[0] == label:
        self.ids.union(carried[1], layout[1])
    if carried is not None:
      self._set(op.outputs[0], (out.index(carried[0]) - len(out), carried[1]))
    return False

  def _dense_einsum(self, op, position, labels, out) -> bool:
    """An EinsumDense: starts heads (q, k, v) or ends them (the output)."""
    kernel_labels, data_labels = labels[position], labels[1 - position]
    rank = len(kernel_labels)
    layout = self.layouts.get(op.inputs[1 - position].name)
    if layout is not None:
      label = data_labels[len(data_labels) + layout[0]]
      if label in kernel_labels and label not in out:
        axis = kernel_labels.index(label) - rank
        self.recorder.end(op, position, axis, layout[1])
        return True
      return False
    new = [c for c in kernel_labels if c in out and c not in data_labels]
    shape = op.inputs[position].shape
    if len(new) < 2 or shape.rank != rank:
      return False  # a Dense-like einsum: its units are the last axis
    axis = kernel_labels.index(new[0])
    if shape[axis] is None:
      return False
    ids = self.recorder.start(op, position, axis - rank)
    self._set(op.outputs[0], (out.index(new[0]) - len(out), ids))
    return False

  def _lowered_dense(self, op, ins) -> Optional[bool]:
    """An EinsumDense that Keras lowered to a matrix product.

    With every dimension but the batch known, Keras computes
    `abc,cde->abde` as `x @ reshape(kernel, [c, d * e])` and a reshape to
    `[..., d, e]`, and `abcd,cde->abe` as `reshape(x, [..., c * d]) @
    reshape(kernel, [c * d, e])`. The first starts heads along the kernel's
    axis -2 (its output carries each head's id on its `e` columns, which the
    reshape after it splits back); the second ends the heads it reads along
    the kernel's axis -3. The recorder gets the kernel itself. None if `op`
    is not such a product.
    """
    position = self.recorder.kernel(op)
    if position != 1 or op.get_attr(_LOWERED[op.type][0]):
      return None
    if op.get_attr(_LOWERED[op.type][1]):
      return None
    reshaped = op.inputs[1]
    if reshaped.op.type != 'Reshape':
      return None
    ordered = reshaped.op.inputs[0]
    kernel, perm = ordered, [0, 1, 2]
    if ordered.op.type == 'Transpose':
      # Gemma's `abc,dce->abde` and the like: the kernel's axes put in
      # order first; the recorder gets the kernel and its own axis.
      perm = tf.get_static_value(ordered.op.inputs[1])
      if perm is None or sorted(int(p) for p in np.ravel(perm)) != [0, 1, 2]:
        return None
      perm = [int(p) for p in np.ravel(perm)]
      kernel = ordered.op.inputs[0]
    if not _known(ordered.shape, 3) or not _known(reshaped.shape, 2):
      return None
    c, d, e = ordered.shape.as_list()
    layout = ins[0]
    if layout is None and reshaped.shape.as_list() == [c, d * e]:
      ids = self.recorder.start(op, position, perm[1] - 3, kernel=kernel)
      out = op.outputs[0]
      if out.shape.rank is None:
        # (A flat graph of stubs may not know it; the last axis is d * e.)
        self.layouts[out.name] = (-1, np.repeat(ids, e))
      else:
        self._set(out, (-1, np.repeat(ids, e)))
      return False
    if (
      layout is not None
      and layout[0] == -1
      and reshaped.shape.as_list() == [c * d, e]
      and layout[1].size == c * d
    ):
      blocks = layout[1].reshape(c, d)
      if not (blocks == blocks[:, :1]).all():
        return None
      self.recorder.end(
        op, position, perm[0] - 3, blocks[:, 0].copy(), kernel=kernel
      )
      return True
    return None

  # -- ops that keep the heads where they are ----------------------------

  def _same(self, op, ins) -> None:
    self._set(op.outputs[0], next(x for x in ins if x is not None))

  def _elementwise(self, op, ins) -> None:
    """Broadcasting ops: layouts on the same axis tie; others broadcast."""
    out = op.outputs[0]
    carried = [x for x in ins if x is not None]
    axis, ids = carried[0]
    for other_axis, other in carried[1:]:
      if other_axis != axis:
        return
      self.ids.union(ids, other)
    rule = channel_ops.rule(op.type)
    additive = rule is not None and rule.additive
    for index, (t, layout) in enumerate(zip(op.inputs, ins)):
      if layout is not None or t.shape.rank is None or -axis > t.shape.rank:
        continue
      if t.shape[axis] == 1:
        continue
      if self.recorder.is_param(t):
        self.recorder.operand(op, index, axis, ids)
      elif additive:
        self.recorder.fixed(op, ids)  # added from elsewhere
    self._set(out, (axis, ids))

  def _softmax(self, op, ins) -> None:
    """Softmax over the last axis: the heads elsewhere stay."""
    if ins[0] is not None and ins[0][0] != -1:
      self._set(op.outputs[0], ins[0])

  def _batch_matmul(self, op, ins) -> None:
    """Heads on a batch axis of both operands: tied, and carried."""
    carried = [x for x in ins[:2] if x is not None]
    axis, ids = carried[0]
    if axis > -3:
      return  # rows or the contracted axis: no heads there
    for other_axis, other in carried[1:]:
      if other_axis == axis:
        self.ids.union(ids, other)
    self._set(op.outputs[0], (axis, ids))

  def _split(self, op, ins) -> None:
    """A split along another axis (rotary halves of head_dim)."""
    value, axis_input = (1, 0) if op.type == 'Split' else (0, 2)
    layout = ins[value]
    split = tf.get_static_value(op.inputs[axis_input])
    rank = op.inputs[value].shape.rank
    if layout is None or split is None or rank is None:
      return
    if int(np.ravel(split)[0]) % rank == rank + layout[0]:
      return
    for t in op.outputs:
      self._set(t, layout)

  # -- ops that move the heads axis --------------------------------------

  def _transpose(self, op, ins) -> None:
    perm = tf.get_static_value(op.inputs[1])
    if ins[0] is None or perm is None:
      return
    perm = [int(p) for p in np.ravel(perm)]
    axis, ids = ins[0]
    new = perm.index(len(perm) + axis)
    self._set(op.outputs[0], (new - len(perm), ids))

  def _insert_axis(self, op, ins, inserted: Optional[int]) -> None:
    """The heads axis after an axis is inserted at `inserted` (of the
    output)."""
    layout = next(x for x in ins if x is not None)
    rank = op.outputs[0].shape.rank
    if inserted is None or rank is None:
      return
    axis, ids = layout
    position = rank - 1 + axis  # in the input
    inserted %= rank
    if inserted <= position:
      position += 1
    self._set(op.outputs[0], (position - rank, ids))

  def _expand_dims(self, op, ins) -> None:
    if ins[0] is None:
      return
    inserted = tf.get_static_value(op.inputs[1])
    if inserted is not None:
      inserted = int(np.ravel(inserted)[0])
    self._insert_axis(op, ins, inserted)

  def _pack(self, op, ins) -> None:
    carried = [x for x in ins if x is not None]
    if len(carried) != len(ins):
      return
    axis, ids = carried[0]
    for other_axis, other in carried[1:]:
      if other_axis != axis:
        return
      self.ids.union(ids, other)
    self._insert_axis(op, ins, op.get_attr('axis'))

  def _tile(self, op, ins) -> None:
    if ins[0] is None:
      return
    axis = ins[0][0]
    before, after = op.inputs[0].shape, op.outputs[0].shape
    multiples = tf.get_static_value(op.inputs[1])
    once = multiples is not None and int(np.ravel(multiples)[axis]) == 1
    if once or (before.rank and after.rank and before[axis] == after[axis]):
      self._set(op.outputs[0], ins[0])

  def _reshape(self, op, ins) -> None:
    """Kept, merged with the axes after it, or split into (kv, rep)."""
    if ins[0] is None:
      return
    before = op.inputs[0].shape
    after = op.outputs[0].shape
    if after.rank is None:
      return
    axis, ids = ins[0]
    shape_out = after.as_list()
    if before.rank is not None:
      shape_in = before.as_list()
    elif axis == -1:
      # The last axis' values land in the output's trailing dims whose
      # product they are (row-major); the leading dims are the rest.
      shape_in = _trailing(shape_out, ids.size)
      if shape_in is None:
        return
    else:
      return
    position = len(shape_in) + axis
    if (
      position >= len(shape_out)
      or shape_in[:position] != (shape_out[:position])
    ):
      return
    rest_in, rest_out = shape_in[position + 1 :], shape_out[position + 1 :]
    n_in, n_out = shape_in[position], shape_out[position]
    if None in rest_in or None in rest_out or n_out is None:
      return
    if n_in * int(np.prod(rest_in)) != n_out * int(np.prod(rest_out)):
      return
    if n_out == n_in:
      new = ids
    elif n_out % n_in == 0 and _leading(rest_in, n_out // n_in):
      new = np.repeat(ids, n_out // n_in)
    elif n_in % n_out == 0 and _leading(rest_out, n_in // n_out):
      blocks = ids.reshape(n_out, n_in // n_out)
      for block in blocks:
        self.ids.union(np.full(block.size, block[0]), block)
      new = blocks[:, 0].copy()
    else:
      return
    self.recorder.reshaped(op, position, new)
    self._set(op.outputs[0], (position - len(shape_out), new))


def _trailing(shape_out, size: int):
  """`shape_out`'s leading dims and `size`, if its trailing dims multiply to
  `size`; else None."""
  k, total = len(shape_out), 1
  while k > 0 and total < size and shape_out[k - 1] is not None:
    total *= shape_out[k - 1]
    k -= 1
  return shape_out[:k] + [size] if total == size else None


def _known(shape, rank: int) -> bool:
  return shape.rank == rank and None not in shape.as_list()


def _leading(dims, product: int) -> bool:
  """Whether the first few of `dims` multiply to `product`."""
  total = 1
  for d in dims:
    if total == product:
      return True
    total *= d
  return total == product


# Matrix products an EinsumDense may be lowered to: (op, its transpose
# attributes of the data and the kernel).
_LOWERED = {
  'BatchMatMulV2': ('adj_x', 'adj_y'),
  'BatchMatMulV3': ('adj_x', 'adj_y'),
  'MatMul': ('transpose_a', 'transpose_b'),
}

_HANDLERS = {
  'Softmax': Walk._softmax,
  'LogSoftmax': Walk._softmax,
  'BatchMatMulV2': Walk._batch_matmul,
  'BatchMatMulV3': Walk._batch_matmul,
  'Transpose': Walk._transpose,
  'ExpandDims': Walk._expand_dims,
  'Pack': Walk._pack,
  'Tile': Walk._tile,
  'Reshape': Walk._reshape,
  'Split': Walk._split,
  'SplitV': Walk._split,
  'ZerosLike': Walk._same,
  'OnesLike': Walk._same,
}
_BY_KIND = {
  Kind.UNARY: Walk._same,
  Kind.ELEMENTWISE: Walk._elementwise,
}
