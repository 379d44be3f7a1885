"""Tests of masks/batched_masks (and plans.compute_masks using it)."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.config.hparams import parse_hparams
from graph_prune.masks import batched_masks
from graph_prune.masks.mask_structure import MaskStructure
from graph_prune.model import plans


def _numpy_mask(weight, sparsity, structure=None):
  """contrib's exact rule in NumPy: prune the n - max(1, round(n (1 - s)))
  smallest scores (stable order), then expand the score grid."""
  structure = structure or MaskStructure()
  magnitude = np.abs(weight.astype(np.float32))
  if structure.granularity == 'unit':
    grid = np.sqrt(np.sum(magnitude.reshape(-1, weight.shape[-1]) ** 2, 0))
  elif structure.uses_blocks:
    bh, bw = structure.block_dims
    h, w = weight.shape
    blocks = magnitude.reshape(h // bh, bh, w // bw, bw)
    pool = np.max if structure.pooling == 'MAX' else np.mean
    grid = pool(blocks, axis=(1, 3))
  else:
    grid = magnitude
  flat = grid.reshape(-1)
  n = flat.size
  k = n - max(1, int(np.round(n * (1.0 - sparsity))))
  order = np.argsort(flat, kind='stable')
  keep = np.ones(n, bool)
  keep[order[:k]] = False
  keep = keep.reshape(grid.shape)
  if structure.granularity == 'unit':
    keep = np.broadcast_to(keep, weight.shape)
  elif structure.uses_blocks:
    keep = np.repeat(np.repeat(keep, bh, 0), bw, 1)
  return keep.astype(weight.dtype), flat[order[k]]


def _weights(seed):
  rng = np.random.RandomState(seed)
  return [
    rng.standard_normal((3, 3, 4, 8)).astype(np.float32),
    rng.standard_normal((12, 16)).astype(np.float32),
    rng.standard_normal((6, 10)).astype(np.float32),
    rng.standard_normal((5, 7)).astype(np.float16),
  ]


class ComputeMasksTogetherTest(tf.test.TestCase, parameterized.TestCase):
  def test_elementwise_blocks_and_units_match_numpy(self):
    weights = _weights(0)
    structures = [
      MaskStructure(),
      MaskStructure(block_dims=(4, 2), pooling='MAX'),
      MaskStructure(granularity='unit'),
      MaskStructure(),
    ]
    sparsities = [0.5, 0.75, tf.constant(0.3), 0.9]
    results = batched_masks.compute_masks_together(
      [tf.constant(w) for w in weights], sparsities, structures
    )
    for weight, sparsity, structure, result in zip(
      weights, [0.5, 0.75, 0.3, 0.9], structures, results
    ):
      mask, threshold = _numpy_mask(weight, sparsity, structure)
      self.assertEqual(result.mask.dtype, tf.as_dtype(weight.dtype))
      self.assertAllEqual(result.mask, mask)
      self.assertAllClose(result.threshold, threshold, rtol=1e-6)

  def test_nan_names_the_first_weight_that_holds_it(self):
    weights = _weights(1)
    weights[1][2, 3] = np.nan
    weights[2][0, 0] = np.inf
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, r"weight 'b/kernel' holds NaN or Inf"
    ):
      batched_masks.compute_masks_together(
        [tf.constant(w) for w in weights],
        [0.5] * 4,
        [MaskStructure()] * 4,
        names=['a/kernel', 'b/kernel', 'c/kernel', 'd/kernel'],
      )

  @parameterized.named_parameters(
    ('float64', (4, 4), tf.float64, MaskStructure(), 0.0),
    ('too_big', (257, 256), tf.float32, MaskStructure(), 0.0),
    ('histogram', (4, 4), tf.float32, MaskStructure(method='histogram'), 0.0),
    ('m_by_n', (4, 4), tf.float32, MaskStructure(m_by_n=(2, 4)), 0.0),
    ('threshold_decay', (4, 4), tf.float32, MaskStructure(), 0.5),
  )
  def test_not_batchable(self, shape, dtype, structure, decay):
    self.assertFalse(batched_masks.batchable(shape, dtype, structure, decay))
    self.assertTrue(
      batched_masks.batchable((256, 256), tf.bfloat16, MaskStructure())
    )
    if decay:
      return
    with self.assertRaisesRegex(ValueError, 'masking.compute_mask'):
      batched_masks.compute_masks_together(
        [tf.zeros(shape, dtype)], [0.5], [structure]
      )


class PlansComputeMasksTest(tf.test.TestCase):
  def test_small_and_large_weights_together_match_numpy(self):
    rng = np.random.RandomState(2)
    shapes = [(300, 300), (8, 8), (3, 3, 16, 1), (40, 20)]
    names = [f'layer{i}/kernel' for i in range(len(shapes))]
    weights = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    h = parse_hparams('target_sparsity=0.6')
    weight_plans = plans.plan_weights(names, shapes, h)
    masks, thresholds = plans.compute_masks(
      [tf.constant(w) for w in weights], [0.6] * 4, weight_plans
    )
    for weight, mask, threshold in zip(weights, masks, thresholds):
      expected, expected_threshold = _numpy_mask(weight, 0.6)
      self.assertAllEqual(mask, expected)
      self.assertEqual(float(threshold), float(expected_threshold))

  def test_same_shaped_mid_size_weights_share_one_traced_function(self):
    # Three 300x300 weights (above the together size): in a function they
    # share one traced selection, with masks equal to NumPy's and the NaN
    # message naming the weight that holds the NaN, not the first traced.
    rng = np.random.RandomState(4)
    shapes = [(300, 300), (300, 300), (300, 300)]
    names = ['a/kernel', 'b/kernel', 'c/kernel']
    weights = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    weight_plans = plans.plan_weights(
      names, shapes, parse_hparams('target_sparsity=0.5')
    )
    sparsities = [tf.constant(0.25), tf.constant(0.5), tf.constant(0.8)]

    @tf.function
    def update(*values):
      return plans.compute_masks(values, sparsities, weight_plans)

    concrete = update.get_concrete_function(
      *[tf.TensorSpec(s, tf.float32) for s in shapes]
    )
    calls = [
      op
      for op in concrete.graph.get_operations()
      if op.type in ('PartitionedCall', 'StatefulPartitionedCall')
    ]
    self.assertLen(calls, 3)
    self.assertLen({op.get_attr('f').name for op in calls}, 1)
    masks, thresholds = update(*weights)
    for weight, sparsity, mask, threshold in zip(
      weights, [0.25, 0.5, 0.8], masks, thresholds
    ):
      expected, expected_threshold = _numpy_mask(weight, sparsity)
      self.assertAllEqual(mask, expected)
      self.assertEqual(float(threshold), float(expected_threshold))
    weights[2][7, 7] = np.inf
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, r"weight \\?'c/kernel\\?' holds NaN"
    ):
      update(*weights)

  def test_update_graph_does_not_grow_per_small_weight(self):
    # The graph of an update of many small weights: the ops it adds per
    # weight (a reshape, a split output, a mask expansion and the plan's
    # inputs), not a selection per weight (a few hundred ops each).
    def ops_for(count):
      shapes = [(6, 5)] * count
      names = [f'w{i}/kernel' for i in range(count)]
      weight_plans = plans.plan_weights(
        names, shapes, parse_hparams('target_sparsity=0.5')
      )

      @tf.function
      def update(*weights):
        return plans.compute_masks(weights, [0.5] * count, weight_plans)

      graph = update.get_concrete_function(
        *[tf.TensorSpec(s, tf.float32) for s in shapes]
      ).graph
      return len(graph.as_graph_def().node)

    per_weight = (ops_for(24) - ops_for(4)) / 20
    self.assertLess(per_weight, 12)


if __name__ == '__main__':
  tf.test.main()
