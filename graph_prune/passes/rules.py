"""Per-op-type rules of the pass, in tables keyed by op type.

What counts as a weight, which ops pass a weight's value along unchanged,
and how a control-flow op hands its inputs to the functions it calls.
"""

from typing import List, Optional, Tuple

from graph_prune.passes import graph_ir

ANY = None  # every data input may hold the weight (e.g. Einsum operands)

# Weight-consuming ops: op type -> data input positions that hold a weight.
# A trainable floating variable of rank >= 2 whose value reaches one of these
# positions is prunable.
WEIGHT_INPUTS = {
  'MatMul': (0, 1),  # Dense, tf.matmul (weight on either side)
  'BatchMatMul': (0, 1),
  'BatchMatMulV2': (0, 1),
  'BatchMatMulV3': (0, 1),
  'Einsum': ANY,  # EinsumDense, MultiHeadAttention
  'Conv2D': (1,),  # Conv1D lowers to ExpandDims + Conv2D
  'Conv3D': (1,),
  'Conv': (1,),  # generic N-d convolution op
  'DepthwiseConv2dNative': (1,),
  'Conv2DBackpropInput': (1,),  # Conv2DTranspose
  'Conv3DBackpropInputV2': (1,),  # Conv3DTranspose
  'Gather': (0,),  # embedding lookups
  'GatherV2': (0,),
}

# Ops reading a weight straight from its resource handle: op type -> input.
RESOURCE_WEIGHT_INPUTS = {
  'ResourceGather': (0,),
}

# Ops whose output 0 carries the weight's values from input 0, only reshaped,
# transposed or cast; the scan follows the value through them.
VALUE_PASSTHROUGH = frozenset(
  [
    'Identity',
    'Snapshot',
    'Reshape',
    'Transpose',
    'Cast',
    'ExpandDims',
    'Squeeze',
  ]
)

# Ops cutting a weight's value into pieces (ConvLSTM2D splits its kernels into
# the four gates' kernels; tf_keras LSTM cells slice them): op type -> the
# data input holding the value. Every output carries part of the weight; the
# scan follows all of them, and the whole weight is masked before the cut (so
# the mask is cut with it).
VALUE_SPLITS = {
  'Split': 1,  # Split(split_dim, value)
  'SplitV': 0,  # SplitV(value, size_splits, split_dim)
  'Unpack': 0,
  'StridedSlice': 0,
  'Slice': 0,
}

# Elementwise ops a bias is read by: a weight of rank >= 2 read only by these
# (MultiHeadAttention's biases) is left dense without a warning.
ELEMENTWISE = frozenset(['Add', 'AddV2', 'BiasAdd', 'Sub', 'Mul'])

# Resource-handle ops the rewrite knows how to turn into value ops.
RESOURCE_READ = 'ReadVariableOp'
RESOURCE_IDENTITY = 'Identity'

WHILE_OPS = frozenset(['While', 'StatelessWhile'])
IF_OPS = frozenset(['If', 'StatelessIf'])
CASE_OPS = frozenset(['Case', 'StatelessCase'])
CALL_OPS = frozenset(['PartitionedCall', 'StatefulPartitionedCall'])

# Ops whose output 0 is their input 0 unchanged.
IDENTITY_OPS = frozenset(['Identity', 'Snapshot'])

# Function attrs of each control-flow op, in the order they are rewritten.
_FUNC_ATTRS = {
  'While': ('cond', 'body'),
  'StatelessWhile': ('cond', 'body'),
  'If': ('then_branch', 'else_branch'),
  'StatelessIf': ('then_branch', 'else_branch'),
  'Case': ('branches',),
  'StatelessCase': ('branches',),
  'PartitionedCall': ('f',),
  'StatefulPartitionedCall': ('f',),
}

# How a control-flow op hands its inputs to the functions it calls: the input
# position of argument 0 (an If's predicate and a Case's index come first).
ARG_OFFSET = {
  **dict.fromkeys(WHILE_OPS | CALL_OPS, 0),
  **dict.fromkeys(IF_OPS | CASE_OPS, 1),
}


def is_call(node, library) -> bool:
  """A plain function call (inlined by the rewrite), not a loop or branch."""
  return node.op in CALL_OPS or node.op in library


def arg_offset(node, library) -> Optional[int]:
  """The input position of a call-like node's argument 0, or None."""
  if node.op in library:
    return 0
  return ARG_OFFSET.get(node.op)


def callees(
  node, position: int, library
) -> Optional[Tuple[List[Tuple[str, int, str]], int]]:
  """How control-flow `node` passes its data input `position` on.

  Returns:
    None if `node` is not a control-flow/call op. Otherwise
    `(targets, arg)`: `targets` lists `(attr, list_index, function)` for
    every function that receives the input as its argument `arg` (empty when
    the input is an If predicate or a Case index).
  """
  op = node.op
  if op in library:
    return [('', -1, op)], position
  if op not in _FUNC_ATTRS:
    return None
  offset = ARG_OFFSET[op]
  if position < offset:
    return [], -1
  return graph_ir.function_attrs(node, _FUNC_ATTRS[op]), position - offset
