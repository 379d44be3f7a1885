"""Values for the weights a shrunk graph folded away, for a rebuilt Keras model.

    channels = keras_channels.Channels(shrunk, tf_variable)
    values = keras_channels.complete(model, channels, masked, tf_variable,
                                     shrunk.values)

Shrink reads a BatchNormalization's parameters (and the bias of the
convolution before it) as constants and computes them into one scale and
one offset (`passes/shrink_units.py`), so the shrunk graph has no sliced
gamma, beta, moving mean or variance, nor that bias. A `.keras` file needs
each of them. They are the original values at the units that stayed,
which shrink reports per kernel (`LayerUnits.remaining`), carried down the
Keras graph through layers that keep channels (activations, normalizations,
dropout, pooling, merges, concatenations) to the normalizations and
depthwise convolutions that read them. The same `Channels` give a
squeeze-and-excitation `Reshape((1, 1, channels))` its new channel count.
A weight left without a value keeps its shape, and the rebuilt
model's shape check then says which one.
"""

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

# Layers whose channels are their input's (no config sets them, no kernel of
# theirs chooses them): the walk to a producer passes through them, and a
# rebuilt one sizes itself from its input.
SIZED_BY_INPUT = (
  'Activation',
  'ReLU',
  'LeakyReLU',
  'ELU',
  'PReLU',
  'Softmax',
  'Dropout',
  'SpatialDropout1D',
  'SpatialDropout2D',
  'SpatialDropout3D',
  'GaussianNoise',
  'GaussianDropout',
  'BatchNormalization',
  'LayerNormalization',
  'GroupNormalization',
  'UnitNormalization',
  'DepthwiseConv1D',
  'DepthwiseConv2D',
  'MaxPooling1D',
  'MaxPooling2D',
  'MaxPooling3D',
  'AveragePooling1D',
  'AveragePooling2D',
  'AveragePooling3D',
  'GlobalAveragePooling1D',
  'GlobalAveragePooling2D',
  'GlobalAveragePooling3D',
  'GlobalMaxPooling1D',
  'GlobalMaxPooling2D',
  'GlobalMaxPooling3D',
  'ZeroPadding1D',
  'ZeroPadding2D',
  'ZeroPadding3D',
  'Cropping1D',
  'Cropping2D',
  'Cropping3D',
)


# Layers that join tensors of the same channels (coupled: shrink removes the
# same channels from each input).
_MERGES = ('Add', 'Subtract', 'Multiply', 'Average', 'Maximum', 'Minimum')
_PRODUCERS = {'Dense', 'Conv1D', 'Conv2D', 'Conv3D'}


class Channels:
  """Which output channels of each Keras layer stay, read off the shrink.

  A kernel's own (`LayerUnits.remaining`); a channel-keeping layer's are its
  input's; a merge's are its inputs' (tied); a `Concatenate`'s along the
  last axis are its inputs' one after the other. None: all stay (or not
  known, which the shape check then reports).
  """

  def __init__(self, shrunk, tf_variable: Callable[[Any], Any]):
    """Args: shrunk, a `keras_shrink.ShrunkWeights`; tf_variable, a Keras
    weight -> its `tf.Variable`."""
    self._shrunk = shrunk
    self._tf_variable = tf_variable
    self._kept: Dict[int, Optional[np.ndarray]] = {}

  def has(self, w) -> bool:
    return id(self._tf_variable(w)) in self._shrunk.values

  def of(self, layer) -> Optional[np.ndarray]:
    """The output channels of `layer` that stay, or None if all do."""
    if id(layer) in self._kept:
      return self._kept[id(layer)]
    self._kept[id(layer)] = None  # (no cycles in a Keras graph; a guard)
    names = set(class_names(layer))
    kernel = getattr(layer, 'kernel', None)
    result = None
    if names & _PRODUCERS and kernel is not None and self.has(kernel):
      result = self._shrunk.remaining.get(id(self._tf_variable(kernel)))
      if result is not None and result.size == kernel.shape[-1]:
        result = None  # all stay
    elif names & set(SIZED_BY_INPUT):
      result = self.of_input(layer)
    elif names & set(_MERGES):
      found = [self._of_tensor(t) for t in _inputs(layer)]
      result = next((u for u in found if u is not None), None)
    elif 'Concatenate' in names and _last_axis(layer):
      result = self._concatenated(layer)
    self._kept[id(layer)] = result
    return result

  def of_input(self, layer) -> Optional[np.ndarray]:
    """The channels of `layer`'s (first) input that stay."""
    inputs = _inputs(layer)
    return self._of_tensor(inputs[0]) if inputs else None

  def _of_tensor(self, t) -> Optional[np.ndarray]:
    producer = _producer_of(t)
    return None if producer is None else self.of(producer)

  def _concatenated(self, layer) -> Optional[np.ndarray]:
    parts, offset, changed = [], 0, False
    for t in _inputs(layer):
      size = t.shape[-1]
      if size is None:
        return None
      units = self._of_tensor(t)
      changed = changed or units is not None
      parts.append(offset + (np.arange(size) if units is None else units))
      offset += size
    return np.concatenate(parts) if changed else None


