"""Coupled unit pruning of real architectures, trained side to shrink.

`apply_pruning(..., 'granularity=unit,unit_groups=coupled')` on Keras
MobileNetV2 and ResNet50 (weights=None, 32x32): the coupled groups it finds
are the ones the architectures define (written out from layer names in
shrink_coupled_test), every member of a group gets the same channel mask from
the mask update, and `shrink` then halves every conv with outputs equal to
the pruned model's; EfficientNetB0's groups all shrink. ResNet50's update
and shrink are left to the architecture-wide shrink test (hand-zeroed
channels), to keep the suite fast.
"""

import keras
import numpy as np
from shrink_coupled_test import _mobilenet_v2_groups  # tests/, beside this
from shrink_coupled_test import _resnet50_groups
import tensorflow as tf

import graph_prune

_SPEC = (
  'target_sparsity=0.5,granularity=unit,unit_groups=coupled,'
  'begin_pruning_step=0,end_pruning_step=1,sparsity_function_end_step=1,'
  'do_not_prune=[predictions]'
)
L = keras.layers


def _build(make):
  keras.utils.set_random_seed(0)
  model = make(
    weights=None, input_shape=(32, 32, 3), classifier_activation=None
  )
  pruned = graph_prune.apply_pruning(
    model, _SPEC, input_signature=[tf.TensorSpec([None, 32, 32, 3])]
  )
  return model, pruned


def _layer(weight_name):
  return weight_name.split(':')[0].split('/')[-2]


def _conv_groups(pruned):
  """Per coupled group, the names of its producer convs (two or more)."""
  names = pruned.weight_names
  groups = []
  for group in pruned.unit_groups:
    convs = sorted(
      _layer(names[m.index]) for m in group.members if m.axis == -1
    )
    if len(convs) > 1:
      groups.append(convs)
  return sorted(groups)


class CoupledArchitecturesTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model, cls.pruned = _build(keras.applications.MobileNetV2)
    cls.pruned.mask_update(1)

  def test_resnet50_groups_are_its_stages(self):
    model, pruned = _build(keras.applications.ResNet50)
    self.assertEqual(_conv_groups(pruned), _resnet50_groups(model))

  def test_mobilenet_v2_groups_are_its_residual_stages(self):
    self.assertEqual(
      _conv_groups(self.pruned), _mobilenet_v2_groups(self.model)
    )

  def test_members_share_the_channel_mask(self):
    names = self.pruned.weight_names
    masks = self.pruned.masks
    for group in self.pruned.unit_groups:
      keep = None
      for member in group.members:
        mask = np.moveaxis(np.asarray(masks[member.index]), member.axis, -1)
        vector = mask.reshape(-1, mask.shape[-1]).max(axis=0)
        # Per group channel: kept or not, the same in every member.
        by_channel = np.zeros(group.channels)
        by_channel[list(member.channels)] = vector
        if keep is None:
          keep = by_channel
        self.assertAllEqual(by_channel, keep, msg=names[member.index])
      self.assertEqual(int(keep.sum()), group.channels - group.channels // 2)

  def test_shrink_halves_every_conv_with_equal_outputs(self):
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    shrunk = graph_prune.shrink(self.pruned)
    expected = self.pruned(x).numpy()
    scale = float(np.abs(expected).max())
    self.assertAllClose(shrunk(x), expected, atol=1e-4 * scale, rtol=1e-4)
    report = shrunk.shrink_report
    widths = {
      report.weight_names[layer.kernel].split('/')[-2]: layer.units_after
      for layer in report.main.layers
    }
    convs = [x for x in self.model.layers if type(x) is L.Conv2D]
    self.assertEqual(
      {c.name: widths[c.name] for c in convs},
      {c.name: c.filters // 2 for c in convs},
    )


class EfficientNetB0Test(tf.test.TestCase):
  """Swish (a custom gradient), squeeze-and-excitation gates behind a
  Reshape [N, C] -> [N, 1, 1, C], depthwise convs and residual adds: every
  coupled group training forms is one shrink halves (issue 24)."""

  def test_shrink_halves_every_group_training_formed(self):
    model, pruned = _build(keras.applications.EfficientNetB0)
    pruned.mask_update(1)
    names = pruned.weight_names
    self.assertGreater(len(pruned.unit_groups), 20)
    shrunk = graph_prune.shrink(pruned)
    report = shrunk.shrink_report
    widths = {
      report.weight_names[layer.kernel]: layer.units_after
      for layer in report.main.layers
    }
    for group in pruned.unit_groups:
      for member in group.members:
        if member.axis == -1:
          name = names[member.index]
          self.assertEqual(
            widths.get(name), group.channels - group.channels // 2, name
          )
    self.assertTrue(all(not c.kept for c in report.main.coupled))
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    expected = pruned(x * 255).numpy()
    scale = float(np.abs(expected).max())
    self.assertGreater(scale, 0)
    self.assertAllClose(shrunk(x * 255), expected, atol=1e-4 * scale, rtol=1e-4)


if __name__ == '__main__':
  tf.test.main()
