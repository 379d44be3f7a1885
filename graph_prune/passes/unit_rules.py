"""Per-op rules of the unit flow (`unit_traversal.analyze`), keyed by op.

A rule sees a `node` whose input at data `position` carries producers'
channels (`Space`; the other inputs' spaces are `ctx.space(...)`) and either
  * returns the spaces of the node's outputs (elementwise ops, BatchNorm,
    pooling, a depthwise conv, a Flatten, a concatenation), recording the
    constant slices that go with a removed unit as `Edit`s and tying the
    channels that must go together (`ctx.units.union`: a residual add, a
    squeeze-and-excitation gate);
  * returns None: the channels end here (the next layer's kernel rows, with
    the removed units' constant folded into its bias);
  * raises `CannotFollowError`: the channels it reads stay, and the message
    says why.
An op without a rule keeps the channels it reads. The rules of ops that
only rearrange channels (concatenation, split, padding) are in
`unit_layout_rules`, those of reshapes and transposes in
`unit_reshape_rules`.
"""

from typing import List

import numpy as np

from graph_prune.passes import channel_ops
from graph_prune.passes import unit_layout_rules
from graph_prune.passes import unit_reshape_rules
from graph_prune.passes.channel_ops import Kind
from graph_prune.passes.unit_flow import Edit
from graph_prune.passes.unit_flow import Space
from graph_prune.passes.unit_traversal import CannotFollowError
from graph_prune.passes.unit_traversal import Context
from graph_prune.passes.unit_traversal import follow_same
from graph_prune.passes.unit_traversal import zero_channels


def _unary(ctx: Context, node, position: int, space: Space):
  value = channel_ops.TABLE[node.op].value
  return follow_same(space, node, value(space.const, node))


def _identity_n(ctx: Context, node, position: int, space: Space):
  """IdentityN (a custom gradient's, e.g. Keras' swish): output k is input k."""
  del position, space  # every input's channels pass to its output
  spaces = []
  data = [t for t in node.input if not t.startswith('^')]
  for k, text in enumerate(data):
    carried = ctx.space(text)
    if carried is not None:
      spaces += follow_same(carried, node, index=k)
  return spaces


def _elementwise(ctx: Context, node, position: int, space: Space):
  """Add, Mul, Select, AddN...: channel c of every operand is one class.

  An operand is a tensor whose channels the flow follows, or a constant of
  one value or one per channel (a bias: sliced with the units); the removed
  units' constant is the op's value of the operands' constants.
  """
  if node.op == 'BiasAdd' and (
    position != 0 or not node.attr['data_format'].s.endswith(b'C')
  ):
    raise CannotFollowError(f'BiasAdd {node.name!r} is not over the last axis')
  width = space.root.size
  rank = len(ctx.graph.shape(space.tensor) or ())
  data = [t for t in node.input if not t.startswith('^')]
  spaces, consts = [], []
  for index in range(len(data)):
    tensor = ctx.graph.input(node, index)
    carried = ctx.space(tensor)
    if carried is not None:
      if carried.root.size != width:
        raise CannotFollowError(
          f'{node.op} {node.name!r} broadcasts one operand over the channels '
          f'({carried.root.size} and {width} channels)'
        )
      spaces.append(carried)
      consts.append(carried.const)
    elif ctx.graph.is_constant(tensor):
      consts.append(_operand(ctx, node, index, tensor, width, rank, space))
    else:
      raise CannotFollowError(
        f'{node.op} {node.name!r} combines the channels with a tensor that '
        'no layer shrinking follows produces (the network input, an unknown '
        'op)'
      )
  for mine in spaces:
    for theirs in spaces:
      ctx.stop(
        f'{node.op} {node.name!r} combines the channels with channels that '
        'no layer shrinking follows produces',
        mine.root[theirs.root == 0],
      )
    ctx.units.union(space.root, mine.root)
  value = channel_ops.TABLE[node.op].value
  return follow_same(space, node, value(*consts))


def _operand(ctx, node, index, tensor, width, rank, space):
  """A constant operand as one value per channel (a bias is sliced)."""
  value = np.asarray(ctx.graph.value(tensor))
  if value.ndim > rank or any(d != 1 for d in value.shape[:-1]):
    raise CannotFollowError(
      f'{node.op} {node.name!r} broadcasts over other axes'
    )
  if value.size == width and value.ndim:
    ctx.edits.append(Edit('slice', node.name, index, -1, space.root))
    return value.reshape(-1)
  if value.size == 1:
    return np.full(width, value.reshape(-1)[0])
  raise CannotFollowError(
    f'{node.op} {node.name!r} has an operand of shape {value.shape}'
  )


