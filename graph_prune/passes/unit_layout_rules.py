"""Rules of the unit flow for ops that only rearrange channels.

Concatenation along the channel axis places input i's channel c at output
channel `offset_i + c`; a split along it takes the channels apart again;
along another axis both keep every channel where it is, so channel c of
every input is one class. Padding keeps the channels and fills new
positions with a constant, which a removed channel must equal. Rules as in
`unit_rules` (which merges this table into its own).
"""

from typing import List

import numpy as np

from graph_prune.passes.channel_ops import Kind
from graph_prune.passes.unit_flow import Space
from graph_prune.passes.unit_traversal import CannotFollowError
from graph_prune.passes.unit_traversal import Context
from graph_prune.passes.unit_traversal import follow_same
from graph_prune.passes.unit_traversal import zero_channels


def _axis(ctx: Context, node, tensor: str, axis_tensor: str) -> int:
  """The non-negative constant axis `node` works on, for `tensor`'s rank."""
  shape = ctx.graph.shape(tensor)
  if not shape or not ctx.graph.is_constant(axis_tensor):
    raise CannotFollowError(f'{node.op} {node.name!r} has an unknown axis')
  return int(np.ravel(ctx.graph.value(axis_tensor))[0]) % len(shape)


def _space_or_fixed(ctx: Context, node, tensor: str) -> Space:
  """`tensor`'s space; channels no producer owns are element 0."""
  space = ctx.space(tensor)
  if space is not None:
    return space
  shape = ctx.graph.shape(tensor)
  if not shape or shape[-1] is None:
    raise CannotFollowError(
      f'{node.op} {node.name!r} has an input of unknown channels ({tensor!r})'
    )
  width = shape[-1]
  return Space(tensor, np.zeros(width, np.int64), np.zeros(width))


def _tie(ctx: Context, node, parts: List[Space]) -> Space:
  """Channel c of every part is one class (a join along another axis)."""
  first = parts[0]
  for part in parts[1:]:
    if part.root.size != first.root.size:
      raise CannotFollowError(
        f'{node.op} {node.name!r} joins tensors of different channel counts'
      )
  for part in parts:
    fixed = np.zeros(first.root.size, dtype=bool)
    differ = np.zeros(first.root.size, dtype=bool)
    for other in parts:
      fixed |= other.root == 0
      differ |= other.const != part.const
    ctx.stop(
      f'{node.op} {node.name!r} joins the channels with channels that no '
      'layer shrinking follows produces',
      part.root[fixed],
    )
    ctx.stop(
      f'{node.op} {node.name!r} joins removed channels of different constant '
      'values',
      part.root[differ],
    )
    ctx.units.union(first.root, part.root)
  return first


def _concat(ctx: Context, node, position: int, space: Space):
  count = node.attr['N'].i
  axis = _axis(ctx, node, space.tensor, ctx.graph.input(node, count))
  tensors = [ctx.graph.input(node, i) for i in range(count)]
  parts = [_space_or_fixed(ctx, node, t) for t in tensors]
  if axis == len(ctx.graph.shape(space.tensor)) - 1:
    root = np.concatenate([p.root for p in parts])
    const = np.concatenate([p.const for p in parts])
    return [Space(f'{node.name}:0', root, const)]
  return follow_same(_tie(ctx, node, parts), node)


def _split(ctx: Context, node, position: int, space: Space):
  """Split(axis, value) and SplitV(value, sizes, axis)."""
  if node.op == 'Split':
    value_position, axis_position = 1, 0
  else:
    value_position, axis_position = 0, 2
  if position != value_position:
    raise CannotFollowError(f'{node.op} {node.name!r} reads the channels')
  axis = _axis(ctx, node, space.tensor, ctx.graph.input(node, axis_position))
  count = node.attr['num_split'].i
  if axis != len(ctx.graph.shape(space.tensor)) - 1:
    return [follow_same(space, node, index=i)[0] for i in range(count)]
  width = space.root.size
  if node.op == 'Split':
    sizes = [width // count] * count
  else:
    sizes_tensor = ctx.graph.input(node, 1)
    if not ctx.graph.is_constant(sizes_tensor):
      raise CannotFollowError(f'SplitV {node.name!r} has unknown sizes')
    sizes = [int(s) for s in np.ravel(ctx.graph.value(sizes_tensor))]
    if -1 in sizes:
      sizes[sizes.index(-1)] = width - (sum(sizes) + 1)
  bounds = np.cumsum([0, *sizes])
  if bounds[-1] != width:
    raise CannotFollowError(
      f'{node.op} {node.name!r} splits {width} channels into {sizes}'
    )
  return [
    Space(
      f'{node.name}:{i}',
      space.root[bounds[i] : bounds[i + 1]],
      space.const[bounds[i] : bounds[i + 1]],
    )
    for i in range(count)
  ]


def _pad(ctx: Context, node, position: int, space: Space):
  """Pad, PadV2, MirrorPad: the channel axis must not be padded."""
  paddings_tensor = ctx.graph.input(node, 1)
  if position != 0 or not ctx.graph.is_constant(paddings_tensor):
    raise CannotFollowError(f'{node.op} {node.name!r} pads unknown amounts')
  paddings = np.asarray(ctx.graph.value(paddings_tensor)).reshape(-1, 2)
  if paddings[-1].any():
    raise CannotFollowError(f'{node.op} {node.name!r} pads the channels')
  if node.op == 'MirrorPad' or not paddings.any():
    return follow_same(space, node)
  fill = 0.0
  if node.op == 'PadV2':
    fill_tensor = ctx.graph.input(node, 2)
    if not ctx.graph.is_constant(fill_tensor):
      raise CannotFollowError(f'PadV2 {node.name!r} pads with a variable')
    fill = float(np.ravel(ctx.graph.value(fill_tensor))[0])
  moved = zero_channels(space, ctx) & (space.const != fill)
  ctx.stop(
    f'{node.op} {node.name!r} pads with {fill}, so a removed unit of another '
    'constant would not be constant after it',
    space.root[moved],
  )
  return follow_same(space, node)


BY_KIND = {
  Kind.CONCAT: _concat,
  Kind.SPLIT: _split,
  Kind.PAD: _pad,
}
