"""The one op table of the channel analysis: how each op treats channels.

Training's coupled groups (`channel_groups`) and shrink's unit flow
(`unit_traversal` with `unit_rules`) walk different graphs for different
ends, but they must agree on which ops carry a producer's channels along the
last axis: a group that training forms and shrink cannot follow is a group
whose zeroed channels stay. So the op types and what they do with channels
live here once, keyed by op type, and each analysis has one handler per
`Kind` (the guard test checks that both cover every kind):

    kind = channel_ops.TABLE['Erfc'].kind      # Kind.UNARY
    value = channel_ops.TABLE['Erfc'].value    # what a constant becomes

A channel removed by shrink holds a constant (0 from its producer, then
`act(bias)`, BatchNorm's shift...); `OpRule.value` computes what that
constant becomes through the op, in float32 like the op itself. Ops not in
the table end the channels: training stops tracking them, shrink keeps them
and says why.
"""

import dataclasses
import enum
from typing import Any, Callable, Dict, Optional

import numpy as np
import tensorflow as tf


class Kind(enum.Enum):
  """What an op does with the channels along the last axis."""

  UNARY = 'unary'  # elementwise, one tensor: channel c -> channel c
  ELEMENTWISE = 'elementwise'  # of several tensors: ties channel c of each
  IDENTITY_N = 'identity_n'  # output k is input k (custom gradients)
  PRODUCER = 'producer'  # MatMul, Conv2D/3D: new channels; reads channels
  DEPTHWISE = 'depthwise'  # channel c -> channels c * multiplier + k
  BATCH_NORM = 'batch_norm'  # per-channel scale and shift
  POOL = 'pool'  # over spatial axes
  REDUCE = 'reduce'  # over the axes given by input 1
  PAD = 'pad'  # pads axes given by input 1
  RESHAPE = 'reshape'  # Reshape, Squeeze, ExpandDims
  SHAPE = 'shape'  # reads only the shape (Flatten's)
  CONCAT = 'concat'  # along the channels: offsets; else: ties
  SPLIT = 'split'  # along the channels: slices; else: every output
  TRANSPOSE = 'transpose'  # followed while the last axis stays last


@dataclasses.dataclass(frozen=True)
class OpRule:
  """How one op type treats channels.

  Attributes:
    kind: the `Kind`.
    value: for `UNARY`, f(const, node) -> the constant through the op
      (`node` a NodeDef, for attributes); for `ELEMENTWISE`, f(*consts) over
      the data inputs in order; None for the other kinds.
    additive: an `ELEMENTWISE` op where a tensor from outside any producer
      keeps the channel (it is added, not multiplied): the residual add of
      the network's input fixes those channels.
  """

  kind: Kind
  value: Optional[Callable[..., Any]] = None
  additive: bool = False


def _f32(fn):
  return lambda *xs: np.asarray(fn(*[np.float32(x) for x in xs]))


def _unary(fn):
  """A one-input op whose constant is `fn` of the input's (float32)."""
  return OpRule(Kind.UNARY, lambda x, node: _f32(fn)(x))


def _leaky_relu(x, node):
  return _f32(lambda v: tf.nn.leaky_relu(v, node.attr['alpha'].f))(x)


def _cast(x, node):
  """The constant as the op's output dtype holds it (float32 if floating)."""
  dtype = tf.as_dtype(node.attr['DstT'].type)
  value = np.asarray(x).astype(dtype.as_numpy_dtype)
  return value.astype(np.float32) if dtype.is_floating else value


def _same(x, node):
  del node  # the op passes its input on unchanged
  return x


def _elementwise(fn, additive=False):
  return OpRule(Kind.ELEMENTWISE, _f32(fn), additive)


def _compare(fn):
  """A comparison: ties channel c of both sides; its constant is a bool."""
  return OpRule(Kind.ELEMENTWISE, lambda a, b: np.asarray(fn(a, b)))


def _select(condition, a, b):
  return np.where(np.asarray(condition, dtype=bool), a, b).astype(np.float32)


def _add_n(*xs):
  return np.sum(np.stack([np.float32(x) for x in xs]), axis=0)