def _kernel(ctx, node):
  kernel_tensor = ctx.graph.input(node, 1)
  if not ctx.graph.is_constant(kernel_tensor):
    raise CannotFollowError(
      f'{node.op} {node.name!r} has a kernel that is not constant'
    )
  return ctx.graph.value(kernel_tensor)


def _bias_edge(ctx: Context, node):
  """The (node, position) of the constant bias added right after `node`.

  Conv1D's Squeeze (and identities) may come between.
  """
  users = ctx.graph.consumers[f'{node.name}:0']
  while (
    len(users) == 1
    and users[0][1] == 0
    and users[0][0].op in ('Identity', 'Squeeze', 'ExpandDims')
  ):
    users = ctx.graph.consumers[f'{users[0][0].name}:0']
  if len(users) != 1:
    return None
  user, position = users[0]
  if user.op == 'BiasAdd' and position == 0:
    return user.name, 1
  if user.op in ('Add', 'AddV2'):
    other = ctx.graph.input(user, 1 - position)
    if ctx.graph.is_constant(other) and ctx.graph.value(other).ndim == 1:
      return user.name, 1 - position
  return None


def _fold_into_next(ctx: Context, node, space: Space, kernel, exact: bool):
  """Records the fold of removed constant channels into `node`'s bias.

  `kernel` is `node`'s kernel with the channels on axis -2; each removed
  channel adds `const * sum(kernel[..., channel, :])` to every output.
  """
  zero = zero_channels(space, ctx)
  nonzero = zero & (space.const != 0)
  if not nonzero.any():
    return
  units = space.root[nonzero]
  if not exact:
    ctx.stop(
      f'{node.op} {node.name!r} is zero-padded, so the constant output of a '
      'removed unit would not fold into its bias exactly',
      units,
    )
    return
  edge = _bias_edge(ctx, node)
  if edge is None:
    ctx.stop(
      f'{node.op} {node.name!r} has no bias to fold the constant output of '
      'a removed unit into',
      units,
    )
    return
  rows = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(axis=0)
  root, const = space.root, space.const.astype(np.float64)

  def fold(removed):
    channels = removed[root]
    return const[channels] @ rows[channels].astype(np.float64)

  ctx.edits.append(Edit('fold', edge[0], edge[1], root=root, fold=fold))


def _matmul(ctx: Context, node, position: int, space: Space):
  """MatMul, or BatchMatMulV2 with a rank-2 kernel (Keras 3's Dense on a
  3-D input)."""
  names = (
    ('adj_x', 'adj_y')
    if node.op == 'BatchMatMulV2'
    else (
      'transpose_a',
      'transpose_b',
    )
  )
  if position != 0 or any(node.attr[n].b for n in names):
    raise CannotFollowError(
      f'{node.op} {node.name!r} reads the units transposed'
    )
  kernel = _kernel(ctx, node)
  if kernel.ndim != 2:
    raise CannotFollowError(f'{node.op} {node.name!r} has no 2-D kernel')
  ctx.edits.append(Edit('slice', node.name, 1, -2, space.root))
  _fold_into_next(ctx, node, space, kernel, exact=True)


def _conv(ctx: Context, node, position: int, space: Space):
  if position != 0 or not node.attr['data_format'].s.endswith(b'C'):
    raise CannotFollowError(f'{node.op} {node.name!r} is not channels-last')
  kernel = _kernel(ctx, node)
  if kernel.shape[-2] != space.root.size:
    raise CannotFollowError(
      f'{node.op} {node.name!r} is a grouped convolution '
      f'({kernel.shape[-2]} of {space.root.size} channels per group)'
    )
  ctx.edits.append(Edit('slice', node.name, 1, -2, space.root))
  exact = node.attr['padding'].s == b'VALID' or all(
    d == 1 for d in kernel.shape[:-2]
  )
  _fold_into_next(ctx, node, space, kernel, exact)


