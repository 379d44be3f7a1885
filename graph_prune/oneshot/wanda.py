"""Wanda: prune by |w| times the norm of the weight's input feature.

Sun, Liu, Bair & Kolter 2023 ("A Simple and Effective Pruning Approach for
Large Language Models"). For `y = x @ W` (W: [inputs, outputs]) the score of
`W[j, i]` is `|W[j, i]| * ||X[:, j]||_2`, the L2 norm of input feature j
over every calibration row; weights are compared within each output (each
column of W keeps the same fraction), which the paper finds better than
per layer for LLMs. No weight changes: only the mask comes from the data.

    norms = wanda.feature_norms(x)                     # [inputs]
    keep = wanda.keep(w, norms, sparsity=0.5)          # per output
    keep = wanda.keep(w, norms, m_by_n=(2, 4))
"""

from typing import Optional, Tuple

import numpy as np


def feature_norms(x: np.ndarray) -> np.ndarray:
  """`||X[:, j]||_2` over every row of `x` ([..., features]), float64."""
  x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
  return np.sqrt(np.sum(x * x, axis=0))


def scores(weight: np.ndarray, norms: np.ndarray) -> np.ndarray:
  """`|W[j, i]| * norms[j]`, W: [inputs, outputs]."""
  return np.abs(np.asarray(weight, np.float64)) * np.asarray(norms)[:, None]


def keep(
  weight: np.ndarray,
  norms: np.ndarray,
  sparsity: float = 0.0,
  m_by_n: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
  """The bool mask of kept weights, chosen per output.

  Args:
    weight: [inputs, outputs].
    norms: [inputs], `feature_norms` of the layer's inputs.
    sparsity: the fraction of each output's inputs to prune (its floor).
    m_by_n: (N, M): keep the N largest scores of every M consecutive inputs
      of each output instead.

  Returns:
    A bool array of `weight`'s shape. Ties: the lower input index stays.
  """
  s = scores(weight, norms)
  inputs = s.shape[0]
  result = np.ones(s.shape, dtype=bool)
  if m_by_n is None:
    count = int(np.floor(sparsity * inputs + 1e-9))
    order = np.argsort(s, axis=0, kind='stable')[:count]
    np.put_along_axis(result, order, False, axis=0)
    return result
  n, m = m_by_n
  for start in range(0, inputs, m):
    group = s[start : start + m]
    order = np.argsort(-group, axis=0, kind='stable')[n:]
    np.put_along_axis(result[start : start + m], order, False, axis=0)
  return result
