"""Counting a graph's parameters and multiply-adds, per layer.

Parameters: the values of the float Consts of a GraphDef (frozen weights).
Multiply-adds per example (a leading batch dimension is not counted):
  MatMul [n, k] x [k, m], BatchMatMulV2 [..., n, k] x [..., k, m]: k * m
    per output row;
  Einsum with two operands: the product of the sizes of its distinct
    indices (contracted ones included), the batch index left out;
  Conv2D/Conv3D: output positions * kernel size * C_in * C_out;
  DepthwiseConv2dNative: output positions * kh * kw * C_in * multiplier.
A dimension the graph does not know (a transformer's sequence length when
the input signature leaves it open) counts as 1, so that a transformer's
count is per token at a sequence length of 1: the projections and FFNs,
which shrinking cuts, counted in full, the attention's scores and context
as for one token; `Costs.unknown_dims` says so. Only the top-level graph is
counted (not the bodies of loops).
"""

import dataclasses
from typing import Dict

import numpy as np
import tensorflow as tf

_FLOATS = frozenset(
  [
    tf.float16.as_datatype_enum,
    tf.float32.as_datatype_enum,
    tf.float64.as_datatype_enum,
    tf.bfloat16.as_datatype_enum,
  ]
)


@dataclasses.dataclass(frozen=True)
class Costs:
  """Attributes: params (float constant values), macs (node -> per example),
  unknown_dims (a counted op had a dimension counted as 1)."""

  params: int
  macs: Dict[str, int]
  unknown_dims: bool = False

  @property
  def total_macs(self) -> int:
    return sum(self.macs.values())


def costs(graph_def) -> Costs:
  """The parameters and multiply-adds of `graph_def`'s top level."""
  graph = tf.Graph()
  with graph.as_default():
    tf.graph_util.import_graph_def(graph_def, name='')
  params = 0
  macs = {}
  unknown = False
  for node in graph_def.node:
    if node.op == 'Const' and node.attr['dtype'].type in _FLOATS:
      shape = [d.size for d in node.attr['value'].tensor.tensor_shape.dim]
      params += int(np.prod(shape, dtype=np.int64))
    elif node.op in _MACS:
      op = graph.get_operation_by_name(node.name)
      count = _MACS[node.op](op)
      if count is not None:
        macs[node.name] = count
        out = op.outputs[0].shape
        unknown = unknown or (
          out.rank is not None and None in out.as_list()[1:]
        )
  return Costs(params, macs, unknown)


def _dims(tensor):
  """The shape, an unknown dimension after the batch as 1; None if the rank
  is unknown."""
  shape = tensor.shape
  if shape.rank is None:
    return None
  dims = shape.as_list()
  return dims[:1] + [1 if d is None else d for d in dims[1:]]


def _matmul(op):
  out = _dims(op.outputs[0])
  k = _contracted(op, 'transpose_a', 'transpose_b')
  if out is None or k is None:
    return None
  rows = int(np.prod(out[1:-1], dtype=np.int64)) if len(out) > 2 else 1
  return rows * k * out[-1]


def _batch_matmul(op):
  out = _dims(op.outputs[0])
  k = _contracted(op, 'adj_x', 'adj_y')
  if out is None or k is None:
    return None
  return int(np.prod(out[1:], dtype=np.int64)) * k


def _contracted(op, transpose_a: str, transpose_b: str):
  """The contracted size of a matrix product, from whichever operand knows
  it (a reshape computed in the graph can leave the data's open)."""
  a, b = op.inputs[0].shape, op.inputs[1].shape
  sizes = []
  if a.rank is not None and a.rank >= 2:
    sizes.append(a[-2] if op.get_attr(transpose_a) else a[-1])
  if b.rank is not None and b.rank >= 2:
    sizes.append(b[-1] if op.get_attr(transpose_b) else b[-2])
  known = [n for n in sizes if n is not None]
  if known:
    return known[0]
  return 1 if sizes else None


def _einsum(op):
  """Two operands, no ellipsis: the product of every index's size, but the
  output's first (batch) index."""
  equation = op.get_attr('equation')
  if isinstance(equation, bytes):
    equation = equation.decode()
  if '...' in equation or len(op.inputs) != 2 or '->' not in equation:
    return None
  operands, out = equation.split('->')
  specs = operands.split(',')
  sizes = {}
  for spec, t in zip(specs, op.inputs):
    dims = _dims(t)
    if dims is None or len(dims) != len(spec):
      return None
    for letter, size in zip(spec, dims):
      if size is not None:
        sizes[letter] = size
  batch = out[:1]
  if any(letter not in sizes for letter in set(''.join(specs)) - set(batch)):
    return None
  return int(
    np.prod([n for k, n in sizes.items() if k != batch], dtype=np.int64)
  )


def _conv(op):
  kernel, out = _dims(op.inputs[1]), _dims(op.outputs[0])
  if kernel is None or out is None:
    return None
  return int(np.prod(out[1:], dtype=np.int64)) * int(
    np.prod(kernel[:-1], dtype=np.int64)
  )


def _depthwise(op):
  kernel, out = _dims(op.inputs[1]), _dims(op.outputs[0])
  if kernel is None or out is None:
    return None
  return int(np.prod(out[1:], dtype=np.int64)) * kernel[0] * kernel[1]


_MACS = {
  'MatMul': _matmul,
  'BatchMatMul': _batch_matmul,
  'BatchMatMulV2': _batch_matmul,
  'BatchMatMulV3': _batch_matmul,
  'Einsum': _einsum,
  'Conv2D': _conv,
  'Conv3D': _conv,
  'DepthwiseConv2dNative': _depthwise,
}