def _depthwise(ctx: Context, node, position: int, space: Space):
  if position != 0 or not node.attr['data_format'].s.endswith(b'C'):
    raise CannotFollowError(f'{node.op} {node.name!r} is not channels-last')
  kernel = _kernel(ctx, node)  # [kh, kw, channels, multiplier]
  multiplier = kernel.shape[-1]
  ctx.edits.append(Edit('slice', node.name, 1, -2, space.root))
  zero = zero_channels(space, ctx)
  padded = node.attr['padding'].s != b'VALID' and any(
    d != 1 for d in kernel.shape[:2]
  )
  if padded and (zero & (space.const != 0)).any():
    ctx.stop(
      f'{node.op} {node.name!r} is zero-padded, so a removed unit would '
      'not be constant after it',
      space.root[zero & (space.const != 0)],
    )
  sums = kernel.reshape(-1, kernel.shape[-2], multiplier).sum(axis=0)
  const = (space.const[:, None] * sums).astype(np.float32).reshape(-1)
  root = np.repeat(space.root, multiplier)
  return [Space(f'{node.name}:0', root, const)]


def _batch_norm(ctx: Context, node, position: int, space: Space):
  if (
    position != 0
    or node.attr['is_training'].b
    or not node.attr['data_format'].s.endswith(b'C')
  ):
    raise CannotFollowError(
      f'{node.op} {node.name!r} is not an inference BatchNorm'
    )
  for index in range(1, 6):
    if ctx.graph.consumers.get(f'{node.name}:{index}'):
      raise CannotFollowError(
        f'{node.op} {node.name!r} has its statistics read'
      )
  params = []
  for index in range(1, 5):
    tensor = ctx.graph.input(node, index)
    if not ctx.graph.is_constant(tensor):
      raise CannotFollowError(
        f'{node.op} {node.name!r} has parameters that vary'
      )
    params.append(ctx.graph.value(tensor).astype(np.float64))
    ctx.edits.append(Edit('slice', node.name, index, -1, space.root))
  scale, offset, mean, variance = params
  epsilon = node.attr['epsilon'].f
  const = (space.const - mean) * scale / np.sqrt(variance + epsilon) + offset
  return follow_same(space, node, const.astype(np.float32))


def _pool(ctx: Context, node, position: int, space: Space):
  if position != 0 or not node.attr['data_format'].s.endswith(b'C'):
    raise CannotFollowError(f'{node.op} {node.name!r} is not channels-last')
  return follow_same(space, node)


def _reduce(ctx: Context, node, position: int, space: Space):
  shapes = unit_reshape_rules.channels_last(ctx, node, space)
  axes_tensor = ctx.graph.input(node, 1)
  if shapes is None or position != 0 or not ctx.graph.is_constant(axes_tensor):
    raise CannotFollowError(
      f'{node.op} {node.name!r} reduces over unknown axes'
    )
  rank = len(shapes[0])
  axes = {int(a) % rank for a in np.ravel(ctx.graph.value(axes_tensor))}
  if rank - 1 in axes:
    raise CannotFollowError(f'{node.op} {node.name!r} reduces over the units')
  if node.op not in ('Sum', 'Prod'):
    return follow_same(space, node)  # a mean or extreme of a constant
  count = [shapes[0][a] for a in axes]
  if None in count:
    ctx.stop(
      f'{node.op} {node.name!r} reduces over axes of unknown size, so a '
      'removed unit would have no known constant after it',
      space.root[zero_channels(space, ctx) & (space.const != 0)],
    )
    count = [1]
  n = int(np.prod(count))
  const = space.const * n if node.op == 'Sum' else space.const**n
  return follow_same(space, node, np.asarray(const, np.float32))


def _consumer(ctx: Context, node, position: int, space: Space):
  if node.op in ('MatMul', 'BatchMatMulV2'):
    return _matmul(ctx, node, position, space)
  return _conv(ctx, node, position, space)


# One rule per kind of `channel_ops.TABLE`; the rules of ops that only
# rearrange channels are in `unit_layout_rules`.
BY_KIND = {
  Kind.UNARY: _unary,
  Kind.ELEMENTWISE: _elementwise,
  Kind.IDENTITY_N: _identity_n,
  Kind.PRODUCER: _consumer,
  Kind.DEPTHWISE: _depthwise,
  Kind.BATCH_NORM: _batch_norm,
  Kind.POOL: _pool,
  Kind.REDUCE: _reduce,
  **unit_layout_rules.BY_KIND,
  **unit_reshape_rules.BY_KIND,
}


def _rules():
  return {op: BY_KIND[r.kind] for op, r in channel_ops.TABLE.items()}


RULES = _rules()


def known_ops() -> List[str]:
  """The op types shrinking follows (for documentation and messages)."""
  return sorted(RULES)
