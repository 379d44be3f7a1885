"""Tests of shrinking coupled channels: residual adds, concatenations, gates.

Channels are zeroed by hand in the Keras weights (a producer's kernel
slice, its bias, and the BatchNorm scale and shift on its way to the next
layer, through depthwise convs), `apply_pruning` adds masks of ones, and the
shrunk model is compared with the pruned one (the unshrunk computation) on
random inputs; where it is cheap the shrunk kernels are compared with NumPy
deletions of the removed rows, and the coupled groups in the report with the
groups the architecture defines (written out by hand).
"""

import collections
import json
import re

from absl.testing import parameterized
import keras
import numpy as np
from shrink_test import _randomize  # tests/shrink_test.py
import tensorflow as tf

import graph_prune
from graph_prune.export.shrink import shrink
from graph_prune.export.stripped_model import PruningVariables
from graph_prune.export.stripped_model import strip_function
from graph_prune.passes import graph_ir

L = keras.layers
# Layers a zero channel passes through on its way to the next layer, whose
# per-channel parameters must be zero too.
_PASS = (
  L.BatchNormalization,
  L.ReLU,
  L.Activation,
  L.ZeroPadding2D,
  L.DepthwiseConv2D,
)


def _consumers(model):
  found = collections.defaultdict(list)
  for layer in model.layers:
    if isinstance(layer, L.InputLayer):
      continue
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    for tensor in inputs:
      found[id(tensor)].append(layer)
  return found


def _zero_channels(model, layer, channels, consumers=None):
  """Zeroes `layer`'s output `channels` and what they pass through."""
  consumers = consumers or _consumers(model)
  channels = np.asarray(channels, dtype=np.int64)
  for name in ('kernel', 'bias'):
    weight = getattr(layer, name, None)
    if weight is not None:
      value = weight.numpy()
      value[..., channels] = 0
      weight.assign(value)
  nexts = consumers[id(layer.output)]
  while len(nexts) == 1 and isinstance(nexts[0], _PASS):
    layer = nexts[0]
    if isinstance(layer, L.BatchNormalization):
      for weight in (layer.gamma, layer.beta):
        value = weight.numpy()
        value[channels] = 0
        weight.assign(value)
    if isinstance(layer, L.DepthwiseConv2D):
      multiplier = layer.depth_multiplier
      channels = (
        channels[:, None] * multiplier + np.arange(multiplier)
      ).ravel()
    nexts = consumers[id(layer.output)]


def _prune(model):
  return graph_prune.apply_pruning(
    model, 'target_sparsity=0.5,granularity=unit'
  )


def _x(model, batch=2, seed=1):
  shape = [batch, *model.input.shape[1:]]
  return tf.constant(np.random.RandomState(seed).rand(*shape), tf.float32)


def _layers_by_weight(result, report):
  return {
    report.weight_names.get(layer.kernel, layer.kernel).split('/')[-2]: layer
    for layer in result.layers
  }


def _residual(shortcut):
  x = keras.Input((6, 6, 3))
  h = L.Conv2D(4, 1, name='stem')(x)
  h = L.ReLU()(L.BatchNormalization(name='stem_bn')(h))
  y = L.Conv2D(4, 3, padding='same', name='conv1')(h)
  y = L.ReLU()(L.BatchNormalization(name='bn1')(y))
  y = L.Conv2D(4, 3, padding='same', name='conv2')(y)
  y = L.BatchNormalization(name='bn2')(y)
  if shortcut == 'projection':
    h = L.Conv2D(4, 1, name='proj')(h)
    h = L.BatchNormalization(name='proj_bn')(h)
  y = L.ReLU()(L.Add()([y, h]))
  y = L.Conv2D(2, 1, name='head')(y)
  return keras.Model(x, L.GlobalAveragePooling2D()(y))


class ResidualTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('identity', 'identity', 'stem'), ('projection', 'projection', 'proj')
  )
  def test_same_channels_removed_on_both_sides(self, shortcut, other):
    keras.utils.set_random_seed(0)
    model = _residual(shortcut)
    _randomize(model)
    _zero_channels(model, model.get_layer('conv2'), [1, 3])
    _zero_channels(model, model.get_layer(other), [1, 3])
    head = model.get_layer('head').kernel.numpy()
    pruned = _prune(model)
    module = shrink(pruned)
    x = _x(model)
    self.assertAllClose(module(x), pruned(x), rtol=1e-5, atol=1e-5)
    report = module.shrink_report
    layers = _layers_by_weight(report.main, report)
    self.assertEqual(layers['conv2'].units_after, 2)
    self.assertEqual(layers[other].units_after, 2)
    (group,) = report.main.coupled
    self.assertEqual(
      sorted(report.weight_names[k].split('/')[-2] for k in group.members),
      sorted(['conv2', other]),
    )
    self.assertEqual((group.channels_before, group.channels_after), (4, 2))
    self.assertIn('coupled channels 4->2 (2 zero)', report.to_text())
    (listed,) = json.loads(json.dumps(report.to_json()))['functions'][
      '__call__'
    ]['coupled']
    self.assertEqual(listed['channels_after'], 2)
    self.assertEqual(len(listed['members']), 2)
    # The head's kernel lost exactly the rows of channels 1 and 3.
    graph_def = _shrunk_graph(pruned)
    self.assertAllClose(
      _const(graph_def, layers['head'].kernel), np.delete(head, [1, 3], 2)
    )

  def test_channel_kept_on_one_side_is_kept(self):
    keras.utils.set_random_seed(0)
    model = _residual('projection')
    _randomize(model)
    _zero_channels(model, model.get_layer('conv2'), [1, 3])
    _zero_channels(model, model.get_layer('proj'), [1])
    pruned = _prune(model)
    module = shrink(pruned)
    x = _x(model)
    self.assertAllClose(module(x), pruned(x), rtol=1e-5, atol=1e-5)
    report = module.shrink_report
    layers = _layers_by_weight(report.main, report)
    self.assertEqual(layers['conv2'].units_after, 3)
    self.assertEqual(layers['proj'].units_after, 3)
    self.assertIn('coupled with non-zero units', layers['conv2'].kept[0])
    (group,) = report.main.coupled
    self.assertEqual(
      (group.channels_before, group.zero_channels, group.channels_after),
      (4, 1, 3),
    )
    self.assertRegex(
      report.to_text(),
      'kept 1 zero units of conv2/kernel: the units are coupled with '
      "non-zero units of '[^']*proj/kernel'",
    )

  def test_network_input_shortcut_keeps_channels(self):
    x = keras.Input((6, 6, 4))
    y = L.BatchNormalization(name='bn')(L.Conv2D(4, 3, padding='same')(x))
    model = keras.Model(x, L.Dense(2)(L.Flatten()(L.Add()([x, y]))))
    _randomize(model)
    _zero_channels(model, model.layers[1], [0, 2])
    pruned = _prune(model)
    module = shrink(pruned)
    first = module.shrink_report.main.layers[0]
    self.assertEqual(first.units_after, 4)
    self.assertIn('network input', first.kept[0])
    xs = _x(model)
    self.assertAllClose(module(xs), pruned(xs), rtol=1e-5, atol=1e-5)


def _shrunk_graph(pruned):
  """The shrunk `StrippedFunction` of `pruned`'s call."""
  cf = pruned.__call__.get_concrete_function()
  pruning = PruningVariables.of([pruned])
  return strip_function(cf, pruning, 'test', shrink=True)


def _const(stripped, name):
  """The value node `name` of a shrunk graph reads (a weight's variable)."""
  (node,) = [n for n in stripped.graph_def.node if n.name == name]
  if node.op == 'Const':
    return tf.make_ndarray(node.attr['value'].tensor)
  return stripped.variables[graph_ir.node_name(node.input[0])].numpy()


