"""Calibration statistics of a layer's inputs, as SparseGPT and Wanda read them.

Both solvers see a layer as `y = X @ W` with W reshaped to [inputs, outputs]:
a Dense kernel as it is, a Conv2D kernel [kh, kw, cin, cout] as
[kh * kw * cin, cout]. For a conv, a row of X is one input patch: the
kh x kw x cin window each output position reads, in the kernel's row-major
order, so `patches(x) @ kernel.reshape(-1, cout)` is the conv's output
(`tf.image.extract_patches` orders a patch that way; SAME padding's zeros
are part of the patch, as the conv multiplies them too).

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


class StatisticsError(ValueError):
  """Calibration rows that do not fit the layer, or hold NaN or Inf."""


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
    kernel_shape: [kh, kw, cin, cout].
    strides, padding, dilations: the Conv2D's attributes (NHWC, 4 values).

  Returns:
    [batch * out_h * out_w, kh * kw * cin], rows in the kernel's order.
  """
  kh, kw, cin = (int(d) for d in kernel_shape[:3])
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
    raise StatisticsError(
      f'calibration rows of shape {rows.shape} for {what} with {inputs} '
      "inputs; the calibration data must match the model's input signature"
    )
  rows = rows.reshape(-1, inputs)
  if not np.isfinite(rows).all():
    raise StatisticsError(
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

  def norms(self) -> np.ndarray:
    """`||X[:, j]||_2` over every row added (Wanda)."""
    return np.sqrt(self._squares)

  def hessian(self) -> Optional[np.ndarray]:
    """`X^T X` over every row added (SparseGPT), or None if not kept."""
    return None if self._gram is None else self._gram.copy()


class DepthwiseStatistics:
  """Per-channel sums of a depthwise conv's input patches.

  Channel c's outputs read only channel c's kh x kw window, so each channel
  is its own small problem: `X_c^T X_c` ([taps, taps], taps = kh * kw) and
  the norm of each tap, kept as [channels, taps, taps] rather than one
  [taps * channels]^2 matrix of which all but the blocks would be zero.
  """

  def __init__(self, taps: int, channels: int, name: str = ''):
    self.taps, self.channels, self.name = int(taps), int(channels), name
    self.rows = 0
    self._gram = np.zeros((self.channels, self.taps, self.taps), np.float64)

  def add(self, rows) -> None:
    """Adds patches [..., taps * channels] in the kernel's (kh, kw, c) order."""
    rows = checked_rows(rows, self.taps * self.channels, self.name)
    rows = rows.reshape(-1, self.taps, self.channels)
    self.rows += rows.shape[0]
    self._gram += np.einsum('rkc,rlc->ckl', rows, rows)

  def hessian(self, channel: int) -> np.ndarray:
    return self._gram[channel].copy()

  def norms(self, channel: int) -> np.ndarray:
    return np.sqrt(np.diagonal(self._gram[channel]))
