"""Counting a graph's parameters and multiply-adds, per layer.

Parameters: the values of the float Consts of a GraphDef (frozen weights).
Multiply-adds per example (a leading batch dimension is not counted):
  MatMul [n, k] x [k, m]: k * m per row of a batch of rows;
  Conv2D/Conv3D: output positions * kernel size * C_in * C_out;
  DepthwiseConv2dNative: output positions * kh * kw * C_in * multiplier.
Only the top-level graph is counted (not the bodies of loops).
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
  """Attributes: params (float constant values), macs (node -> per example)."""

  params: int
  macs: Dict[str, int]

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
  for node in graph_def.node:
    if node.op == 'Const' and node.attr['dtype'].type in _FLOATS:
      shape = [d.size for d in node.attr['value'].tensor.tensor_shape.dim]
      params += int(np.prod(shape, dtype=np.int64))
    elif node.op in _MACS:
      op = graph.get_operation_by_name(node.name)
      count = _MACS[node.op](op)
      if count is not None:
        macs[node.name] = count
  return Costs(params, macs)


def _dims(tensor):
  shape = tensor.shape
  if shape.rank is None or None in shape.as_list()[1:]:
    return None
  return shape.as_list()


def _matmul(op):
  a, b, out = _dims(op.inputs[0]), _dims(op.inputs[1]), _dims(op.outputs[0])
  if a is None or b is None or out is None:
    return None
  k = a[-2] if op.get_attr('transpose_a') else a[-1]
  rows = int(np.prod(out[1:-1], dtype=np.int64)) if len(out) > 2 else 1
  return rows * k * out[-1]


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
  'Conv2D': _conv,
  'Conv3D': _conv,
  'DepthwiseConv2dNative': _depthwise,
}
