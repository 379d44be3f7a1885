"""A shrunk Keras model: layers rebuilt with fewer units, heads and filters.

    small = graph_prune.strip_keras(pruned, shrink=True)
    small.save('model.keras')              # loads with plain Keras

`graph_prune.shrink` removes zero units from the traced graph, which any
SavedModel or TFLite file can hold. A `.keras` file holds layer configs
instead, so the layers themselves must be rebuilt smaller. This module
takes the weights' shapes and values from the shrunk graph
(`stripped_model.strip_function(..., shrink=True)`, whose `originals` say
which model variable each new variable was sliced from) and rebuilds:

  * Sequential and functional models (Keras 3 or tf_keras) layer by layer
    (`clone_model` with a function that edits each layer's config): Dense
    `units`, Conv `filters`, EinsumDense `output_shape`, MultiHeadAttention
    `num_heads`, GroupedQueryAttention `num_query_heads` and
    `num_key_value_heads`. Layers that size themselves from their input
    (normalizations, depthwise convolutions) need no edit.
  * Models rebuilt from their own config (keras-hub backbones): the config's
    head and FFN sizes (`num_heads` or `num_query_heads`,
    `num_key_value_heads`, `intermediate_dim`) scaled by what shrink left.
    Such a config takes one count for every layer, so the counts must be
    equal across layers; and a class that derives a head's size from
    `hidden_dim // num_heads` (keras-hub's BERT, GPT-2, Llama) cannot hold
    fewer heads of the same size.

Either way the rebuilt model's weight shapes are compared with the shrunk
graph's before any value is set, so a rule that guessed wrong is an error
that names the weight, never a wrong model; what cannot be rebuilt is a
`KerasStripError` saying why and which export holds the shrunk model.
"""

import dataclasses
import re
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np

from graph_prune import errors
from graph_prune.export import keras_channels
from graph_prune.export import stripped_model
from graph_prune.export.stripped_function import first_line as _first_line
from graph_prune.model import tracing

Shape = Tuple[int, ...]

_OTHER_EXPORTS = (
  'export the shrunk model with graph_prune.export_saved_model(..., '
  'shrink=True) or graph_prune.export_tflite(..., shrink=True), or call '
  'strip_keras without shrink'
)


@dataclasses.dataclass(frozen=True)
class ShrunkWeights:
  """The model's weights as the shrunk graph has them.

  Attributes:
    values: id(tf.Variable) -> its value in the shrunk model (NumPy; masked
      weights with their masks applied, +0.0 where pruned); weights the
      shrunk graph does not read are left out.
    remaining: id(tf.Variable of a kernel) -> the indices of its output
      units that stay (the kernels shrink analysed).
  """

  values: Dict[int, Any]
  remaining: Dict[int, np.ndarray]


def shrunk_values(pruned) -> ShrunkWeights:
  """The weights of `pruned` shrunk (`strip_function(..., shrink=True)`).

  Raises:
    KerasStripError: one variable was sliced two ways (a weight read by two
      computations that shrink cut differently).
  """
  pruning = stripped_model.PruningVariables.of([pruned])
  cf = tracing.inference_trace(pruned.__call__)
  copies = stripped_model.VariableCopies(share=True)
  stripped = stripped_model.strip_function(
    cf, pruning, 'the pruned model', shrink=True, copies=copies
  )
  values: Dict[int, Any] = {}
  for handle, original in stripped.originals.items():
    value = np.asarray(stripped.variables[handle].numpy())
    key = id(original)
    if key in values and values[key].shape != value.shape:
      raise errors.KerasStripError(
        f'Shrink cut {original.name!r} to two shapes, '
        f'{list(values[key].shape)} and {list(value.shape)} (it is read '
        f'twice); a Keras layer holds one; {_OTHER_EXPORTS}.'
      )
    values[key] = value
  remaining = {
    id(stripped.kernels[layer.kernel]): np.asarray(layer.remaining, np.int64)
    for layer in stripped.shrunk.layers
    if layer.kernel in stripped.kernels
  }
  return ShrunkWeights(values, remaining)