class ConcatTest(tf.test.TestCase):
  def test_offsets_in_consumer_kernel(self):
    x = keras.Input((5, 5, 2))
    a = L.Conv2D(4, 1, activation='relu', name='a')(x)
    b = L.Conv2D(3, 1, activation='relu', name='b')(x)
    y = L.Conv2D(2, 1, name='c')(L.Concatenate()([a, b]))
    model = keras.Model(x, L.GlobalAveragePooling2D()(y))
    _randomize(model)
    _zero_channels(model, model.get_layer('a'), [0, 2])
    _zero_channels(model, model.get_layer('b'), [1])
    kernel = model.get_layer('c').kernel.numpy()
    pruned = _prune(model)
    module = shrink(pruned)
    xs = _x(model)
    self.assertAllClose(module(xs), pruned(xs), rtol=1e-5, atol=1e-5)
    report = module.shrink_report
    layers = _layers_by_weight(report.main, report)
    self.assertEqual(
      [layers[k].units_after for k in 'abc'],
      [2, 2, 2],
    )
    self.assertEqual(report.main.coupled, ())  # a concat alone ties nothing
    # Channels 0 and 2 of a, channel 1 of b at offset 4.
    self.assertAllClose(
      _const(_shrunk_graph(pruned), layers['c'].kernel),
      np.delete(kernel, [0, 2, 4 + 1], axis=2),
    )

  def test_concat_added_to_a_conv_ties_parts(self):
    x = keras.Input((5, 5, 2))
    a = L.Conv2D(2, 1, name='a')(x)
    b = L.Conv2D(2, 1, name='b')(x)
    d = L.Conv2D(4, 1, name='d')(x)
    y = L.ReLU()(L.Add()([L.Concatenate()([a, b]), d]))
    model = keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(y)))
    _randomize(model)
    _zero_channels(model, model.get_layer('a'), [0])
    _zero_channels(model, model.get_layer('b'), [0, 1])
    _zero_channels(model, model.get_layer('d'), [0, 3])
    pruned = _prune(model)
    module = shrink(pruned)
    xs = _x(model)
    self.assertAllClose(module(xs), pruned(xs), rtol=1e-5, atol=1e-5)
    report = module.shrink_report
    layers = _layers_by_weight(report.main, report)
    # Removed: output channel 0 (a's 0 and d's 0) and 3 (b's 1 and d's 3);
    # b's 0 is tied to d's 1, which is not zero.
    self.assertEqual([layers[k].units_after for k in 'abd'], [1, 1, 2])
    (group,) = report.main.coupled
    self.assertEqual((group.channels_before, group.channels_after), (4, 2))


class SqueezeExciteTest(tf.test.TestCase):
  def test_gate_and_features_removed_together(self):
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(4, 3, padding='same', name='features')(x)
    h = L.ReLU()(L.BatchNormalization()(h))
    g = L.GlobalAveragePooling2D(keepdims=True)(h)
    g = L.Conv2D(2, 1, activation='relu', name='squeeze')(g)
    g = L.Conv2D(4, 1, activation='sigmoid', name='excite')(g)
    y = L.Conv2D(2, 1, name='head')(L.Multiply()([h, g]))
    model = keras.Model(x, L.GlobalAveragePooling2D()(y))
    _randomize(model)
    _zero_channels(model, model.get_layer('features'), [1, 2])
    _zero_channels(model, model.get_layer('excite'), [1, 2])
    squeeze = model.get_layer('squeeze').kernel.numpy()
    pruned = _prune(model)
    module = shrink(pruned)
    xs = _x(model)
    self.assertAllClose(module(xs), pruned(xs), rtol=1e-5, atol=1e-5)
    report = module.shrink_report
    layers = _layers_by_weight(report.main, report)
    self.assertEqual(layers['features'].units_after, 2)
    self.assertEqual(layers['excite'].units_after, 2)
    self.assertEqual(layers['squeeze'].units_after, 2)
    self.assertAllClose(
      _const(_shrunk_graph(pruned), layers['squeeze'].kernel),
      np.delete(squeeze, [1, 2], axis=2),
    )


def _resnet50_groups(model):
  """Per stage: the first block's shortcut conv and every block's last."""
  groups = collections.defaultdict(set)
  for layer in model.layers:
    match = re.fullmatch(r'conv(\d)_block\d+_[03]_conv', layer.name)
    if match:
      groups[match.group(1)].add(layer.name)
  return sorted(sorted(g) for g in groups.values())


def _mobilenet_v2_groups(model):
  """The project convs of blocks joined by residual adds (a stage)."""
  groups = []
  for layer in model.layers:
    match = re.fullmatch(r'block_(\d+)_add', layer.name)
    if match:
      block = int(match.group(1))
      name = f'block_{block}_project'
      if groups and f'block_{block - 1}_project' in groups[-1]:
        groups[-1].add(name)
      else:
        groups.append({f'block_{block - 1}_project', name})
  return sorted(sorted(g) for g in groups)


_MODELS = (('resnet50', 'resnet50'),)


