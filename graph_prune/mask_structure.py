"""How a weight is scored: its static `MaskStructure`, checked when built.

`structure_for` resolves a weight's structure from the hparams and the
weight's shape (blocks only for weights that squeeze to rank 2, as in
contrib). `masking` re-exports both names.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from graph_prune import errors
from graph_prune import hparams as hparams_lib


@dataclasses.dataclass(frozen=True)
class MaskStructure:
  """How one weight is scored and selected (static, checked when built).

  Attributes:
    granularity: 'weight' (elementwise or blocks) or 'unit'.
    block_dims: (height, width) of blocks of the squeezed rank-2 weight; -1
      is the whole dimension; (1, 1) is elementwise.
    pooling: 'AVG' or 'MAX' pooling of |w| over a block.
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