def rebuild(
  model,
  keras_module,
  targets: Callable[[Any], Shape],
  inputs,
  channels: keras_channels.Channels,
):
  """A new model like `model` whose weights have the shapes `targets` gives.

  Args:
    model: the Keras model.
    keras_module: its Keras package (`keras` or `tf_keras`).
    targets: a model weight -> the shape it has in the shrunk model.
    inputs: example inputs that build the clone.
    channels: the model's `keras_channels.Channels` (a channel count in a
      weightless layer's config, a `Reshape`'s).

  Returns:
    The built, uncompiled clone; its weights are in `model.weights`' order
    with the target shapes.

  Raises:
    KerasStripError: a layer or config cannot hold the shrunk shapes.
  """
  edits: Dict[str, int] = {}  # what configs were given, for messages
  if _rebuilt_by_layers(model, keras_module):
    clone = _clone_layers(model, keras_module, targets, edits, channels)
  else:
    clone = _clone_config(model, targets, edits)
  if not clone.built or len(clone.weights) != len(model.weights):
    clone(*inputs)
  _check_shapes(model, clone, targets, edits)
  return clone


def _rebuilt_by_layers(model, keras_module) -> bool:
  """Sequential and plain functional models are cloned layer by layer.

  `keras.Model(inputs, outputs)` makes an instance of `Functional`, a class
  neither Keras exports; a subclass of it (a keras-hub backbone) has a
  config of its own and is rebuilt from that.
  """
  if isinstance(model, keras_module.Sequential):
    return True
  return type(model).__name__ == 'Functional'


def _clone_layers(model, keras_module, targets, edits, channels):
  def clone_function(layer):
    if isinstance(layer, keras_module.Model):
      if _rebuilt_by_layers(layer, keras_module):
        return keras_module.models.clone_model(
          layer, clone_function=clone_function
        )
      return _clone_config(layer, targets, edits)
    config = layer.get_config()
    if _changed(layer.weights, targets):
      config = _edit_layer_config(layer, config, targets)
    elif 'Reshape' in keras_channels.class_names(layer):
      config = _reshape_config(layer, config, channels)
    return layer.__class__.from_config(config)

  try:
    return keras_module.models.clone_model(model, clone_function=clone_function)
  except errors.KerasStripError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # clone_model raises ValueError/TypeError/NotImplementedError for layers
    # whose config does not rebuild them.
    raise errors.KerasStripError(
      f'Cannot rebuild Keras model {model.name!r} with fewer units: '
      f'{_first_line(e)}; {_OTHER_EXPORTS}.'
    ) from e


def _changed(weights, targets) -> bool:
  return any(tuple(w.shape) != targets(w) for w in weights)


def _edit_layer_config(layer, config, targets) -> Dict[str, Any]:
  """`config` with the sizes that give `layer`'s weights their targets."""
  names = keras_channels.class_names(layer)
  config = dict(config)
  if set(names) & set(keras_channels.SIZED_BY_INPUT):
    pass  # its weights follow its input's channels
  elif 'GroupedQueryAttention' in names:
    config['num_query_heads'] = targets(_sublayer(layer, 'query').kernel)[1]
    config['num_key_value_heads'] = targets(_sublayer(layer, 'key').kernel)[1]
  elif 'MultiHeadAttention' in names:
    config['num_heads'] = targets(_sublayer(layer, 'query').kernel)[1]
  elif 'EinsumDense' in names:
    config['output_shape'] = _einsum_output_shape(
      config['equation'], config['output_shape'], targets(layer.kernel)
    )
  elif 'Dense' in names:
    config['units'] = targets(layer.kernel)[-1]
  elif any(n in names for n in ('Conv1D', 'Conv2D', 'Conv3D')) and not any(
    'Transpose' in n or 'Depthwise' in n or 'Separable' in n for n in names
  ):
    config['filters'] = targets(layer.kernel)[-1]
  else:
    changed = [
      f'{_path(w)} {list(w.shape)} -> {list(targets(w))}'
      for w in layer.weights
      if tuple(w.shape) != targets(w)
    ]
    raise errors.KerasStripError(
      f'Cannot rebuild layer {layer.name!r} ({type(layer).__name__}) with '
      f'fewer units: shrink changed {"; ".join(changed)} and graph_prune '
      'knows no config of this layer class that sets those sizes (it knows '
      'Dense, Conv1D/2D/3D, EinsumDense, MultiHeadAttention and '
      'GroupedQueryAttention); add the layer to do_not_prune, or '
      f'{_OTHER_EXPORTS}.'
    )
  return config


