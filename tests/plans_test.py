"""Tests of model/plans: per-weight plans and the mask computation."""

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.config.hparams import parse_hparams
from graph_prune.masks import schedule
from graph_prune.model import plans as update


def _random(shape, seed):
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


class ContribVectorsTest(tf.test.TestCase):
  def test_conditional_update_sequence(self):
    # contrib: frequency 2, begin 1, end 6, sparsity at step t is
    # linspace(0, 0.9, 10)[t], 100 weights, steps 0..9.
    h = parse_hparams(
      'pruning_frequency=2,begin_pruning_step=1,end_pruning_step=6'
    )
    weight = tf.Variable(
      np.linspace(1.0, 100.0, 100, dtype=np.float32).reshape(10, 10)
    )
    plans = update.plan_weights(['layer1/weights'], [(10, 10)], h)
    mask = tf.Variable(tf.ones([10, 10]))
    last = tf.Variable(0, dtype=tf.int64)
    sparsity = np.linspace(0.0, 0.9, 10)

    @tf.function
    def step_fn(step, s):
      def do_update():
        masks, _ = update.compute_masks([weight.read_value()], [s], plans)
        mask.assign(masks[0])
        last.assign(step)
        return tf.constant(True)

      return tf.cond(
        schedule.should_update(step, last, h),
        do_update,
        lambda: tf.constant(False),
      )

    nonzeros = []
    for t in range(10):
      step_fn(tf.constant(t, tf.int64), tf.constant(sparsity[t], tf.float32))
      nonzeros.append(int(np.count_nonzero(mask.numpy())))
    self.assertEqual(nonzeros, [100, 100, 80, 80, 60, 60, 40, 40, 40, 40])

  def test_weight_sparsity_map_reaches_each_target(self):
    h = parse_hparams(
      'target_sparsity=0.5,'
      'weight_sparsity_map=[layer1:0.6,layer2/weights:0.75,.*kernel:0.6]'
    )
    names = ['layer1/weights', 'layer2/weights', 'layer3/kernel']
    shapes = [(100,)] * 3
    plans = update.plan_weights(names, shapes, h)
    # contrib's testWeightSpecificSparsity: linspace(1, 100) each, 110 steps
    # of the default schedule (which ends at step 100).
    weights = [np.linspace(1.0, 100.0, 100, dtype=np.float32)] * 3
    masks, _ = update.compute_masks(
      weights, update.scheduled_sparsities(110, plans), plans
    )
    sparsities = [1.0 - np.count_nonzero(m) / m.numpy().size for m in masks]
    self.assertAllClose(sparsities, [0.6, 0.75, 0.6])

  def test_block_dims_map(self):
    h = parse_hparams(
      'target_sparsity=0.5,block_pooling_function=AVG,'
      'block_dims_map=[layer1/weights:1x1,layer2/weights:1x2]'
    )
    plans = update.plan_weights(
      ['layer1/weights', 'layer2/weights'], [(2, 2), (2, 4)], h
    )
    # contrib's testPerLayerBlockSparsity vectors.
    weights = [
      np.array([[-0.1, 0.1], [-0.2, 0.2]], np.float32),
      np.array([[0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.4, 0.4]], np.float32),
    ]
    masks, _ = update.compute_masks(weights, [0.5, 0.5], plans)
    self.assertAllEqual(masks[0], [[0, 0], [1, 1]])
    self.assertAllEqual(masks[1], [[0, 0, 1, 1], [0, 0, 1, 1]])


class GlobalScopeTest(tf.test.TestCase):
  def test_map_entries_stay_per_layer_the_rest_share(self):
    h = parse_hparams(
      'pruning_scope=global,target_sparsity=0.8,'
      'weight_sparsity_map=[special:0.3]'
    )
    names = ['a/kernel', 'b/kernel', 'special/kernel']
    shapes = [(20, 10), (10, 30), (6, 6)]
    plans = update.plan_weights(names, shapes, h)
    self.assertEqual([p.scope for p in plans], ['global', 'global', 'layer'])
    weights = [
      _random(shapes[0], 0) * 0.1,
      _random(shapes[1], 1),
      _random(shapes[2], 2),
    ]
    masks, thresholds = update.compute_masks(
      weights, update.scheduled_sparsities(10**6, plans), plans
    )
    pooled = np.concatenate(
      [np.abs(weights[0]).ravel(), np.abs(weights[1]).ravel()]
    )
    total_zeros = (
      np.size(masks[0])
      - np.count_nonzero(masks[0])
      + np.size(masks[1])
      - np.count_nonzero(masks[1])
    )
    self.assertEqual(total_zeros, round(0.8 * pooled.size))
    self.assertAllClose(thresholds[0], thresholds[1])
    self.assertAllClose(1 - np.count_nonzero(masks[2]) / 36, 0.3, atol=0.01)
    # The small-valued layer is pruned far harder than the other.
    self.assertLess(
      np.count_nonzero(masks[0]) / 200, np.count_nonzero(masks[1]) / 300
    )

  def test_plan_notes_and_errors(self):
    h = parse_hparams('block_height=2,block_width=2')
    plans = update.plan_weights(
      ['conv/kernel', 'dense/kernel'], [(3, 3, 2, 4), (8, 8)], h
    )
    self.assertIn('elementwise', plans[0].note)
    self.assertEqual(plans[1].structure.block_dims, (2, 2))
    h = parse_hparams('weight_sparsity_map=[conv:0.5,kernel:0.6]')
    with self.assertRaises(errors.WeightMatchError):
      update.plan_weights(['conv/kernel'], [(3, 3)], h)


if __name__ == '__main__':
  tf.test.main()
