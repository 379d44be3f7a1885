"""Values for the weights a shrunk graph folded away, for a rebuilt Keras model.

    values = keras_channels.complete(model, shrunk, masked, tf_variable)

Shrink reads a BatchNormalization's parameters (and the bias of the
convolution before it) as constants and computes them into one scale and
one offset (`passes/shrink_units.py`), so the shrunk graph has no sliced
gamma, beta, moving mean or variance, nor that bias. A `.keras` file needs
each of them. They are the original values at the units that stayed,
which shrink reports per kernel (`LayerUnits.remaining`), carried down the
Keras graph through layers that keep channels (activations, normalizations,
dropout, pooling) to the normalizations and depthwise convolutions that
read them. A weight left without a value keeps its shape, and the rebuilt
model's shape check then says which one.
"""

from typing import Any, Callable, Dict, Optional

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


def complete(
  model,
  shrunk,
  masked: Callable[[Any], np.ndarray],
  tf_variable: Callable[[Any], Any],
) -> Dict[int, Any]:
  """The shrunk values with the folded-away weights of `model` filled in.

  Args:
    model: a Keras model.
    shrunk: a `keras_shrink.ShrunkWeights`.
    masked: a Keras weight -> its masked value (NumPy).
    tf_variable: a Keras weight -> its `tf.Variable`.

  Returns:
    id(tf.Variable) -> value: `shrunk.values` plus each missing per-unit
    weight sliced.
  """
  values = dict(shrunk.values)
  kept: Dict[int, Optional[np.ndarray]] = {}

  def has(w) -> bool:
    return id(tf_variable(w)) in values

  def units_of(layer) -> Optional[np.ndarray]:
    """The kept output units of `layer`, or None if it keeps them all."""
    if id(layer) in kept:
      return kept[id(layer)]
    kept[id(layer)] = None  # (no cycles in a Keras graph; a guard anyway)
    result = None
    kernel = getattr(layer, 'kernel', None)
    names = {c.__name__ for c in type(layer).__mro__}
    if names & {'Dense', 'Conv1D', 'Conv2D', 'Conv3D'} and has(kernel):
      result = shrunk.remaining.get(id(tf_variable(kernel)))
      if result is not None and result.size == kernel.shape[-1]:
        result = None  # all stay
    elif names & set(SIZED_BY_INPUT):
      result = units_of_input(layer)
    kept[id(layer)] = result
    return result

  def units_of_input(layer) -> Optional[np.ndarray]:
    producer = _producer(layer)
    return None if producer is None else units_of(producer)

  for layer in _layers(model):
    missing = [w for w in layer.weights if not has(w)]
    if not missing:
      continue
    names = {c.__name__ for c in type(layer).__mro__}
    if names & {'Dense', 'Conv1D', 'Conv2D', 'Conv3D'}:
      units, channel_axis = units_of(layer), 0  # the bias
    else:
      units, channel_axis = units_of_input(layer), None
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


def _producer(layer):
  """The layer whose output `layer` reads (its first input), or None."""
  try:
    inputs = layer.input
  except (AttributeError, ValueError):  # a shared layer or no input
    return None
  if isinstance(inputs, (list, tuple)):
    inputs = inputs[0] if inputs else None
  history = getattr(inputs, '_keras_history', None)
  if not history:
    return None
  producer = history[0]
  if type(producer).__name__ == 'InputLayer':
    return None
  return producer