def _reshape_config(layer, config, channels) -> Dict[str, Any]:
  """A `Reshape` that keeps its input's channels last (a squeeze-and-
  excitation block's `(1, 1, channels)`) with the channels that stay."""
  target = list(config.get('target_shape') or ())
  units = channels.of_input(layer)
  try:
    before = layer.input.shape[-1]
  except (AttributeError, ValueError):  # a shared layer
    return config
  if units is None or not target or target[-1] != before:
    return config
  target[-1] = int(units.size)
  return dict(config, target_shape=tuple(target))


def _sublayer(layer, name: str):
  """An attention layer's query/key projection (public or private name)."""
  for attr in (f'{name}_dense', f'_{name}_dense'):
    sub = getattr(layer, attr, None)
    if sub is not None:
      return sub
  raise errors.KerasStripError(
    f'Cannot find the {name} projection of {layer.name!r} '
    f'({type(layer).__name__}); {_OTHER_EXPORTS}.'
  )


def _einsum_output_shape(equation: str, output_shape, kernel: Shape):
  """EinsumDense's `output_shape` for a kernel of shape `kernel`.

  `output_shape` lists the output's trailing dimensions (no batch); each
  one named by a letter of the kernel takes that kernel dimension.
  """
  match = re.fullmatch(r'\s*([\w.]+)\s*,\s*(\w+)\s*->\s*([\w.]+)\s*', equation)
  if match is None:
    raise errors.KerasStripError(
      f'Cannot read the EinsumDense equation {equation!r}; {_OTHER_EXPORTS}.'
    )
  _, kernel_spec, out_spec = match.groups()
  out_letters = out_spec.replace('...', '')
  single = isinstance(output_shape, int)
  dims = [output_shape] if single else list(output_shape)
  letters = out_letters[len(out_letters) - len(dims) :]
  for j, letter in enumerate(letters):
    if letter in kernel_spec and dims[j] is not None:
      dims[j] = int(kernel[kernel_spec.index(letter)])
  return dims[0] if single else type(output_shape)(dims)


# Config keys of models rebuilt from their config (keras-hub backbones) and
# the weights whose shrunk size sets each: path endings; the key scales with
# the one axis those weights lost.
_CONFIG_KEYS = (
  (('num_heads', 'num_query_heads'), ('query/kernel',)),
  (('num_key_value_heads',), ('key/kernel',)),
  (
    ('intermediate_dim',),
    ('feedforward_intermediate_dense/kernel', 'ffw_gating/kernel'),
  ),
)


def _clone_config(model, targets, all_edits: Dict[str, int]):
  """`model` rebuilt from its config with its head and FFN sizes scaled
  (added to `all_edits`)."""
  try:
    config = model.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise errors.KerasStripError(
      f'Cannot rebuild {model.name!r} ({type(model).__name__}): it has no '
      f'usable get_config ({_first_line(e)}); {_OTHER_EXPORTS}.'
    ) from e
  config = dict(config)
  sizes = _sizes_config(config)
  edits = {}
  for keys, endings in _CONFIG_KEYS:
    key = next((k for k in keys if isinstance(sizes.get(k), int)), None)
    if key is None:
      continue
    value = _scaled(model, key, sizes[key], endings, targets)
    if value != sizes[key]:
      edits[key] = value
  if not edits and _changed(model.weights, targets):
    raise errors.KerasStripError(
      f'Cannot rebuild {model.name!r} ({type(model).__name__}) with fewer '
      'units: its config has no size graph_prune knows how to set (it '
      f'knows {", ".join(k for keys, _ in _CONFIG_KEYS for k in keys)}); '
      f'{_OTHER_EXPORTS}.'
    )
  sizes.update(edits)
  try:
    clone = type(model).from_config(config)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.KerasStripError(
      f'Cannot rebuild {model.name!r} ({type(model).__name__}) with '
      f'{_format_edits(edits)}: {_first_line(e)}; {_OTHER_EXPORTS}.'
    ) from e
  all_edits.update(edits)
  return clone


