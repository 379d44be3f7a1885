"""SparseGPT's and Wanda's one-layer math against NumPy and closed forms."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.oneshot import sparsegpt
from graph_prune.oneshot import wanda


def _correlated(rows=512, inputs=64, seed=0):
  """Inputs with strongly correlated features and uneven scales."""
  rng = np.random.default_rng(seed)
  base = rng.standard_normal((rows, 8))
  mix = rng.standard_normal((8, inputs))
  x = base @ mix + 0.1 * rng.standard_normal((rows, inputs))
  return x * rng.uniform(0.2, 5.0, inputs)


def _damped(h, damping=sparsegpt.DAMPING):
  h = np.array(h, np.float64)
  return h + damping * np.mean(np.diagonal(h)) * np.eye(len(h))


class SparseGPTTest(tf.test.TestCase, parameterized.TestCase):
  def test_one_pruned_weight_is_the_least_squares_fix(self):
    # Pruning only input 0 of one output: the kept weights are the damped
    # least-squares optimum with w'[0] = 0 (Optimal Brain Surgeon).
    x = _correlated(inputs=6)
    h = sparsegpt.hessian(x)
    w = np.array([[0.01], [1.0], [-2.0], [1.5], [0.7], [-1.2]])
    new, keep = sparsegpt.prune(w, h, sparsity=1 / 6, precision=np.float64)
    hd = _damped(h)
    expected = np.zeros(6)
    expected[1:] = np.linalg.solve(hd[1:, 1:], hd[1:, :] @ w[:, 0])
    self.assertAllEqual(keep[:, 0], [False] + [True] * 5)
    self.assertAllClose(new[:, 0], expected, rtol=1e-8, atol=1e-10)

  @parameterized.named_parameters(('half', 0.5), ('most', 0.8))
  def test_exact_sparsity_over_blocks(self, sparsity):
    rng = np.random.default_rng(1)
    x = _correlated(inputs=100)
    w = rng.standard_normal((100, 7)).astype(np.float32)
    new, keep = sparsegpt.prune(
      w, sparsegpt.hessian(x), sparsity, block_size=32
    )
    self.assertEqual(new.dtype, np.float32)
    self.assertEqual(int((~keep).sum()), int(np.floor(sparsity * 700)))
    self.assertAllEqual(new[~keep], np.zeros(int((~keep).sum())))

  def test_two_of_four(self):
    rng = np.random.default_rng(2)
    x = _correlated(inputs=64)
    w = rng.standard_normal((64, 5))
    new, keep = sparsegpt.prune(w, sparsegpt.hessian(x), m_by_n=(2, 4))
    per_group = keep.reshape(16, 4, 5).sum(axis=1)
    self.assertAllEqual(per_group, np.full((16, 5), 2))
    self.assertAllEqual((new != 0), keep)

  @parameterized.named_parameters(('half', 0.5, None), ('two_four', 0, (2, 4)))
  def test_error_below_wanda_and_magnitude(self, sparsity, m_by_n):
    rng = np.random.default_rng(3)
    x = _correlated(inputs=64)
    w = rng.standard_normal((64, 16))
    new, _ = sparsegpt.prune(w, sparsegpt.hessian(x), sparsity, m_by_n)
    by_wanda = w * wanda.keep(w, wanda.feature_norms(x), sparsity, m_by_n)
    by_magnitude = w * wanda.keep(w, np.ones(64), sparsity, m_by_n)
    ours = sparsegpt.reconstruction_error(x, w, new)
    self.assertLess(ours, sparsegpt.reconstruction_error(x, w, by_wanda))
    self.assertLess(ours, sparsegpt.reconstruction_error(x, w, by_magnitude))

  def test_dead_inputs_are_zeroed(self):
    x = _correlated(inputs=8)
    x[:, 3] = 0.0
    w = np.ones((8, 2))
    new, keep = sparsegpt.prune(w, sparsegpt.hessian(x), 0.0)
    self.assertAllEqual(new[3], [0.0, 0.0])
    self.assertAllEqual(keep[3], [False, False])
    self.assertTrue(keep[[0, 1, 2, 4, 5, 6, 7]].all())

  def test_upper_factor_inverts_the_damped_hessian(self):
    h = sparsegpt.hessian(_correlated(inputs=10))
    upper, dead = sparsegpt.upper_inverse_factor(h)
    self.assertFalse(dead.any())
    self.assertAllClose(upper, np.triu(upper))
    self.assertAllClose(upper.T @ upper, np.linalg.inv(_damped(h)), rtol=1e-8)

  def test_upper_factor_of_a_hessian_split_into_blocks(self):
    # 300 inputs: past lower_inverse's 256-row leaf, so its block formula
    # runs; U must still be the upper Cholesky factor of H^-1.
    h = sparsegpt.hessian(_correlated(inputs=300, rows=600))
    upper, _ = sparsegpt.upper_inverse_factor(h)
    self.assertAllEqual(upper, np.triu(upper))
    self.assertAllGreater(np.diagonal(upper), 0.0)
    expected = np.linalg.cholesky(np.linalg.inv(_damped(h))).T
    self.assertAllClose(upper, expected, rtol=1e-7, atol=1e-12)

  @parameterized.parameters(1, 7, 64)
  def test_lower_inverse_by_blocks(self, leaf):
    rng = np.random.RandomState(leaf)
    lower = np.tril(rng.randn(150, 150)) + 20.0 * np.eye(150)
    inverse = sparsegpt.lower_inverse(lower, leaf=leaf)
    self.assertAllEqual(inverse, np.tril(inverse))
    self.assertAllClose(inverse @ lower, np.eye(150), atol=1e-12)

  def test_mismatched_hessian_names_both_shapes(self):
    with self.assertRaisesRegex(ValueError, r'\(3, 3\).*4 inputs'):
      sparsegpt.prune(np.ones((4, 2)), np.eye(3), 0.5)


class DiagonalTest(tf.test.TestCase):
  def test_a_diagonal_hessian_gives_no_update(self):
    # Why an embedding needs no OBS update: with H diagonal, the full
    # solver keeps every kept weight as it was.
    rng = np.random.default_rng(6)
    w = rng.standard_normal((16, 5))
    counts = rng.integers(1, 50, 16).astype(float)
    new, keep = sparsegpt.prune(
      w, np.diag(counts), sparsity=0.5, precision=np.float64
    )
    self.assertAllClose(new, w * keep, rtol=1e-12, atol=1e-12)

  def test_prune_diagonal_ranks_each_column_by_damped_squares(self):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((10, 3)).astype(np.float32)
    counts = np.array([0, 0, 5, 1, 9, 2, 0, 7, 3, 1], float)
    new, keep = sparsegpt.prune_diagonal(w, counts, sparsity=0.5)
    damped = counts + 0.01 * counts.mean()
    for out in range(3):
      score = [w[j, out] ** 2 * damped[j] for j in range(10)]
      lowest = sorted(range(10), key=lambda j: score[j])[:5]
      self.assertAllEqual(keep[:, out], [j not in lowest for j in range(10)])
    self.assertAllEqual(new, w * keep)
    self.assertEqual(new.dtype, np.float32)
    with self.assertRaisesRegex(ValueError, r'\(9,\).*\(10, 3\)'):
      sparsegpt.prune_diagonal(w, counts[:9], 0.5)


class WandaTest(tf.test.TestCase):
  def test_scores_and_per_output_selection_match_numpy(self):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 3, 12))  # rows of any leading shape
    w = rng.standard_normal((12, 4))
    keep = wanda.keep(w, wanda.feature_norms(x), sparsity=0.5)
    flat = x.reshape(-1, 12)
    norms = np.array(
      [np.sqrt(sum(v * v for v in flat[:, j])) for j in range(12)]
    )
    for out in range(4):
      score = [abs(w[j, out]) * norms[j] for j in range(12)]
      lowest = sorted(range(12), key=lambda j: score[j])[:6]
      expected = [j not in lowest for j in range(12)]
      self.assertAllEqual(keep[:, out], expected)

  def test_two_of_four_keeps_the_two_largest_of_each_group(self):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 3))
    norms = rng.uniform(0.5, 2.0, 8)
    keep = wanda.keep(w, norms, m_by_n=(2, 4))
    score = np.abs(w) * norms[:, None]
    for out in range(3):
      for g in (0, 4):
        top = set(np.argsort(-score[g : g + 4, out])[:2] + g)
        self.assertEqual(set(np.flatnonzero(keep[g : g + 4, out]) + g), top)


if __name__ == '__main__':
  tf.test.main()
