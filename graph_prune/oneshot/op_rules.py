"""How each op that reads a masked weight multiplies it with its layer's input.

One-shot pruning sees a layer as `y = X @ W`, W an [inputs, outputs] matrix
(a conv's kernel as [kh * kw * cin, cout], split per group for grouped and
depthwise convs), and needs the graph tensor the rows of X come from. One
rule per op type (`RULES`, keyed by it) reads the consuming node and says
which of its inputs is the layer's input, the kernel as the op sees it, and
the attributes the statistics need; or raises `UnreadableError` with the
reason, which the probe turns into a `OneShotError` naming the weight.

  MatMul, BatchMatMul*  x @ W: Dense (also on 3-D inputs, through tensordot's
                        Reshape -> MatMul -> Reshape), Keras 3's EinsumDense
                        (its kernel reshaped to a matrix first)
  Einsum                tf_keras' EinsumDense (attention projections): W's
                        contracted axes lead, and end x in the same order
  Conv2D, Depthwise...  channels-last; X's rows are input patches
  GatherV2              an embedding lookup: X's rows are one-hot token ids,
                        so the statistics are token counts
"""

import dataclasses
from typing import Callable, Dict, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from graph_prune.passes import graph_ir

MATRIX = 'matrix'  # one [inputs, outputs] problem
CONV = 'conv'  # patches; one problem per group of channels
LOOKUP = 'lookup'  # token counts (a diagonal X^T X)


class UnreadableError(Exception):
  """Why an op's use of a weight is not a layer one-shot pruning can read."""


@dataclasses.dataclass(frozen=True)
class Reading:
  """How one op reads its weight.

  Attributes:
    kind: MATRIX, CONV or LOOKUP: which statistics its input gives.
    input_index: the op input that holds the layer's input (x, the feature
      map, or the token ids).
    kernel_shape: the weight as the kind sees it: [inputs, outputs] for
      MATRIX and LOOKUP, [kh, kw, cin, cout] for CONV.
    attrs: a conv's strides, padding and dilations; empty otherwise.
  """

  kind: str
  input_index: int
  kernel_shape: Tuple[int, ...]
  attrs: Mapping[str, object] = dataclasses.field(default_factory=dict)


def _matmul(node, position, shape, nodes) -> Reading:
  del nodes
  if position != 1 or len(shape) != 2:
    raise UnreadableError('the weight is not the right-hand matrix')
  if node.attr['transpose_a'].b or node.attr['transpose_b'].b:
    raise UnreadableError('a transposed operand (tied weights?)')
  return Reading(MATRIX, 0, tuple(shape))


def _batch_matmul(node, position, shape, nodes) -> Reading:
  del nodes
  if position != 1 or len(shape) != 2:
    raise UnreadableError(
      'the weight is not a right-hand matrix shared by the batch'
    )
  if node.attr['adj_x'].b or node.attr['adj_y'].b:
    raise UnreadableError('an adjoint operand')
  return Reading(MATRIX, 0, tuple(shape))


def _einsum(node, position, shape, nodes) -> Reading:
  """`x @ W` spelled as an einsum, e.g. 'abc,cde->abde' or 'abcd,cde->abe'."""
  del nodes
  equation = node.attr['equation'].s.decode()
  operands, _, output = equation.replace(' ', '').partition('->')
  names = operands.split(',')
  if position != 1 or len(names) != 2 or '.' in equation or not output:
    raise UnreadableError(f'equation {equation!r} is not x, W -> y')
  x, w = names
  contracted = [a for a in w if a not in output]
  free = [a for a in w if a in output]
  if (
    not contracted
    or list(w) != contracted + free
    or not x.endswith(''.join(contracted))
    or any(a in x for a in free)
    or len(w) != len(shape)
  ):
    raise UnreadableError(
      f'equation {equation!r}: the weight must contract its leading axes '
      "with x's trailing ones and share no other axis with x"
    )
  inputs = int(np.prod(shape[: len(contracted)]))
  return Reading(MATRIX, 0, (inputs, int(np.prod(shape)) // inputs))


def _conv(node, position, shape, nodes) -> Reading:
  del nodes
  if position != 1 or node.attr['data_format'].s not in (b'NHWC', b''):
    raise UnreadableError('channels-first, or the weight is not the filter')
  padding = node.attr['padding'].s.decode()
  if padding == 'EXPLICIT':
    raise UnreadableError('explicit padding')
  attrs = {
    'strides': tuple(node.attr['strides'].list.i),
    'padding': padding,
    'dilations': tuple(node.attr['dilations'].list.i) or (1, 1, 1, 1),
  }
  shape = (1,) * (4 - len(shape)) + tuple(shape)  # Conv1D's ExpandDims
  return Reading(CONV, 0, shape, attrs)


def _gather(node, position, shape, nodes) -> Reading:
  """`tf.gather(W, ids, axis=0)`: an embedding lookup of rows of W."""
  axis = nodes.get(graph_ir.node_name(node.input[2]))
  if (
    position != 0
    or len(shape) != 2
    or axis is None
    or axis.op != 'Const'
    or int(tf.make_ndarray(axis.attr['value'].tensor)) != 0
    or node.attr['batch_dims'].i != 0
  ):
    raise UnreadableError('not a lookup of rows (axis 0, no batch dims)')
  return Reading(LOOKUP, 1, tuple(shape))


RULES: Dict[str, Callable[..., Reading]] = {
  'MatMul': _matmul,
  'BatchMatMul': _batch_matmul,
  'BatchMatMulV2': _batch_matmul,
  'BatchMatMulV3': _batch_matmul,
  'Einsum': _einsum,
  'Conv2D': _conv,
  'DepthwiseConv2dNative': _conv,
  'GatherV2': _gather,
}


def reading(node, position: int, shape: Sequence[int], nodes) -> Reading:
  """The `Reading` of `node` using a weight of `shape` as input `position`.

  Raises:
    UnreadableError: no rule for the op, or the rule's reason.
  """
  rule = RULES.get(node.op)
  if rule is None:
    raise UnreadableError('no rule for this op')
  return rule(node, position, tuple(int(d) for d in shape), nodes)