def complete(
  model,
  channels: Channels,
  masked: Callable[[Any], np.ndarray],
  tf_variable: Callable[[Any], Any],
  values: Dict[int, Any],
) -> Dict[int, Any]:
  """`values` with the folded-away weights of `model` filled in.

  Args:
    model: a Keras model.
    channels: its `Channels`.
    masked: a Keras weight -> its masked value (NumPy).
    tf_variable: a Keras weight -> its `tf.Variable`.
    values: id(tf.Variable) -> shrunk value (`ShrunkWeights.values`).

  Returns:
    A new dict: `values` plus each missing per-channel weight sliced.
  """
  values = dict(values)
  for layer in _layers(model):
    missing = [w for w in layer.weights if id(tf_variable(w)) not in values]
    if not missing:
      continue
    names = set(class_names(layer))
    if names & _PRODUCERS:
      units, channel_axis = channels.of(layer), 0  # the bias
    else:
      units, channel_axis = channels.of_input(layer), None
    if units is None:
      continue
    for w in missing:
      value = masked(w)
      axis = channel_axis
      if axis is None:
        # Normalization parameters are per channel; a depthwise kernel's
        # channels are its second-to-last axis.
        axis = 0 if value.ndim == 1 else value.ndim - 2
      if value.ndim > axis and value.shape[axis] >= units.max(initial=-1) + 1:
        values[id(tf_variable(w))] = np.take(value, units, axis=axis)
  return values


def _layers(model):
  """Every layer of `model`, nested models' layers included."""
  for layer in getattr(model, 'layers', ()):
    if hasattr(layer, 'layers') and getattr(layer, 'layers', None):
      yield from _layers(layer)
    else:
      yield layer


def class_names(layer) -> Tuple[str, ...]:
  """The names of `layer`'s class and its bases (rules match subclasses)."""
  return tuple(c.__name__ for c in type(layer).__mro__)


def _last_axis(layer) -> bool:
  """Whether a `Concatenate` joins along its output's last axis."""
  axis = layer.get_config().get('axis', -1)
  try:
    rank = len(layer.output.shape)
  except (AttributeError, ValueError):  # a shared layer
    return axis == -1
  return axis % rank == rank - 1


def _inputs(layer):
  """The symbolic tensors `layer` reads (its one call), or []."""
  try:
    inputs = layer.input
  except (AttributeError, ValueError):  # a shared layer or no input
    return []
  if isinstance(inputs, dict):
    return list(inputs.values())
  return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _producer_of(t):
  """The layer that made symbolic tensor `t`, or None (an input)."""
  history = getattr(t, '_keras_history', None)
  if not history:
    return None
  producer = history[0]
  if type(producer).__name__ == 'InputLayer':
    return None
  return producer