class ArchitecturesTest(tf.test.TestCase, parameterized.TestCase):
  """Keras ResNet50 with half of every group's channels zeroed (the first
  half of every conv), shrunk; one extra zero channel in one member of a
  group must stay."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cases = {}
    # MobileNetV2 is shrunk after a coupled mask update in
    # coupled_architectures_test (its groups against _mobilenet_v2_groups).
    for name, make, groups in (
      ('resnet50', keras.applications.ResNet50, _resnet50_groups),
    ):
      keras.utils.set_random_seed(0)
      model = make(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
      )
      consumers = _consumers(model)
      convs = [x for x in model.layers if type(x) is L.Conv2D]
      for layer in convs:
        half = np.arange(layer.filters // 2)
        _zero_channels(model, layer, half, consumers)
      if name == 'resnet50':
        extra = model.get_layer('conv2_block1_0_conv')
        _zero_channels(model, extra, [extra.filters - 1], consumers)
      pruned = _prune(model)
      x = _x(model, batch=2)
      module = shrink(pruned)
      cls.cases[name] = (model, convs, groups(model), pruned(x), module(x))
      cls.cases[name] += (module.shrink_report,)

  @parameterized.named_parameters(*_MODELS)
  def test_shrunk_outputs_equal(self, name):
    _, _, _, expected, actual = self.cases[name][:5]
    scale = float(np.abs(expected).max())
    self.assertGreater(scale, 0)
    self.assertAllClose(actual, expected, rtol=1e-4, atol=1e-4 * scale)

  @parameterized.named_parameters(*_MODELS)
  def test_groups_and_widths(self, name):
    model, convs, groups, _, _, report = self.cases[name]
    result = report.main
    found = sorted(
      sorted(report.weight_names[k].split('/')[-2] for k in group.members)
      for group in result.coupled
    )
    self.assertEqual(found, groups)
    for group in result.coupled:
      self.assertEqual(group.channels_after, group.channels_before // 2)
    layers = _layers_by_weight(result, report)
    self.assertEqual(
      {x.name: layers[x.name].units_after for x in convs},
      {x.name: x.filters // 2 for x in convs},
    )
    self.assertLess(result.macs_after, 0.35 * result.macs_before)

  def test_zero_channel_of_one_member_stays(self):
    report = self.cases['resnet50'][-1]
    layers = _layers_by_weight(report.main, report)
    extra = layers['conv2_block1_0_conv']
    self.assertEqual(extra.zero_units - 128, 1)
    self.assertIn('coupled with non-zero units', extra.kept[0])
    (stage2,) = [g for g in report.main.coupled if g.channels_before == 256]
    self.assertEqual(stage2.zero_channels, 128)


class SplitTest(tf.test.TestCase):
  def test_halves_multiplied_tie_channels(self):
    x = keras.Input((5, 5, 2))
    h = L.Conv2D(4, 1, activation='relu', name='a')(x)
    halves = L.Lambda(lambda t: keras.ops.split(t, 2, axis=-1))(h)
    y = L.Conv2D(2, 1, name='c')(L.Multiply()(halves))
    model = keras.Model(x, L.GlobalAveragePooling2D()(y))
    _randomize(model)
    # Channel 0 is tied to 2 (both zero: they go), 1 to 3 (3 is not zero).
    _zero_channels(model, model.get_layer('a'), [0, 1, 2])
    kernel = model.get_layer('c').kernel.numpy()
    pruned = _prune(model)
    module = shrink(pruned)
    xs = _x(model)
    self.assertAllClose(module(xs), pruned(xs), rtol=1e-5, atol=1e-5)
    report = module.shrink_report
    layers = _layers_by_weight(report.main, report)
    self.assertEqual(layers['a'].units_after, 2)
    self.assertIn('coupled with non-zero units', layers['a'].kept[0])
    self.assertAllClose(
      _const(_shrunk_graph(pruned), layers['c'].kernel),
      np.delete(kernel, [0], axis=2),
    )

  def test_add_at_the_output_keeps_channels(self):
    x = keras.Input((4,))
    a = L.Dense(3, name='a')(x)
    b = L.Dense(3, name='b')(x)
    model = keras.Model(x, L.Add()([a, b]))
    _randomize(model)
    _zero_channels(model, model.get_layer('a'), [1])
    _zero_channels(model, model.get_layer('b'), [1])
    pruned = _prune(model)
    module = shrink(pruned)
    (group,) = module.shrink_report.main.coupled
    self.assertEqual((group.channels_before, group.channels_after), (3, 3))
    self.assertIn('model output', group.kept[0])
    xs = _x(model)
    self.assertAllClose(module(xs), pruned(xs), rtol=1e-5, atol=1e-5)
