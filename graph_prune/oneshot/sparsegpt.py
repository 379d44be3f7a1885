"""SparseGPT: prune one layer and reconstruct its output from its inputs.

Frantar & Alistarh 2023 ("Massive Language Models Can Be Accurately Pruned
in One-Shot"). For a layer `y = x @ W` (W: [inputs, outputs], a Dense
kernel) and calibration inputs X (rows: samples or tokens), the pruned W'
should keep `||X W - X W'||` small. With `H = X^T X` (damped by 1% of its
mean diagonal), the Optimal Brain Surgeon step for one input row i of W is:
zero the chosen entries of row i, and spread the error
`(w_i - q_i) / U[i, i]` over the later rows through row i of U, the upper
Cholesky factor of `H^-1`. Rows go in blocks of `block_size`: the mask of a
block is chosen at its start from `w^2 / U[i, i]^2` over the whole block
(all outputs together), and the block's errors update every later row at
once after it (the paper's lazy batch update). N:M instead chooses, at the
start of every group of M rows, the N smallest-scored of each output.

    w_new, mask = sparsegpt.prune(w, hessian, sparsity=0.5)
    w_new, mask = sparsegpt.prune(w, hessian, m_by_n=(2, 4))

The reference code works on W^T ([outputs, inputs], torch's layout); the
steps are the same with rows and columns swapped.
"""

from typing import Optional, Tuple

import numpy as np

from graph_prune import errors

DAMPING = 0.01  # of the mean diagonal, as the paper
BLOCK_SIZE = 128  # input rows per block, as the paper


def hessian(x: np.ndarray) -> np.ndarray:
  """`X^T X` of inputs `x` ([..., features]), in float64."""
  x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
  return x.T @ x


def upper_inverse_factor(h: np.ndarray, damping: float = DAMPING):
  """U, upper triangular with `U^T U = (H + damp I)^-1`, and the dead inputs.

  Inputs that are always zero (zero diagonal) get diagonal 1, so that H is
  invertible; their weights are zeroed (`prune`), as the paper does.

  Args:
    h: the [n, n] Hessian `X^T X`.
    damping: the fraction of H's mean diagonal added to its diagonal.

  Returns:
    (U [n, n] float64, dead [n] bool).

  Raises:
    HessianError: H is not square, or not positive definite after damping.
  """
  h = np.array(h, np.float64)
  if h.ndim != 2 or h.shape[0] != h.shape[1]:
    raise errors.HessianError(
      f'the Hessian must be square, got shape {h.shape}'
    )
  diag = np.diagonal(h).copy()
  dead = diag == 0
  h[dead, dead] = 1.0
  h[np.diag_indices_from(h)] += damping * float(np.mean(np.diagonal(h)))
  try:
    # U^T U = H^-1 with U upper: factor H with its order reversed,
    # J H J = M M^T (J the reversal, M lower), so H = R R^T with R = J M J
    # upper, and U = R^-1 = J M^-1 J. One Cholesky and one triangular
    # inverse, instead of inverting H and factoring its inverse again.
    lower = np.linalg.cholesky(h[::-1, ::-1])
  except np.linalg.LinAlgError as err:
    raise errors.HessianError(
      'the Hessian is not positive definite after damping '
      f'({damping:g} of its mean diagonal): {err}; raise the damping or '
      'check the calibration data for NaN or Inf'
    ) from None
  upper = np.ascontiguousarray(lower_inverse(lower)[::-1, ::-1])
  return upper, dead