def _table() -> Dict[str, OpRule]:
  unary = {
    'Relu': tf.nn.relu,
    'Relu6': tf.nn.relu6,  # and hard-sigmoid, hard-swish
    'Elu': tf.nn.elu,
    'Selu': tf.nn.selu,
    'Sigmoid': tf.math.sigmoid,  # SiLU/swish is x * Sigmoid(x)
    'Tanh': tf.math.tanh,
    'Softplus': tf.math.softplus,  # Mish is x * tanh(softplus(x))
    'Softsign': tf.nn.softsign,
    'Erf': tf.math.erf,
    'Erfc': tf.math.erfc,  # exact GELU: 0.5 * x * erfc(-x / sqrt(2))
    'Sqrt': tf.math.sqrt,
    'Rsqrt': tf.math.rsqrt,
    'Reciprocal': tf.math.reciprocal,
    'Exp': tf.math.exp,
    'Neg': tf.math.negative,
    'Abs': tf.math.abs,
    'Square': tf.math.square,
  }
  table = {op: _unary(fn) for op, fn in unary.items()}
  table['LeakyRelu'] = OpRule(Kind.UNARY, _leaky_relu)
  table['Cast'] = OpRule(Kind.UNARY, _cast)  # mixed precision
  for op in (
    'Identity',
    'Snapshot',
    'StopGradient',
    'PreventGradient',
    'CheckNumerics',
    'EnsureShape',
  ):
    table[op] = OpRule(Kind.UNARY, _same)
  table.update(
    {
      'Add': _elementwise(tf.math.add, additive=True),
      'AddV2': _elementwise(tf.math.add, additive=True),
      'BiasAdd': _elementwise(tf.math.add, additive=True),
      'Sub': _elementwise(tf.math.subtract, additive=True),
      'AddN': OpRule(Kind.ELEMENTWISE, _add_n, additive=True),
      'Mul': _elementwise(tf.math.multiply),  # also x * x, SE gates
      'RealDiv': _elementwise(tf.math.divide),
      'DivNoNan': _elementwise(tf.math.divide_no_nan),
      'Maximum': _elementwise(tf.math.maximum),
      'Minimum': _elementwise(tf.math.minimum),
      'SquaredDifference': _elementwise(tf.math.squared_difference),
      'Pow': _elementwise(tf.math.pow),  # GELU's tanh form: x ** 3
      'Greater': _compare(np.greater),
      'GreaterEqual': _compare(np.greater_equal),
      'Less': _compare(np.less),
      'LessEqual': _compare(np.less_equal),
      'Select': OpRule(Kind.ELEMENTWISE, _select),
      'SelectV2': OpRule(Kind.ELEMENTWISE, _select),
      'IdentityN': OpRule(Kind.IDENTITY_N),
      'DepthwiseConv2dNative': OpRule(Kind.DEPTHWISE),
      'Shape': OpRule(Kind.SHAPE),
      'ConcatV2': OpRule(Kind.CONCAT),
      'Split': OpRule(Kind.SPLIT),
      'SplitV': OpRule(Kind.SPLIT),
      # Keras 3's Dense on a 3-D input (Tensordot) transposes with the
      # identity permutation before its reshape.
      'Transpose': OpRule(Kind.TRANSPOSE),
    }
  )
  groups = {
    # BatchMatMulV2 with a rank-2 kernel: Keras 3's Dense on a 3-D input
    # through `ops.matmul` (Gemma's feed-forward); others end the channels.
    Kind.PRODUCER: ('MatMul', 'Conv2D', 'Conv3D', 'BatchMatMulV2'),
    Kind.BATCH_NORM: ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3'),
    Kind.POOL: ('MaxPool', 'AvgPool', 'MaxPool3D', 'AvgPool3D', 'MaxPoolV2'),
    Kind.REDUCE: ('Mean', 'Max', 'Min', 'Sum', 'Prod'),
    Kind.PAD: ('Pad', 'PadV2', 'MirrorPad'),
    Kind.RESHAPE: ('Reshape', 'Squeeze', 'ExpandDims'),
  }
  for kind, ops in groups.items():
    table.update(dict.fromkeys(ops, OpRule(kind)))
  return table


TABLE: Dict[str, OpRule] = _table()

# Ops whose value changes between runs although they read no input: what
# they feed varies (it is no constant and no parameter).
RANDOM_OPS = frozenset(
  [
    'RandomUniform',
    'RandomStandardNormal',
    'StatelessRandomUniformV2',
    'StatelessRandomNormalV2',
    'RandomUniformInt',
    'TruncatedNormal',
  ]
)


def rule(op_type: str) -> Optional[OpRule]:
  """The op's `OpRule`, or None if the op ends the channels."""
  return TABLE.get(op_type)


def ops_of(kind: Kind):
  """The op types of `kind`, sorted."""
  return sorted(op for op, r in TABLE.items() if r.kind is kind)
