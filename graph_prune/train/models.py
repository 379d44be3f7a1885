"""Built-in Keras 3 models for the training binary and the sparsity sweep.

    model = models.build('mlp', input_shape=(8, 8), num_classes=10, seed=0)

* `mlp`: the classic 1000-1000-500-200 ReLU MLP of pruning studies (the
  images are flattened first).
* `cnn`: a small conv net: 3x3 conv, 3x3 depthwise conv, 1x1 conv, pooling and
  two dense layers, so that pruning reaches a DepthwiseConv2D.
* `lstm`: an LSTM reading the image one row per time step.
* `rescnn`: a small residual CNN with batch norm: a 3x3 stem, two residual
  blocks (the second halves the resolution and projects its shortcut with a
  1x1 conv), global average pooling and the logits; its residual adds couple
  the channels of the convs that feed them (issue 13's coupled groups).

Every layer has a fixed name (`dense_1`, ..., `logits`), so pruning hparams
such as `do_not_prune=[logits]` or `weight_sparsity_map=[dense_1:0.8]` stay
valid from run to run.
"""

from typing import Callable, Dict, Sequence

import keras

from graph_prune.train import errors

MLP_UNITS = (1000, 1000, 500, 200)
OUTPUT_LAYER = 'logits'


def _mlp(input_shape, num_classes, hidden=MLP_UNITS):
  layers = [
    keras.Input(input_shape, name='images'),
    keras.layers.Flatten(name='flatten'),
  ]
  layers += [
    keras.layers.Dense(units, activation='relu', name=f'dense_{i}')
    for i, units in enumerate(hidden, start=1)
  ]
  layers.append(keras.layers.Dense(num_classes, name=OUTPUT_LAYER))
  return keras.Sequential(layers, name='mlp')


def _image_shape(input_shape, model):
  """[h, w] or [h, w, c] images as [h, w, c]."""
  if len(input_shape) == 2:
    return tuple(input_shape) + (1,)
  if len(input_shape) == 3:
    return tuple(input_shape)
  raise errors.UnknownModelError(
    f'--model={model} needs images of shape [h, w] or [h, w, c], got '
    f'{list(input_shape)}; use --model=mlp for flat inputs.'
  )


def _cnn(input_shape, num_classes):
  shape = _image_shape(input_shape, 'cnn')
  layers = keras.layers
  return keras.Sequential(
    [
      keras.Input(tuple(input_shape), name='images'),
      layers.Reshape(shape, name='channels'),
      layers.Conv2D(32, 3, padding='same', activation='relu', name='conv_1'),
      layers.DepthwiseConv2D(
        3, padding='same', activation='relu', name='depthwise_1'
      ),
      layers.Conv2D(64, 1, activation='relu', name='pointwise_1'),
      layers.MaxPooling2D(2, name='pool_1'),
      layers.Flatten(name='flatten'),
      layers.Dense(128, activation='relu', name='dense_1'),
      layers.Dense(num_classes, name=OUTPUT_LAYER),
    ],
    name='cnn',
  )


def _lstm(input_shape, num_classes, units=128):
  shape = _image_shape(input_shape, 'lstm')
  rows = (shape[0], shape[1] * shape[2])
  return keras.Sequential(
    [
      keras.Input(tuple(input_shape), name='images'),
      keras.layers.Reshape(rows, name='rows'),
      keras.layers.LSTM(units, name='lstm_1'),
      keras.layers.Dense(num_classes, name=OUTPUT_LAYER),
    ],
    name='lstm',
  )


def _conv_bn(x, filters, kernel, name, strides=1, relu=True):
  """Conv (no bias: batch norm's shift replaces it), batch norm, ReLU."""
  layers = keras.layers
  x = layers.Conv2D(
    filters, kernel, strides, padding='same', use_bias=False, name=name
  )(x)
  x = layers.BatchNormalization(name=f'{name}_bn')(x)
  return layers.ReLU(name=f'{name}_relu')(x) if relu else x


def _residual_block(x, filters, name, strides=1):
  shortcut = x
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv_bn(x, filters, 1, f'{name}_proj', strides, relu=False)
  y = _conv_bn(x, filters, 3, f'{name}_conv_a', strides)
  y = _conv_bn(y, filters, 3, f'{name}_conv_b', relu=False)
  y = keras.layers.Add(name=f'{name}_add')([shortcut, y])
  return keras.layers.ReLU(name=f'{name}_out')(y)


def _rescnn(input_shape, num_classes, widths=(16, 32)):
  shape = _image_shape(input_shape, 'rescnn')
  inputs = keras.Input(tuple(input_shape), name='images')
  x = keras.layers.Reshape(shape, name='channels')(inputs)
  x = _conv_bn(x, widths[0], 3, 'stem')
  x = _residual_block(x, widths[0], 'block_1')
  x = _residual_block(x, widths[1], 'block_2', strides=2)
  x = keras.layers.GlobalAveragePooling2D(name='pool')(x)
  outputs = keras.layers.Dense(num_classes, name=OUTPUT_LAYER)(x)
  return keras.Model(inputs, outputs, name='rescnn')


_BUILDERS: Dict[str, Callable[..., keras.Model]] = {
  'mlp': _mlp,
  'cnn': _cnn,
  'lstm': _lstm,
  'rescnn': _rescnn,
}
MODELS = tuple(_BUILDERS)


def check_name(name: str) -> None:
  """Raises `UnknownModelError` unless `name` is a built-in model."""
  if name not in _BUILDERS:
    raise errors.UnknownModelError(
      f'Unknown model {name!r}; pass one of {", ".join(MODELS)}.'
    )


def build(
  name: str, input_shape: Sequence[int], num_classes: int, seed: int = 0
) -> keras.Model:
  """Builds a built-in model with weights initialized from `seed`.

  Args:
    name: one of `MODELS` ('mlp', 'cnn', 'lstm', 'rescnn').
    input_shape: the shape of one example, e.g. (8, 8) or (28, 28, 1).
    num_classes: the number of logits.
    seed: seeds Keras' initializers (through `keras.utils.set_random_seed`,
      which also seeds Python's and NumPy's global generators).

  Returns:
    An uncompiled Keras model mapping float images to logits.

  Raises:
    errors.UnknownModelError: `name` is not a built-in model, or the input
      shape does not suit it.
  """
  check_name(name)
  keras.utils.set_random_seed(seed)
  return _BUILDERS[name](tuple(int(d) for d in input_shape), int(num_classes))