def lower_inverse(lower: np.ndarray, leaf: int = 256) -> np.ndarray:
  """The inverse of a lower triangular matrix, by blocks.

  NumPy has no triangular solve; `np.linalg.inv` would factor the matrix
  again as a general one. Splitting `[[A, 0], [B, C]]` gives the inverse
  `[[A^-1, 0], [-C^-1 B A^-1, C^-1]]`: two half-size inverses and two
  matrix products, so nearly all of the work is in BLAS matrix products.

  Args:
    lower: [n, n], lower triangular, nonzero diagonal.
    leaf: at or below this size, `np.linalg.inv`.

  Returns:
    [n, n], lower triangular.
  """
  n = lower.shape[0]
  if n <= leaf:
    return np.tril(np.linalg.inv(lower))
  half = n // 2
  a_inv = lower_inverse(lower[:half, :half], leaf)
  c_inv = lower_inverse(lower[half:, half:], leaf)
  result = np.zeros_like(lower)
  result[:half, :half] = a_inv
  result[half:, half:] = c_inv
  result[half:, :half] = -(c_inv @ (lower[half:, :half] @ a_inv))
  return result


def prune(
  weight: np.ndarray,
  h: np.ndarray,
  sparsity: float = 0.0,
  m_by_n: Optional[Tuple[int, int]] = None,
  block_size: int = BLOCK_SIZE,
  damping: float = DAMPING,
  precision=np.float32,
) -> Tuple[np.ndarray, np.ndarray]:
  """Prunes `weight` ([inputs, outputs]) with its inputs' Hessian.

  Args:
    weight: the kernel, inputs on axis 0 (a Dense kernel; a conv kernel
      reshaped to [kh * kw * cin, cout]).
    h: `X^T X` of the layer's inputs, [inputs, inputs].
    sparsity: the fraction of weights to zero (unstructured), exact over the
      layer: each block prunes what brings the layer's count to
      `floor(sparsity * size * end / inputs)` by its end row.
    m_by_n: (N, M): keep N of every M consecutive inputs of each output
      instead (`sparsity` is then ignored).
    block_size: input rows per block.
    damping: see `upper_inverse_factor`.
    precision: the dtype of the row updates (float32, as the reference
      code: twice as fast as float64 on large layers); the Hessian's factor
      is always computed in float64.

  Returns:
    (the new weight in `weight`'s dtype, the bool mask of kept weights).

  Raises:
    HessianError: the Hessian does not match the weight or is singular.
  """
  dtype = np.asarray(weight).dtype
  w = np.array(weight, precision)
  if w.ndim != 2:
    raise errors.HessianError(
      f'the weight must be [inputs, outputs], got {w.shape}'
    )
  if np.shape(h) != (w.shape[0], w.shape[0]):
    raise errors.HessianError(
      f'the Hessian is {np.shape(h)} but the weight has {w.shape[0]} inputs'
    )
  upper, dead = upper_inverse_factor(h, damping)
  upper = upper.astype(precision)
  w[dead] = 0.0
  rows, cols = w.shape
  keep = np.ones_like(w, dtype=bool)
  pruned_so_far = 0
  for start in range(0, rows, block_size):
    end = min(start + block_size, rows)
    u = upper[start:end, start:end]
    d = np.diagonal(u)
    block = w[start:end].copy()
    block_errors = np.zeros_like(block)
    if m_by_n is None:
      target = int(np.floor(sparsity * rows * cols * end / rows + 1e-9))
      count = target - pruned_so_far
      pruned_so_far = target
      block_keep = _keep_smallest_out(block**2 / d[:, None] ** 2, count)
    else:
      block_keep = np.ones_like(block, dtype=bool)
    for i in range(end - start):
      if m_by_n is not None and (start + i) % m_by_n[1] == 0:
        n, m = m_by_n
        group = slice(i, min(i + m, end - start))
        scores = block[group] ** 2 / d[group, None] ** 2
        block_keep[group] = _keep_per_column(scores, n)
      row = block[i]
      q = np.where(block_keep[i], row, 0.0)
      err = (row - q) / u[i, i]
      block[i:] -= np.outer(u[i, i:], err)
      block[i] = q
      block_errors[i] = err
    w[start:end] = block
    keep[start:end] = block_keep
    w[end:] -= upper[start:end, end:].T @ block_errors
  keep &= ~dead[:, None]
  w[~keep] = 0.0
  return w.astype(dtype), keep


