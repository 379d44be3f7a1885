"""Rules of the unit flow for ops that reshape around the units.

A reshape keeps channel c at c while the units stay the last axis (row-major
order): squeeze-and-excitation's `[N, C] -> [N, 1, 1, C]`, Conv1D's
Squeeze/ExpandDims, Keras 3's Dense on a 3-D input (Tensordot: a Transpose
with the identity permutation, `Reshape [b, s, C] -> [b * s, C]`, MatMul,
`Reshape` back with a computed shape). A Flatten `[N, d1, ..., C] -> [N, d1
* ... * C]` puts channel c at every feature f with f % C == c. A Shape read
of the units only for the leading dims, or read when the graph runs, keeps
them. Rules as in `unit_rules` (which merges this table into its own).
"""

import numpy as np

from graph_prune.passes.channel_ops import Kind
from graph_prune.passes.unit_flow import Edit
from graph_prune.passes.unit_flow import Space
from graph_prune.passes.unit_traversal import CannotFollowError
from graph_prune.passes.unit_traversal import Context
from graph_prune.passes.unit_traversal import follow_same


def channels_last(ctx, node, space):
  shape_in = ctx.graph.shape(space.tensor)
  shape_out = ctx.graph.shape(f'{node.name}:0')
  if not shape_in or not shape_out:
    return None
  return shape_in, shape_out


def _reshape_axes(ctx: Context, node, position: int, space: Space):
  """Squeeze, ExpandDims: fine while the units stay the last axis."""
  shapes = channels_last(ctx, node, space)
  width = space.root.size
  if position != 0 or shapes is None or shapes[1][-1] != width:
    raise CannotFollowError(
      f'{node.op} {node.name!r} moves the units off the last axis'
    )
  if node.op == 'ExpandDims':
    axis = int(np.ravel(ctx.graph.value(ctx.graph.input(node, 1)))[0])
    if axis % len(shapes[1]) == len(shapes[1]) - 1:
      raise CannotFollowError(
        f'ExpandDims {node.name!r} appends an axis after the units'
      )
  return follow_same(space, node)


def _reshape(ctx: Context, node, position: int, space: Space):
  """A Flatten, or a reshape that keeps the channels as the last axis.

  Flatten: [N, d1, ..., C] -> [N, d1 * ... * C], channel c at f % C.
  Otherwise the last axis stays C (row-major order keeps channel c at c:
  squeeze-and-excitation's [N, C] -> [N, 1, 1, C], tokens' [N, H, W, C] ->
  [N, H * W, C]); the new shape is -1 and the other dims, which must be
  static.
  """
  shapes = channels_last(ctx, node, space)
  if position != 0 or shapes is None:
    raise CannotFollowError(f'Reshape {node.name!r} has unknown shapes')
  shape_in, shape_out = shapes
  width = space.root.size
  inner = shape_in[1:]
  if len(shape_out) == 2 and None not in inner and len(inner) > 1:
    flatten = shape_out[1] == int(np.prod(inner))
  else:
    flatten = False
  if not flatten and shape_out[-1] == width and None not in shape_out[1:-1]:
    middle = [int(d) for d in shape_out[1:-1]]
    root = space.root

    def new_shape(removed):
      return [-1, *middle, int((~removed[root]).sum())]

    ctx.edits.append(Edit('reshape', node.name, 1, root=root, fold=new_shape))
    return follow_same(space, node)
  if not flatten and not ctx.graph.is_constant(ctx.graph.input(node, 1)):
    return _computed_reshape(ctx, node, space, shape_in, shape_out)
  if not flatten:
    raise CannotFollowError(
      f'Reshape {node.name!r} from {shape_in} to {shape_out} mixes the '
      'units with other axes (followed: a Flatten, or a reshape that keeps '
      'them as the last axis with static other dims)'
    )
  positions = shape_out[1] // width
  root = np.tile(space.root, positions)
  const = np.tile(space.const, positions)

  def flat_shape(removed):
    return [-1, int((~removed[root]).sum())]

  ctx.edits.append(Edit('reshape', node.name, 1, root=root, fold=flat_shape))
  return [Space(f'{node.name}:0', root, const)]