def _sizes_config(config: Dict[str, Any]) -> Dict[str, Any]:
  """The dict in `config` that holds the head and FFN sizes (mutable).

  A backbone's own config, or a keras-hub task's (`BertTextClassifier`,
  `GemmaCausalLM`) serialized `backbone`: copied into `config` so that
  editing it edits what `from_config` reads.
  """
  known = [k for keys, _ in _CONFIG_KEYS for k in keys]
  if any(isinstance(config.get(k), int) for k in known):
    return config
  nested = config.get('backbone')
  if isinstance(nested, dict) and isinstance(nested.get('config'), dict):
    inner = dict(nested['config'])
    config['backbone'] = dict(nested, config=inner)
    return inner
  return config


def _scaled(model, key, value, endings, targets) -> int:
  """`value` scaled by the size shrink left on the weights of `endings`.

  Raises:
    KerasStripError: the layers kept different sizes, or the size does not
      scale to a whole number.
  """
  per_layer: List[Tuple[str, int]] = []
  for w in model.weights:
    path = _path(w)
    if not path.endswith(endings):
      continue
    before, after = tuple(w.shape), targets(w)
    axes = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    if len(axes) > 1:
      raise errors.KerasStripError(
        f'Shrink cut {path} along {len(axes)} axes ({list(before)} -> '
        f'{list(after)}); the config of {type(model).__name__} sets one '
        f'({key}); {_OTHER_EXPORTS}.'
      )
    axis = axes[0] if axes else None
    scaled = value if axis is None else value * after[axis] / before[axis]
    per_layer.append((path.rsplit('/', 2)[0], scaled))
  sizes = sorted({s for _, s in per_layer})
  if len(sizes) > 1:
    shown = ', '.join(f'{p}: {_number(s)}' for p, s in per_layer)
    raise errors.KerasStripError(
      f'{type(model).__name__} takes one {key} for all its layers, but '
      f'shrink left different sizes ({key} would be {shown}); prune every '
      'layer alike (pruning_scope=layer, the default) or '
      f'{_OTHER_EXPORTS}.'
    )
  if not sizes:
    return value
  size = sizes[0]
  if size != int(size):
    raise errors.KerasStripError(
      f'{type(model).__name__}: shrink left {key}={_number(size)}, not a '
      f'whole number; {_OTHER_EXPORTS}.'
    )
  return int(size)


def _check_shapes(model, clone, targets, edits: Mapping[str, int]) -> None:
  source, rebuilt = model.weights, clone.weights
  if len(source) != len(rebuilt):
    raise errors.KerasStripError(
      f'The rebuilt {model.name!r} has {len(rebuilt)} weights where the '
      f'model has {len(source)}; {_OTHER_EXPORTS}.'
    )
  for w, r in zip(source, rebuilt):
    want, got = targets(w), tuple(r.shape)
    if want == got:
      continue
    path = _path(w)
    why = ''
    heads = [k for k in edits if 'heads' in k]
    if heads and re.search(r'(query|key|value)/kernel$', path):
      why = (
        f': {type(model).__name__} derives the size of a head from '
        f'{heads[0]}, so it cannot hold fewer heads of the same size (a '
        '.keras file can hold its FFN units pruned alone: add the '
        'attention kernels to do_not_prune)'
      )
    raise errors.KerasStripError(
      f'Rebuilt with {_format_edits(edits) or "the same config"}, '
      f'{type(model).__name__} gives {path} the shape {list(got)} where the '
      f'shrunk weight is {list(want)}{why}; {_OTHER_EXPORTS}.'
    )


def _path(w) -> str:
  path = getattr(w, 'path', None) or w.name
  return path.split(':')[0]


def _number(x) -> str:
  return str(int(x)) if x == int(x) else f'{x:.2f}'


def _format_edits(edits: Mapping[str, int]) -> str:
  return ', '.join(f'{k}={v}' for k, v in edits.items())


def target_shapes(
  values: Mapping[int, Any], tf_variable: Callable[[Any], Any]
) -> Callable[[Any], Shape]:
  """A function: model weight -> its shape in the shrunk model.

  Args:
    values: from `shrunk_values`.
    tf_variable: a Keras weight -> its `tf.Variable`.
  """

  def targets(w) -> Shape:
    value = values.get(id(tf_variable(w)))
    return tuple(w.shape) if value is None else tuple(value.shape)

  return targets
