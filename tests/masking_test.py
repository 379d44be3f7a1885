"""Tests of graph_prune.masks.masking against NumPy reference computations."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.config.hparams import parse_hparams
from graph_prune.masks import masking
from graph_prune.masks import schedule
from graph_prune.masks.masking import MaskStructure

# ---- NumPy references (independent of the code under test) ----


def np_num_prune(n, sparsity):
  keep = max(1, min(n, int(np.round(n * (1.0 - sparsity)))))
  return n - keep


def np_keep_smallest_pruned(scores, sparsity):
  """Keep-mask pruning the round(n*s) smallest, lowest index first on ties."""
  flat = np.asarray(scores, np.float64).reshape(-1)
  order = np.argsort(flat, kind='stable')
  keep = np.ones(flat.size, bool)
  keep[order[: np_num_prune(flat.size, sparsity)]] = False
  return keep.reshape(np.shape(scores))


def np_block_scores(w2d, bh, bw, pooling):
  h, w = w2d.shape
  bh = h if bh == -1 else bh
  bw = w if bw == -1 else bw
  rows, cols = -(-h // bh), -(-w // bw)
  out = np.zeros((rows, cols))
  for r in range(rows):
    for c in range(cols):
      block = np.abs(w2d[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw])
      out[r, c] = block.max() if pooling == 'MAX' else block.mean()
  return out, bh, bw


def np_block_mask(w2d, bh, bw, pooling, sparsity):
  scores, bh, bw = np_block_scores(w2d, bh, bw, pooling)
  keep = np_keep_smallest_pruned(scores, sparsity)
  full = np.kron(keep, np.ones((bh, bw)))
  return full[: w2d.shape[0], : w2d.shape[1]]


def np_unit_mask(w, sparsity):
  norms = np.sqrt((w.reshape(-1, w.shape[-1]).astype(np.float64) ** 2).sum(0))
  keep = np_keep_smallest_pruned(norms, sparsity)
  return np.broadcast_to(keep, w.shape).astype(np.float32)


def np_m_by_n_mask(w, n, m):
  moved = np.moveaxis(np.abs(w), -2, -1)
  mask = np.zeros_like(moved)
  channels = moved.shape[-1]
  for idx in np.ndindex(moved.shape[:-1]):
    row = moved[idx]
    for start in range(0, channels, m):
      group = row[start : start + m]
      order = np.argsort(-group, kind='stable')[:n]
      mask[idx + (start + order,)] = 1.0
  return np.moveaxis(mask, -1, -2)


def np_histogram_threshold(scores, sparsity, nbins):
  flat = np.asarray(scores, np.float64).reshape(-1)
  max_value = flat.max()
  hist, _ = np.histogram(flat, bins=nbins, range=(0.0, max_value))
  cdf = np.cumsum(hist) / flat.size
  return np.sum(cdf < sparsity) * max_value / nbins


def _random(shape, seed=0, dtype=np.float32):
  return np.random.RandomState(seed).standard_normal(shape).astype(dtype)


class ElementwiseTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    ('vector_like', (100, 1), 0.37),
    ('dense', (64, 48), 0.9),
    ('conv', (3, 3, 8, 16), 0.5),
    ('odd', (7, 13), 0.75),
    ('rank3', (5, 6, 7), 0.999),
    ('zero', (20, 20), 0.0),
  )
  def test_matches_numpy(self, shape, sparsity):
    w = _random(shape)
    mask, threshold = masking.elementwise_mask(w, sparsity)
    expected = np_keep_smallest_pruned(np.abs(w), sparsity)
    self.assertAllEqual(mask, expected.astype(np.float32))
    self.assertEqual(mask.dtype, tf.float32)
    self.assertAllClose(threshold, np.abs(w)[expected].min())

  def test_contrib_linspace(self):
    w = np.linspace(1.0, 100.0, 100, dtype=np.float32).reshape(10, 10)
    mask, threshold = masking.elementwise_mask(w, 0.95)
    self.assertEqual(int(np.count_nonzero(mask)), 5)
    self.assertAllEqual(np.flatnonzero(np.asarray(mask)), [95, 96, 97, 98, 99])
    self.assertAllClose(threshold, 96.0)

  def test_ties_constant_weight_is_pruned_exactly(self):
    w = np.full((10, 10), 0.3, np.float32)
    mask, _ = masking.elementwise_mask(w, 0.5)
    self.assertEqual(int(np.count_nonzero(mask)), 50)
    # Lowest flat indices go first.
    self.assertAllEqual(np.asarray(mask).reshape(-1)[:50], np.zeros(50))

  def test_ties_across_signs(self):
    w = np.array([[1.0, -1.0, 2.0, -2.0], [1.0, 3.0, -3.0, 0.5]], np.float32)
    mask, _ = masking.elementwise_mask(w, 0.5)
    self.assertAllEqual(mask, np_keep_smallest_pruned(np.abs(w), 0.5))

  def test_sparsity_zero_keeps_all_even_zeros(self):
    w = np.zeros((4, 4), np.float32)
    mask, _ = masking.elementwise_mask(w, 0.0)
    self.assertAllEqual(mask, np.ones((4, 4)))

  @parameterized.named_parameters(('s_0999999', 0.999999), ('s_1', 1.0))
  def test_sparsity_near_one_keeps_the_largest(self, sparsity):
    w = _random((50, 40), seed=3)
    mask, _ = masking.elementwise_mask(w, sparsity)
    self.assertEqual(int(np.count_nonzero(mask)), 1)
    self.assertEqual(
      int(np.flatnonzero(np.asarray(mask))[0]), int(np.argmax(np.abs(w)))
    )

  def test_in_tf_function_with_tensor_sparsity(self):
    w = tf.constant(_random((32, 16), seed=5))
    fn = tf.function(lambda w, s: masking.elementwise_mask(w, s).mask)
    for s in [0.0, 0.25, 0.5, 0.8]:
      self.assertAllEqual(
        fn(w, tf.constant(s)), np_keep_smallest_pruned(np.abs(w.numpy()), s)
      )

  @parameterized.named_parameters(
    ('float16', tf.float16), ('bfloat16', tf.bfloat16), ('float64', tf.float64)
  )
  def test_dtypes(self, dtype):
    w = tf.cast(_random((16, 16), seed=9), dtype)
    mask, threshold = masking.elementwise_mask(w, 0.6)
    self.assertEqual(mask.dtype, dtype)
    self.assertEqual(threshold.dtype, masking.score_dtype(dtype))
    expected = np_keep_smallest_pruned(
      np.abs(tf.cast(w, tf.float64).numpy()), 0.6
    )
    self.assertAllEqual(tf.cast(mask, tf.float32), expected)

  @parameterized.named_parameters(
    ('nan', np.nan), ('inf', np.inf), ('minus_inf', -np.inf)
  )
  def test_non_finite_weight_is_a_clear_error(self, bad):
    w = _random((4, 4))
    w[1, 2] = bad
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, r"weight 'dense/kernel' holds NaN or Inf"
    ):
      masking.compute_mask(w, 0.5, MaskStructure(), name='dense/kernel')

  @parameterized.parameters(tf.float32, tf.float16)
  def test_huge_finite_weight_is_masked(self, dtype):
    # The sum of these weights overflows; they are still finite.
    big = np.finfo(dtype.as_numpy_dtype).max / 2
    w = tf.constant([[big, big], [big, 1.0]], dtype)
    mask, _ = masking.compute_mask(w, 0.25, MaskStructure(), name='k')
    self.assertAllEqual(mask, [[1, 1], [1, 0]])

  def test_small_weight_update_graph_has_no_branches_or_calls(self):
    # A model's first update traces one per weight: no tf.cond branch
    # functions or per-shape XLA calls for small weights, the same mask.
    w = np.round(_random((64, 64), seed=3), 1)  # many ties
    fn = tf.function(
      lambda w: masking.compute_mask(w, 0.6, MaskStructure(), name='k')
    )
    graph = fn.get_concrete_function(tf.TensorSpec([64, 64])).graph
    ops = {op.type for op in graph.get_operations()}
    self.assertEmpty(
      ops & {'If', 'StatelessIf', 'PartitionedCall', 'StatefulPartitionedCall'}
    )
    self.assertEmpty(graph.as_graph_def().library.function)
    mask, _ = fn(tf.constant(w))
    self.assertAllEqual(mask, np_keep_smallest_pruned(np.abs(w), 0.6))

  def test_non_finite_in_tf_function(self):
    fn = tf.function(
      lambda w: masking.compute_mask(w, 0.5, MaskStructure(), name='k').mask
    )
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'NaN or Inf'):
      fn(tf.constant([[1.0, np.nan], [2.0, 3.0]]))

  def test_histogram_matches_numpy(self):
    w = _random((64, 64), seed=11)
    for s in [0.0, 0.3, 0.9]:
      mask, threshold = masking.elementwise_mask(
        w, s, method='histogram', nbins=128
      )
      t = np_histogram_threshold(np.abs(w), s, 128)
      self.assertAllClose(threshold, t, rtol=1e-5)
      expected = np.abs(w) > t
      if s == 0.0:
        expected[:] = True
      self.assertAllEqual(mask, expected.astype(np.float32))
      if s:
        self.assertAllClose(masking.mask_sparsity(mask), s, atol=0.02)


class NumToPruneTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.parameters(
    (10, 0.0, 0),
    (10, 0.25, 2),
    (10, 0.35, 4),
    (10, 0.999, 9),
    (1, 0.9, 0),
    (8192 * 8192, 0.9, 8192 * 8192 - 6710886),
    (4096 * 4096, 0.95, 4096 * 4096 - 838861),
  )
  def test_closed_form(self, n, sparsity, want):
    # want = n - max(1, round(n * (1 - s))), rounded half to even, computed
    # by hand; the large cases fail if the sparsity passes through float32.
    self.assertEqual(int(masking.num_to_prune(n, sparsity)), want)

  def test_schedule_sparsity_is_exact_for_large_weights(self):
    h = parse_hparams(
      'target_sparsity=0.9,end_pruning_step=100,sparsity_function_end_step=100'
    )
    sparsity = schedule.sparsity_at(200, h, dtype=tf.float64)
    self.assertEqual(
      int(masking.num_to_prune(8192 * 8192, sparsity)), 8192 * 8192 - 6710886
    )


class ThresholdDecayTest(tf.test.TestCase):
  def test_contrib_smoothing(self):
    w = np.linspace(0.01, 1.0, 100, dtype=np.float32).reshape(10, 10)
    structure = MaskStructure()
    # Exact threshold at s=0.5 is the 51st smallest: 0.51.
    mask, threshold = masking.compute_mask(
      w, 0.5, structure, previous_threshold=0.9, threshold_decay=0.5
    )
    smoothed = 0.5 * 0.51 + 0.5 * 0.9
    self.assertAllClose(threshold, smoothed)
    self.assertAllEqual(mask, (w >= np.float32(smoothed)).astype(np.float32))

  def test_first_update_decays_from_zero(self):
    w = np.linspace(0.01, 1.0, 100, dtype=np.float32).reshape(10, 10)
    _, threshold = masking.compute_mask(
      w, 0.5, MaskStructure(), threshold_decay=0.25
    )
    self.assertAllClose(threshold, 0.75 * 0.51)

  def test_steady_threshold_gives_exact_mask(self):
    w = np.full((4, 5), 2.0, np.float32)
    mask, threshold = masking.compute_mask(
      w, 0.5, MaskStructure(), previous_threshold=2.0, threshold_decay=0.3
    )
    self.assertAllClose(threshold, 2.0)
    self.assertEqual(int(np.count_nonzero(mask)), 10)

  def test_smoothed_threshold_above_all_keeps_largest(self):
    w = np.linspace(0.1, 1.0, 10, dtype=np.float32).reshape(2, 5)
    mask, _ = masking.compute_mask(
      w, 0.5, MaskStructure(), previous_threshold=100.0, threshold_decay=0.9
    )
    self.assertAllEqual(np.flatnonzero(np.asarray(mask)), [9])


class BlockTest(parameterized.TestCase, tf.test.TestCase):
  _W = np.arange(1, 17, dtype=np.float32).reshape(4, 4)

  @parameterized.named_parameters(
    ('avg_2x2', (2, 2), 'AVG'),
    ('max_2x2', (2, 2), 'MAX'),
    ('avg_rows', (1, -1), 'AVG'),
    ('max_rows', (1, -1), 'MAX'),
  )
  def test_contrib_block_vectors(self, dims, pooling):
    for weight in [self._W, self._W.reshape(1, 4, 4)]:
      mask, _ = masking.compute_mask(
        weight, 0.5, MaskStructure(block_dims=dims, pooling=pooling)
      )
      expected = np.array([[0] * 4, [0] * 4, [1] * 4, [1] * 4], np.float32)
      self.assertAllEqual(mask, expected.reshape(weight.shape))

  @parameterized.named_parameters(
    ('avg_2x3', (2, 3), 'AVG', (7, 10)),
    ('max_2x3', (2, 3), 'MAX', (7, 10)),
    ('avg_col', (-1, 1), 'AVG', (6, 9)),
    ('max_4x4', (4, 4), 'MAX', (9, 9)),
    ('squeeze', (3, 2), 'AVG', (5, 1, 8)),
  )
  def test_matches_numpy(self, dims, pooling, shape):
    w = _random(shape, seed=2)
    squeezed = w.reshape([d for d in shape if d != 1])
    for s in [0.3, 0.7]:
      mask, _ = masking.compute_mask(
        w, s, MaskStructure(block_dims=dims, pooling=pooling)
      )
      expected = np_block_mask(squeezed, dims[0], dims[1], pooling, s)
      self.assertAllEqual(mask, expected.reshape(shape))

  @parameterized.named_parameters(('avg', 'AVG'), ('max', 'MAX'))
  def test_short_blocks_sit_at_the_end_not_same_padded(self, pooling):
    # 5x7 in 4x3 blocks: SAME padding would put 1 row before and 2 after,
    # 1 column before and 1 after; graph_prune pads at the end only.
    w = _random((5, 7), seed=4)
    structure = MaskStructure(block_dims=(4, 3), pooling=pooling)
    got = masking.scores(tf.constant(w), structure)
    expected, _, _ = np_block_scores(w, 4, 3, pooling)
    self.assertEqual(got.shape, (2, 3))
    self.assertAllClose(got, expected, rtol=1e-6)
    # The last block's score is that of its real elements alone.
    self.assertAllClose(
      got[1, 2],
      np.abs(w[4:, 6:]).max() if pooling == 'MAX' else np.abs(w[4:, 6:]).mean(),
    )
    # contrib's SAME-padded windows score other elements than the blocks.
    same = tf.nn.pool(
      tf.constant(np.abs(w)[None, :, :, None]),
      window_shape=(4, 3),
      pooling_type=pooling,
      strides=(4, 3),
      padding='SAME',
    )[0, :, :, 0]
    self.assertNotAllClose(same, expected)
    # The mask keeps or prunes exactly those end-aligned blocks.
    mask, _ = masking.compute_mask(tf.constant(w), 0.5, structure)
    self.assertAllEqual(mask, np_block_mask(w, 4, 3, pooling, 0.5))

  def test_block_dims_not_mutated_between_weights(self):
    # contrib replaced -1 in a shared list, so the second weight got the
    # first weight's width. Each weight resolves -1 on its own here.
    h = parse_hparams('block_height=1,block_width=-1')
    shapes = [(4, 3), (4, 6)]
    structures = [
      masking.structure_for(s, h, h.weight_settings('w'))[0] for s in shapes
    ]
    for shape, structure in zip(shapes, structures):
      w = _random(shape, seed=4)
      mask, _ = masking.compute_mask(w, 0.5, structure)
      self.assertAllEqual(mask, np_block_mask(w, 1, -1, 'AVG', 0.5))
    self.assertEqual(structures[0].block_dims, (1, -1))

  def test_conv_kernel_falls_back_to_elementwise(self):
    h = parse_hparams('block_height=2,block_width=2')
    structure, note = masking.structure_for(
      (3, 3, 4, 8), h, h.weight_settings('conv')
    )
    self.assertEqual(structure.block_dims, (1, 1))
    self.assertIn('squeezes to rank 2', note)
    structure, note = masking.structure_for(
      (1, 8, 8), h, h.weight_settings('dense')
    )
    self.assertEqual((structure.block_dims, note), ((2, 2), ''))


class UnitTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    ('dense', (20, 12), 0.5),
    ('conv', (3, 3, 4, 10), 0.3),
    ('mostly', (8, 9), 0.95),
    ('none', (5, 5), 0.0),
  )
  def test_matches_numpy(self, shape, sparsity):
    w = _random(shape, seed=7)
    mask, threshold = masking.compute_mask(
      w, sparsity, MaskStructure(granularity='unit')
    )
    expected = np_unit_mask(w, sparsity)
    self.assertAllEqual(mask, expected)
    kept_units = expected.reshape(-1, shape[-1])[0].astype(bool)
    norms = np.sqrt((w.reshape(-1, shape[-1]).astype(np.float64) ** 2).sum(0))
    self.assertAllClose(threshold, norms[kept_units].min(), rtol=1e-5)

  def test_whole_columns_pruned(self):
    w = np.array([[1.0, 10.0, 0.1], [1.0, 10.0, 0.1]], np.float32)
    mask, _ = masking.compute_mask(w, 0.34, MaskStructure(granularity='unit'))
    self.assertAllEqual(mask, [[1, 1, 0], [1, 1, 0]])


class MByNTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    ('dense_2_4', (16, 6), 2, 4),
    ('conv_2_4', (3, 3, 8, 5), 2, 4),
    ('ragged_1_4', (10, 3), 1, 4),
    ('dense_3_8', (24, 4), 3, 8),
  )
  def test_matches_numpy(self, shape, n, m):
    w = _random(shape, seed=13)
    mask, _ = masking.compute_mask(w, 0.5, MaskStructure(m_by_n=(n, m)))
    self.assertAllEqual(mask, np_m_by_n_mask(w, n, m))

  def test_each_group_has_at_most_n(self):
    w = _random((32, 7), seed=1)
    mask = np.asarray(masking.m_by_n_mask(tf.constant(w), 2, 4))
    groups = mask.T.reshape(7, 8, 4)
    self.assertTrue(np.all(groups.sum(-1) == 2))

  def test_ties_keep_lower_index(self):
    w = np.ones((4, 1), np.float32)
    mask = masking.m_by_n_mask(tf.constant(w), 2, 4)
    self.assertAllEqual(mask, [[1], [1], [0], [0]])


class GlobalTest(parameterized.TestCase, tf.test.TestCase):
  def test_one_threshold_over_all_weights(self):
    ws = [
      _random((30, 20), seed=1) * 0.5,
      _random((20, 10), seed=2) * 2.0,
      _random((10, 5), seed=3),
    ]
    masks, threshold = masking.compute_global_masks(
      ws, 0.8, [MaskStructure()] * 3
    )
    everything = np.concatenate([np.abs(w).reshape(-1) for w in ws])
    keep = np_keep_smallest_pruned(everything, 0.8)
    sizes = np.cumsum([w.size for w in ws])[:-1]
    for mask, part, w in zip(masks, np.split(keep, sizes), ws):
      self.assertAllEqual(mask, part.reshape(w.shape).astype(np.float32))
    self.assertAllClose(threshold, everything[keep].min())
    nonzeros = sum(int(np.count_nonzero(m)) for m in masks)
    self.assertEqual(
      nonzeros, everything.size - np_num_prune(everything.size, 0.8)
    )
    # Layers end with different sparsities: the small-valued one most.
    per_layer = [float(masking.mask_sparsity(m)) for m in masks]
    self.assertGreater(per_layer[0], per_layer[1])

  def test_global_units(self):
    ws = [_random((6, 8), seed=4), _random((3, 3, 2, 5), seed=5)]
    structure = MaskStructure(granularity='unit')
    masks, _ = masking.compute_global_masks(ws, 0.5, [structure] * 2)
    norms = [np.sqrt((w.reshape(-1, w.shape[-1]) ** 2).sum(0)) for w in ws]
    keep = np_keep_smallest_pruned(np.concatenate(norms), 0.5)
    self.assertAllEqual(masks[0], np.broadcast_to(keep[:8], (6, 8)))
    self.assertAllEqual(masks[1], np.broadcast_to(keep[8:], (3, 3, 2, 5)))

  def test_global_blocks(self):
    ws = [_random((4, 6), seed=6), _random((6, 4), seed=7)]
    structure = MaskStructure(block_dims=(2, 2), pooling='MAX')
    masks, _ = masking.compute_global_masks(ws, 0.5, [structure] * 2)
    scores = [np_block_scores(w, 2, 2, 'MAX')[0] for w in ws]
    keep = np_keep_smallest_pruned(
      np.concatenate([s.reshape(-1) for s in scores]), 0.5
    )
    for mask, part, s in zip(masks, np.split(keep, [scores[0].size]), scores):
      expected = np.kron(part.reshape(s.shape), np.ones((2, 2)))
      self.assertAllEqual(mask, expected)

  def test_errors(self):
    with self.assertRaisesRegex(errors.MaskError, 'at least one weight'):
      masking.compute_global_masks([], 0.5, [])
    with self.assertRaisesRegex(errors.MaskError, 'one threshold method'):
      masking.compute_global_masks(
        [np.ones((2, 2), np.float32)] * 2,
        0.5,
        [MaskStructure(), MaskStructure(method='histogram')],
      )


class StructureTest(tf.test.TestCase):
  def test_bad_structures(self):
    with self.assertRaises(errors.MaskError):
      MaskStructure(granularity='unit', block_dims=(2, 2))
    with self.assertRaises(errors.MaskError):
      MaskStructure(pooling='SUM')
    with self.assertRaisesRegex(errors.MaskError, 'fully defined'):
      masking.structure_for(
        tf.TensorShape([None, 3]),
        parse_hparams(''),
        parse_hparams('').weight_settings('w'),
      )
    h = parse_hparams('granularity=unit')
    with self.assertRaisesRegex(errors.MaskError, 'rank >= 2'):
      masking.structure_for((5,), h, h.weight_settings('w'))


if __name__ == '__main__':
  tf.test.main()