def _computed_reshape(ctx: Context, node, space: Space, shape_in, shape_out):
  """A reshape whose shape is computed (Tensordot's, around Keras 3's Dense
  on a 3-D input), followed where the units stay the last axis.

  Back to `[b, s, units]`: the shape is `ConcatV2(dims of the input, [units])`
  or a `Pack` ending in the units, and that constant gets the new count. To
  `[b * s, units]`: the last dim is computed from the input's own last dim
  (`Prod(GatherV2(Shape(x), [rank - 1]))`), so it follows by itself.
  """
  width = space.root.size
  root = space.root
  shape = ctx.graph.nodes[ctx.graph.input(node, 1).split(':')[0]]
  if shape_in[-1] == width and shape_out[-1] == width:
    count = len([t for t in shape.input if not t.startswith('^')])
    last = count - 1 if shape.op == 'Pack' else count - 2
    if shape.op in ('ConcatV2', 'Pack') and last >= 0:
      tensor = ctx.graph.input(shape, last)
      if ctx.graph.is_constant(tensor) and (
        np.ravel(ctx.graph.value(tensor)).tolist() == [width]
      ):
        rank = np.ndim(ctx.graph.value(tensor))

        def kept(removed):
          return np.reshape(int((~removed[root]).sum()), [1] * rank)

        ctx.edits.append(
          Edit('reshape', shape.name, last, root=root, fold=kept)
        )
        return follow_same(space, node)
  if len(shape_out) == 2 and _last_dim_of(ctx, shape, space.tensor, node):
    return follow_same(space, node)
  raise CannotFollowError(
    f'Reshape {node.name!r} from {shape_in} to {shape_out} has a computed '
    'shape that shrinking does not follow'
  )


def _last_dim_of(ctx: Context, shape, tensor: str, node) -> bool:
  """Whether `shape` is a Pack ending in the product of `tensor`'s last dim
  alone (read from `Shape` of it, or of what a Transpose keeping the last
  axis read)."""
  if shape.op != 'Pack' or len(shape.input) != 2:
    return False
  prod = ctx.graph.nodes[ctx.graph.input(shape, 1).split(':')[0]]
  if prod.op != 'Prod':
    return False
  gather = ctx.graph.nodes[ctx.graph.input(prod, 0).split(':')[0]]
  if gather.op != 'GatherV2' or not ctx.graph.is_constant(
    ctx.graph.input(gather, 1)
  ):
    return False
  source = ctx.graph.nodes[ctx.graph.input(gather, 0).split(':')[0]]
  if source.op != 'Shape':
    return False
  read = ctx.graph.input(source, 0)
  reader = ctx.graph.nodes[tensor.split(':')[0]]
  if read != tensor and not (
    reader.op == 'Transpose' and ctx.graph.input(reader, 0) == read
  ):
    return False
  rank = len(ctx.graph.shape(read) or ())
  indices = np.ravel(ctx.graph.value(ctx.graph.input(gather, 1))).tolist()
  return rank > 0 and [i % rank for i in indices] == [rank - 1]


def _transpose(ctx: Context, node, position: int, space: Space):
  """A transpose that keeps the units as the last axis (Tensordot's)."""
  perm = ctx.graph.input(node, 1)
  rank = len(ctx.graph.shape(space.tensor) or ())
  if position != 0 or not rank or not ctx.graph.is_constant(perm):
    raise CannotFollowError(f'Transpose {node.name!r} has an unknown perm')
  if int(np.ravel(ctx.graph.value(perm))[-1]) % rank != rank - 1:
    raise CannotFollowError(
      f'Transpose {node.name!r} moves the units off the last axis'
    )
  return follow_same(space, node)


def _shape(ctx: Context, node, position: int, space: Space):
  """Flatten's Shape: fine while only the leading dims are read."""
  rank = len(ctx.graph.shape(space.tensor) or ())
  for user, _ in ctx.graph.consumers[f'{node.name}:0']:
    if user.op == 'GatherV2' and ctx.graph.is_constant(
      ctx.graph.input(user, 1)
    ):
      continue  # Tensordot's dims, read when the graph runs
    ok = user.op == 'StridedSlice' and rank > 1
    if ok:
      end = ctx.graph.input(user, 2)
      ok = (
        ctx.graph.is_constant(end)
        and user.attr['end_mask'].i == 0
        and 0 < int(np.ravel(ctx.graph.value(end))[0]) < rank
      )
    if not ok:
      raise CannotFollowError(f'Shape {node.name!r} is read as a whole')
  return None


def _reshaping(ctx: Context, node, position: int, space: Space):
  if node.op == 'Reshape':
    return _reshape(ctx, node, position, space)
  return _reshape_axes(ctx, node, position, space)


BY_KIND = {
  Kind.RESHAPE: _reshaping,
  Kind.SHAPE: _shape,
  Kind.TRANSPOSE: _transpose,
}