def prune_diagonal(
  weight: np.ndarray,
  diagonal: np.ndarray,
  sparsity: float = 0.0,
  m_by_n: Optional[Tuple[int, int]] = None,
  damping: float = DAMPING,
) -> Tuple[np.ndarray, np.ndarray]:
  """SparseGPT on a layer whose Hessian is diagonal: an embedding table.

  A lookup's `X^T X` is diagonal (each token's count), so is U, the factor
  of its inverse, and the OBS step has nothing to update: the error of
  row i reaches the later rows through `U[i, i+1:]`, all zero. What is left
  is the choice, `w^2 / U[i, i]^2 = w^2 * (count_i + damp)`, made within
  each output column (each embedding dimension keeps the same fraction of
  tokens), as for an embedding every column is read for every token. That
  ranks as Wanda's `|w| * sqrt(count)` but for the damping, which ranks the
  tokens the calibration never saw by |w| instead of by index. Unseen
  tokens are not zeroed as `prune` zeroes dead inputs: a table row unseen
  in calibration is a token still to be read, not an input that is zero.

  Args:
    weight: the table, [vocabulary, dimensions].
    diagonal: [vocabulary], each token's count in the calibration data.
    sparsity: the fraction of each column's entries to prune (its floor).
    m_by_n: (N, M): keep N of every M consecutive tokens of each column.
    damping: the fraction of the mean count added to every count.

  Returns:
    (the masked weight in `weight`'s dtype, the bool mask of kept weights).
  """
  w = np.asarray(weight)
  d = np.asarray(diagonal, np.float64)
  if w.ndim != 2 or d.shape != (w.shape[0],):
    raise errors.HessianError(
      f'the diagonal is {d.shape} but the weight is {w.shape}; pass one '
      'count per row of the weight'
    )
  damped = d + damping * float(np.mean(d))
  scores = np.asarray(w, np.float64) ** 2 * damped[:, None]
  keep = np.ones(w.shape, dtype=bool)
  rows = w.shape[0]
  if m_by_n is None:
    count = int(np.floor(sparsity * rows + 1e-9))
    order = np.argsort(scores, axis=0, kind='stable')[:count]
    np.put_along_axis(keep, order, False, axis=0)
  else:
    for start in range(0, rows, m_by_n[1]):
      group = slice(start, start + m_by_n[1])
      keep[group] = _keep_per_column(scores[group], m_by_n[0])
  return np.where(keep, w, 0).astype(w.dtype), keep


def _keep_smallest_out(scores: np.ndarray, count: int) -> np.ndarray:
  """All True except the `count` smallest scores (any of equal ones).

  A partition, not a sort: the block's order does not matter, and a full
  sort of every block cost as much as the row updates.
  """
  keep = np.ones(scores.shape, dtype=bool)
  if count >= scores.size:
    keep[:] = False
  elif count > 0:
    order = np.argpartition(scores, count - 1, axis=None)[:count]
    keep.flat[order] = False
  return keep


def _keep_per_column(scores: np.ndarray, n: int) -> np.ndarray:
  """Per column, True for the `n` largest scores (ties: lower index kept)."""
  order = np.argsort(-scores, axis=0, kind='stable')
  keep = np.zeros(scores.shape, dtype=bool)
  np.put_along_axis(keep, order[:n], True, axis=0)
  return keep


def reconstruction_error(x, weight, new_weight) -> float:
  """`||X W - X W'|| / ||X W||`: how much of the layer's output changed."""
  x = np.asarray(x, np.float64).reshape(-1, np.shape(weight)[0])
  y = x @ np.asarray(weight, np.float64)
  y_new = x @ np.asarray(new_weight, np.float64)
  norm = np.linalg.norm(y)
  return float(np.linalg.norm(y - y_new) / norm) if norm else 0.0
