"""Zeroing channel groups of a Keras model by hand, for the shrink benchmark.

What `unit_groups=coupled` with `unit_params=all` will do in training, done
once on the weights: a group's channel is zeroed in every member's kernel
and bias and in the BatchNorm scale and shift on its way to the next layer
(through activations, padding and depthwise convs). Groups come from the
shrink report of the unzeroed model (`ShrinkResult.coupled`); every other
Conv2D is a group of its own.
"""

import collections

import keras
import numpy as np

L = keras.layers
_PASS = (
  L.BatchNormalization,
  L.ReLU,
  L.Activation,
  L.ZeroPadding2D,
  L.DepthwiseConv2D,
)


def consumers(model):
  """id(KerasTensor) -> the layers that read it."""
  found = collections.defaultdict(list)
  for layer in model.layers:
    if isinstance(layer, L.InputLayer):
      continue
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    for tensor in inputs:
      found[id(tensor)].append(layer)
  return found


def zero_channels(layer, channels, readers):
  """Zeroes `layer`'s output `channels` and what they pass through."""
  channels = np.asarray(channels, dtype=np.int64)
  for name in ('kernel', 'bias'):
    weight = getattr(layer, name, None)
    if weight is not None:
      value = weight.numpy()
      value[..., channels] = 0
      weight.assign(value)
  nexts = readers[id(layer.output)]
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
    nexts = readers[id(layer.output)]


def zero_groups(model, shrink_report, fraction=0.5):
  """Zeroes `fraction` of every group's channels, lowest group L2 norm.

  A channel's group norm is the square root of the summed squared L2 norms
  of every member kernel's output slice (Torch-Pruning's group importance).
  Members of a coupled group are tied channel by channel (residual adds).

  Returns:
    The number of groups zeroed.
  """
  names = shrink_report.weight_names
  groups = [
    [names.get(k, k).split('/')[-2] for k in group.members]
    for group in shrink_report.main.coupled
  ]
  grouped = {name for group in groups for name in group}
  groups += [
    [layer.name]
    for layer in model.layers
    if type(layer) is L.Conv2D and layer.name not in grouped
  ]
  readers = consumers(model)
  for group in groups:
    layers = [model.get_layer(name) for name in group]
    squares = sum(
      np.square(x.kernel.numpy().reshape(-1, x.filters)).sum(axis=0)
      for x in layers
    )
    dead = np.argsort(np.sqrt(squares), kind='stable')
    dead = dead[: int(len(dead) * fraction)]
    for layer in layers:
      zero_channels(layer, dead, readers)
  return len(groups)
