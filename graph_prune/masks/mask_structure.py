"""How a weight is scored: its static `MaskStructure`, checked when built.

`structure_for` resolves a weight's structure from the hparams and the
weight's shape (blocks only for weights that squeeze to rank 2, as in
contrib). `pool` turns a weight's elementwise scores (`criteria`) into the
structure's score grid, one score per group kept or pruned together, and
`expand` turns a keep grid back into a mask. `masking` re-exports
`MaskStructure`, `structure_for` and `expand`.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from graph_prune import errors
from graph_prune.config import hparams as hparams_lib


@dataclasses.dataclass(frozen=True)
class MaskStructure:
  """How one weight is scored and selected (static, checked when built).

  Attributes:
    granularity: 'weight' (elementwise or blocks) or 'unit'.
    block_dims: (height, width) of blocks of the squeezed rank-2 weight; -1
      is the whole dimension; (1, 1) is elementwise.
    pooling: 'AVG' or 'MAX' pooling of the scores over a block.
    m_by_n: None, or (N, M) for N:M sparsity along axis -2.
    method: 'exact' or 'histogram'.
    nbins: histogram bins for `method='histogram'`.
  """

  granularity: str = 'weight'
  block_dims: Tuple[int, int] = (1, 1)
  pooling: str = 'AVG'
  m_by_n: Optional[Tuple[int, int]] = None
  method: str = 'exact'
  nbins: int = 256

  def __post_init__(self):
    if self.granularity not in ('weight', 'unit'):
      raise errors.MaskError(
        f'granularity={self.granularity!r} is not weight or unit.'
      )
    if self.pooling not in ('AVG', 'MAX'):
      raise errors.MaskError(f'pooling={self.pooling!r} is not AVG or MAX.')
    if self.method not in ('exact', 'histogram'):
      raise errors.MaskError(
        f'method={self.method!r} is not exact or histogram.'
      )
    if any(d < 1 and d != -1 for d in self.block_dims):
      raise errors.MaskError(
        f'block_dims={self.block_dims} needs dims >= 1 or -1.'
      )
    if self.granularity == 'unit' and self.uses_blocks:
      raise errors.MaskError('unit granularity cannot use blocks.')

  @property
  def uses_blocks(self) -> bool:
    return tuple(self.block_dims) != (1, 1)


def structure_for(
  shape: Sequence[int],
  hparams: hparams_lib.PruningHParams,
  settings: hparams_lib.WeightSettings,
) -> Tuple[MaskStructure, str]:
  """The structure for a weight of `shape` under `hparams`.

  Like contrib, blocks apply only to weights that squeeze to rank 2; any
  other weight falls back to elementwise, and the returned note says so.

  Args:
    shape: the weight's static shape (fully defined).
    hparams: the pruning hparams.
    settings: the weight's resolved settings (`hparams.weight_settings`).

  Returns:
    (structure, note): note is '' or a sentence explaining a fallback.

  Raises:
    MaskError: if the weight cannot be masked as asked (rank < 2 for unit or
      m-by-n pruning, an unknown dimension).
  """
  shape = static_shape(shape)
  note = ''
  block_dims = tuple(settings.block_dims)
  if block_dims != (1, 1) and len(squeezed(shape)) != 2:
    note = (
      f'blocks {block_dims[0]}x{block_dims[1]} need a weight that '
      f'squeezes to rank 2, shape {list(shape)} does not; pruned '
      'elementwise (as contrib did)'
    )
    block_dims = (1, 1)
  if hparams.granularity == 'unit' and len(shape) < 2:
    raise errors.MaskError(
      f'Unit pruning needs a weight of rank >= 2, got shape {list(shape)}.'
    )
  if hparams.sparsity_m_by_n is not None and len(shape) < 2:
    raise errors.MaskError(
      f'sparsity_m_by_n needs a weight of rank >= 2, got shape {list(shape)}.'
    )
  structure = MaskStructure(
    granularity=hparams.granularity,
    block_dims=block_dims,
    pooling=hparams.block_pooling_function,
    m_by_n=hparams.sparsity_m_by_n,
    method=hparams.threshold_method,
    nbins=hparams.nbins,
  )
  return structure, note


def static_shape(shape) -> Tuple[int, ...]:
  dims = tf.TensorShape(shape)
  if not dims.is_fully_defined():
    raise errors.MaskError(
      f'A weight to prune needs a fully defined shape, got {dims}.'
    )
  return tuple(dims.as_list())


def squeezed(shape: Sequence[int]) -> Tuple[int, ...]:
  return tuple(d for d in shape if d != 1)


def pool(elementwise: tf.Tensor, structure: MaskStructure) -> tf.Tensor:
  """The score grid of a structure from non-negative elementwise scores.

  Args:
    elementwise: one score >= 0 per weight element (the weight's shape).
    structure: the weight's `MaskStructure` (not m-by-n).

  Returns:
    The scores themselves for elementwise; their AVG or MAX over blocks,
    shape [ceil(H/bh), ceil(W/bw)], for blocks; the L2 norm of each
    last-axis slice (shape [units]) for unit.
  """
  if structure.granularity == 'unit':
    flat = tf.reshape(elementwise, [-1, elementwise.shape[-1]])
    return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=0))
  if structure.uses_blocks:
    return _pool_blocks(elementwise, structure)
  return elementwise


def _block_geometry(shape, block_dims):
  height, width = squeezed(shape)
  bh = height if block_dims[0] == -1 else block_dims[0]
  bw = width if block_dims[1] == -1 else block_dims[1]
  return height, width, bh, bw


def _pool_blocks(elementwise: tf.Tensor, structure: MaskStructure) -> tf.Tensor:
  """AVG or MAX of the scores over blocks, aligned at the top-left corner.

  Block (i, j) is rows [i*bh, (i+1)*bh) and columns [j*bw, (j+1)*bw),
  clipped to the weight: where a dimension is not a multiple of the block,
  only the last block is short (padding at the end only), and its score is
  the AVG or MAX of its real elements. These are exactly the blocks `expand`
  keeps or prunes. contrib and tfmot pool with SAME padding, which splits
  the padding before and after, so their scored windows are shifted
  against the blocks they then mask; graph_prune deliberately does not
  (BUILD_NOTES, 'Where graph_prune deliberately differs'). Both agree when
  every dimension is a multiple of its block.
  """
  height, width, bh, bw = _block_geometry(
    elementwise.shape, structure.block_dims
  )
  rows, cols = -(-height // bh), -(-width // bw)
  padding = [[0, rows * bh - height], [0, cols * bw - width]]
  grid = tf.reshape(elementwise, [height, width])
  padded = tf.reshape(tf.pad(grid, padding), [rows, bh, cols, bw])
  if structure.pooling == 'MAX':
    return tf.reduce_max(padded, axis=[1, 3])
  # SAME-padded average pooling divides by the real (unpadded) element count.
  ones = tf.pad(tf.ones_like(grid), padding)
  counts = tf.reduce_sum(tf.reshape(ones, [rows, bh, cols, bw]), axis=[1, 3])
  return tf.reduce_sum(padded, axis=[1, 3]) / counts


def expand(
  keep: tf.Tensor, structure: MaskStructure, weight_shape, dtype
) -> tf.Tensor:
  """Expands a keep-grid of scores back to a mask of the weight's shape.

  Args:
    keep: bool tensor in the shape `pool` returned.
    structure: the weight's `MaskStructure`.
    weight_shape: the weight's static shape.
    dtype: the mask's dtype (the weight's).

  Returns:
    A 0/1 mask of `weight_shape` and `dtype`.
  """
  weight_shape = static_shape(weight_shape)
  keep = tf.cast(keep, dtype)
  if structure.granularity == 'unit':
    return tf.broadcast_to(keep, weight_shape)
  if structure.uses_blocks:
    height, width, bh, bw = _block_geometry(weight_shape, structure.block_dims)
    full = tf.repeat(tf.repeat(keep, bh, axis=0), bw, axis=1)
    return tf.reshape(full[:height, :width], weight_shape)
  return tf.reshape(keep, weight_shape)
