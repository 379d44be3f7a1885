"""Calibration statistics of a layer's inputs, as SparseGPT and Wanda read them.

Both solvers see a layer as `y = X @ W` with W reshaped to [inputs, outputs]:
a Dense kernel as it is, a Conv2D kernel [kh, kw, cin, cout] as
[kh * kw * cin, cout]. For a conv, a row of X is one input patch: the
kh x kw x cin window each output position reads, in the kernel's row-major
order, so `patches(x) @ kernel.reshape(-1, cout)` is the conv's output
(`tf.image.extract_patches` orders a patch that way; SAME padding's zeros
are part of the patch, as the conv multiplies them too).

A grouped conv (Keras' `groups`; a depthwise conv is one group per input
channel) is one such problem per group, from its own channels' patches
(`GroupedStatistics`). An embedding lookup multiplies one-hot token rows,
so its `X^T X` is diagonal, the count of each token (`TokenCounts`).

The statistics are sums over every calibration row, accumulated batch by
batch so that no more than one batch of rows is ever held:

    stats = InputStatistics(inputs=kh * kw * cin, hessian=True)
    for batch in calibration:
      stats.add(conv_patches(layer_input(batch), kernel_shape, op_attrs))
    sparsegpt.prune(kernel.reshape(-1, cout), stats.hessian(), 0.5)
    wanda.keep(kernel.reshape(-1, cout), stats.norms(), 0.5)
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from graph_prune import errors


def conv_patches(
  x,
  kernel_shape: Sequence[int],
  strides: Sequence[int] = (1, 1, 1, 1),
  padding: str = 'VALID',
  dilations: Sequence[int] = (1, 1, 1, 1),
) -> tf.Tensor:
  """The input patches of a channels-last Conv2D, one row per output position.

  Args:
    x: the conv's input, [batch, height, width, cin].
    kernel_shape: [kh, kw, ...]: only the window is read, so a grouped
      conv's kernel (cin / groups in-channels) gives every channel's patch.
    strides, padding, dilations: the Conv2D's attributes (NHWC, 4 values).

  Returns:
    [batch * out_h * out_w, kh * kw * cin], rows in the kernel's order.
  """
  kh, kw = (int(d) for d in kernel_shape[:2])
  cin = int(np.shape(x)[-1])
  patches = tf.image.extract_patches(
    x,
    sizes=[1, kh, kw, 1],
    strides=list(strides),
    rates=list(dilations),
    padding=padding.upper() if isinstance(padding, str) else padding,
  )
  return tf.reshape(patches, [-1, kh * kw * cin])


def checked_rows(rows, inputs: int, name: str) -> np.ndarray:
  """`rows` as float64 [n, inputs], or a `StatisticsError` naming the layer."""
  rows = np.asarray(rows, np.float64)
  what = name or 'a layer'
  if rows.ndim == 0 or rows.shape[-1] != inputs:
    raise errors.StatisticsError(
      f'calibration rows of shape {rows.shape} for {what} with {inputs} '
      "inputs; the calibration data must match the model's input signature"
    )
  rows = rows.reshape(-1, inputs)
  if not np.isfinite(rows).all():
    raise errors.StatisticsError(
      f'the calibration data gives NaN or Inf at the input of {what}; check '
      'the data for NaN, Inf or values the model overflows on'
    )
  return rows


class InputStatistics:
  """Sums over calibration rows of one layer's inputs.

  Always the sum of squares per input feature (Wanda's norm); with
  `hessian=True` also `X^T X` (SparseGPT's), which costs inputs^2 float64.
  """

  def __init__(self, inputs: int, hessian: bool = False, name: str = ''):
    self.inputs = int(inputs)
    self.name = name
    self.rows = 0
    self._squares = np.zeros(self.inputs, np.float64)
    self._gram = np.zeros((self.inputs,) * 2, np.float64) if hessian else None

  def add(self, rows) -> None:
    """Adds a batch of rows ([..., inputs]).

    Raises:
      StatisticsError: the rows' last axis is not the layer's input count,
        or they hold NaN or Inf.
    """
    rows = checked_rows(rows, self.inputs, self.name)
    self.rows += rows.shape[0]
    self._squares += np.einsum('ij,ij->j', rows, rows)
    if self._gram is not None:
      self._gram += rows.T @ rows

  groups = 1

  def norms(self, group: int = 0) -> np.ndarray:
    """`||X[:, j]||_2` over every row added (Wanda)."""
    del group
    return np.sqrt(self._squares)

  def hessian(self, group: int = 0) -> Optional[np.ndarray]:
    """`X^T X` over every row added (SparseGPT), or None if not kept."""
    del group
    return None if self._gram is None else self._gram.copy()

  def quadratic(self, d, group: int = 0) -> float:
    """`||X d||^2` for a [inputs, outputs] `d`, from `X^T X`."""
    return _quadratic(d, self.hessian(group))


class GroupedStatistics:
  """Per-group sums of a grouped or depthwise conv's input patches.

  A conv of G groups reads, for the outputs of group g, only the input
  channels of group g (`cin / G` of them, g major: channel `g * cin_g + k`),
  so each group is its own problem: `X_g^T X_g` over the group's
  kh x kw x cin_g patch, kept as [G, n, n] (n = taps * cin_g) rather than one
  [taps * cin]^2 matrix of which all but the blocks would be zero. A
  depthwise conv is G = cin groups of one channel each.
  """

  def __init__(self, taps: int, group_inputs: int, groups: int, name: str = ''):
    self.taps, self.group_inputs = int(taps), int(group_inputs)
    self.groups, self.name = int(groups), name
    self.rows = 0
    size = self.taps * self.group_inputs
    self._gram = np.zeros((self.groups, size, size), np.float64)

  def add(self, rows) -> None:
    """Adds patches [..., taps * cin] in the kernel's (kh, kw, c) order."""
    rows = checked_rows(
      rows, self.taps * self.group_inputs * self.groups, self.name
    )
    rows = rows.reshape(-1, self.taps, self.groups, self.group_inputs)
    self.rows += rows.shape[0]
    # [groups, rows, taps * group_inputs]: one BLAS product per group.
    per_group = rows.transpose(2, 0, 1, 3).reshape(self.groups, len(rows), -1)
    self._gram += np.matmul(per_group.transpose(0, 2, 1), per_group)

  def hessian(self, group: int) -> np.ndarray:
    """`X_g^T X_g`, rows and columns in the group's (tap, channel) order."""
    return self._gram[group].copy()

  def norms(self, group: int) -> np.ndarray:
    return np.sqrt(np.diagonal(self._gram[group]))

  def quadratic(self, d, group: int) -> float:
    return _quadratic(d, self._gram[group])


class TokenCounts:
  """How often each token id was looked up: an embedding's statistics.

  A lookup `W[ids]` is `onehot(ids) @ W`, so its `X^T X` is diagonal, the
  count of each token, and `||X[:, i]||` is the count's square root.
  """

  groups = 1

  def __init__(self, vocabulary: int, name: str = ''):
    self.vocabulary, self.name = int(vocabulary), name
    self.rows = 0
    self._counts = np.zeros(self.vocabulary, np.float64)

  def add(self, ids) -> None:
    """Adds a batch of token ids (any shape).

    Raises:
      StatisticsError: ids that are not integers in [0, vocabulary).
    """
    ids = np.asarray(ids).reshape(-1)
    what = self.name or 'an embedding'
    if not np.issubdtype(ids.dtype, np.integer) or (
      ids.size and (ids.min() < 0 or ids.max() >= self.vocabulary)
    ):
      raise errors.StatisticsError(
        f'the calibration data looks up ids of dtype {ids.dtype} outside '
        f'[0, {self.vocabulary}) in {what}; pass token ids the embedding '
        'has rows for'
      )
    self.rows += ids.size
    self._counts += np.bincount(ids, minlength=self.vocabulary)

  def counts(self, group: int = 0) -> np.ndarray:
    """Each token's count: the diagonal of `X^T X`."""
    del group
    return self._counts.copy()

  def norms(self, group: int = 0) -> np.ndarray:
    del group
    return np.sqrt(self._counts)

  def quadratic(self, d, group: int = 0) -> float:
    del group
    d = np.asarray(d, np.float64)
    return float(np.einsum('i,ij,ij->', self._counts, d, d))


def _quadratic(d, h) -> float:
  """`||X d||^2` from `H = X^T X`, without X."""
  d = np.asarray(d, np.float64)
  # One BLAS product: einsum('ij,ik,kj->') loops over every (i, j, k) in
  # plain C, inputs^2 x outputs multiply-adds without BLAS.
  return float(np.sum(d * (h @ d)))
