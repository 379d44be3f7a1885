"""Tests of masks/unit_groups: group scores and masks against NumPy."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune.masks import masking
from graph_prune.masks import unit_groups as ug


def _np_scores(weights, group):
  """sqrt of the summed squared norms of every member slice per channel."""
  total = np.zeros(group.channels)
  for m in group.members:
    w = np.asarray(weights[m.index], np.float64)
    moved = np.moveaxis(w, m.axis, -1).reshape(-1, w.shape[m.axis])
    for position, channel in enumerate(m.channels):
      total[channel] += np.sum(moved[:, position] ** 2)
  return np.sqrt(total)


def _group():
  # A conv kernel [3, 3, 2, 6] and a dense kernel [5, 4] whose units are
  # channels 2..5 of the conv (a concat offset), and a depthwise [3, 3, 6, 1]
  # following all six channels.
  return ug.GroupPlan(
    members=(
      ug.MemberPlan(0, -1, tuple(range(6))),
      ug.MemberPlan(1, -1, (2, 3, 4, 5)),
      ug.MemberPlan(2, -2, tuple(range(6))),
    ),
    channels=6,
  )


class ScoresTest(tf.test.TestCase):
  def test_channel_scores_match_numpy(self):
    rng = np.random.default_rng(0)
    weights = [
      rng.normal(size=(3, 3, 2, 6)).astype(np.float32),
      rng.normal(size=(5, 4)).astype(np.float32),
      rng.normal(size=(3, 3, 6, 1)).astype(np.float32),
    ]
    group = _group()
    got = ug.channel_scores([tf.constant(w) for w in weights], group)
    self.assertAllClose(got, _np_scores(weights, group), rtol=1e-6)


class MasksTest(tf.test.TestCase, parameterized.TestCase):
  def _weights(self, seed=1):
    rng = np.random.default_rng(seed)
    return [
      rng.normal(size=(3, 3, 2, 6)).astype(np.float32),
      rng.normal(size=(5, 4)).astype(np.float32),
      rng.normal(size=(3, 3, 6, 1)).astype(np.float32),
    ]

  @parameterized.named_parameters(('half', 0.5, 3), ('most', 0.8, 5))
  def test_layer_scope_prunes_lowest_channels_everywhere(self, sparsity, n):
    weights = self._weights()
    group = _group()
    masks, thresholds = ug.compute_group_masks(
      [tf.constant(w) for w in weights],
      [group],
      [sparsity],
      [masking.MaskStructure(granularity='unit')],
      ['layer'],
    )
    pruned = np.argsort(_np_scores(weights, group))[:n]
    keep = np.ones(6, bool)
    keep[pruned] = False
    self.assertAllEqual(np.asarray(masks[0])[0, 0, 0], keep)
    self.assertAllEqual(np.asarray(masks[1])[0], keep[2:])
    self.assertAllEqual(np.asarray(masks[2])[0, 0, :, 0], keep)
    for mask, weight in zip(masks, weights):
      self.assertEqual(mask.shape, weight.shape)
    # The threshold is the smallest kept score.
    self.assertAllClose(
      thresholds[0], np.sort(_np_scores(weights, group))[n], rtol=1e-6
    )

  def test_fixed_channels_stay(self):
    weights = [np.zeros((4, 4), np.float32)]
    weights[0][:, 0] = 5.0  # channel 0 strongest, channels 1..3 zero
    group = ug.GroupPlan((ug.MemberPlan(0, -1, (0, 1, 2, 3)),), 4, fixed=(1,))
    masks, _ = ug.compute_group_masks(
      [tf.constant(weights[0])],
      [group],
      [0.5],
      [masking.MaskStructure(granularity='unit')],
      ['layer'],
    )
    # Of the three free channels 3 - round(1.5) = 1 goes: 2, the first of
    # the 0.0 scores; fixed channel 1 stays although it scores 0 too.
    self.assertAllEqual(np.asarray(masks[0])[0], [1, 1, 0, 1])

  def test_global_scope_shares_one_threshold(self):
    big = np.full((2, 3), 10.0, np.float32)
    small = np.full((2, 3), 1.0, np.float32)
    groups = [ug.singleton(0, big.shape), ug.singleton(1, small.shape)]
    masks, thresholds = ug.compute_group_masks(
      [tf.constant(big), tf.constant(small)],
      groups,
      [0.5, 0.5],
      [masking.MaskStructure(granularity='unit')] * 2,
      ['global', 'global'],
    )
    # Three of six channels go, all of them the small kernel's.
    self.assertAllEqual(np.asarray(masks[0]), np.ones((2, 3)))
    self.assertAllEqual(np.asarray(masks[1]), np.zeros((2, 3)))
    self.assertAllClose(thresholds[0], thresholds[1])

  def test_singleton_equals_per_kernel_unit_mask(self):
    w = self._weights()[0]
    masks, _ = ug.compute_group_masks(
      [tf.constant(w)],
      [ug.singleton(0, w.shape)],
      [0.5],
      [masking.MaskStructure(granularity='unit')],
      ['layer'],
    )
    norms = np.sqrt((w.reshape(-1, 6).astype(np.float64) ** 2).sum(0))
    keep = np.ones(6)
    keep[np.argsort(norms)[:3]] = 0
    self.assertAllEqual(np.asarray(masks[0]), np.broadcast_to(keep, w.shape))

  def test_non_finite_member_is_an_error(self):
    w = self._weights()
    w[1][0, 0] = np.nan

    @tf.function
    def run():
      return ug.compute_group_masks(
        [tf.constant(x) for x in w],
        [_group()],
        [0.5],
        [masking.MaskStructure(granularity='unit')],
        ['layer'],
        names=['a', 'b', 'c'],
      )[0]

    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, r"weight \\?'b\\?' holds NaN"
    ):
      run()


class ParamMaskTest(tf.test.TestCase):
  def test_positions_follow_their_units(self):
    first = np.array([[1, 0, 1], [1, 0, 1]], np.float32)  # keeps units 0, 2
    second = np.array([[0, 1]], np.float32)  # keeps unit 1
    plan = ug.ParamPlan(((0, 0), (0, 1), (1, 0), (1, 1), None, (0, 2)))
    got = ug.param_masks(
      [tf.constant(first), tf.constant(second)], [plan], [tf.float32]
    )[0]
    self.assertAllEqual(got, [1, 0, 0, 1, 1, 1])


if __name__ == '__main__':
  tf.test.main()
