"""A pruned Keras model back as a plain Keras model: `strip_keras`.

    plain = graph_prune.strip_keras(pruned)   # same architecture, same Keras
    plain.save('model.keras')                 # loads with keras alone
    plain.summary(); plain.predict(x); plain.export('serving_dir')

`strip` returns a `tf.Module` that serves; a Keras user also wants to save,
summarize, fine-tune or convert the result with Keras' own tools, which need
a Keras model. `strip_keras` clones the architecture of the model
`apply_pruning` traced (`clone_model` of the same Keras package: Keras 3 or
tf_keras; a subclassed model is rebuilt from its config) and sets every
weight to its current value, the masked ones to `weight * mask` (+0.0 where
pruned, never -0.0, so the zeros compress alike). The clone holds no
graph_prune object, so its `.keras` file loads with plain Keras; the
training model is not touched. The clone is checked against `pruned(x)` on
random inputs before it is returned.

With `shrink=True` the clone's layers are rebuilt with the units, filters
and heads `graph_prune.shrink` removed taken out (`keras_shrink.py`): a
smaller `.keras` file that runs faster, or a `KerasStripError` that says
why the architecture's configs cannot hold the shrunk sizes.
"""

import sys
from typing import Any, Dict

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.export import keras_channels
from graph_prune.export import keras_shrink


def strip_keras(pruned, check: bool = True, shrink: bool = False):
  """Returns a new Keras model whose weights are `pruned`'s masked values.

  Args:
    pruned: a `PrunedModel` from `apply_pruning` of a Keras 3 or tf_keras
      model (Sequential, functional or subclassed).
    check: compare the new model with `pruned(x)` on random inputs.
    shrink: rebuild the layers without the zero units, filters and heads
      that `graph_prune.shrink` removes (Sequential and functional models
      layer by layer; models built from their own config, like keras-hub
      backbones, through that config).

  Returns:
    An uncompiled model of the same Keras package and architecture as the
    pruned one, independent of it and of graph_prune.

  Raises:
    KerasStripError: `pruned` is not a PrunedModel of a Keras model, the
      model cannot be cloned, or the clone's weights do not line up; with
      `shrink`, a layer or config cannot hold the shrunk sizes.
    FoldError: the clone computes something else than `pruned` (a bug).
  """
  model = getattr(pruned, 'keras_model', None)
  if not hasattr(pruned, 'pruned_weights') or model is None:
    raise errors.KerasStripError(
      'strip_keras needs the PrunedModel of a Keras model, got '
      f'{_describe(pruned)}; for other computations use graph_prune.strip '
      '(a tf.Module) or graph_prune.export_saved_model.'
    )
  if shrink:
    masks = _masks(pruned)
    shrunk = keras_shrink.shrunk_values(pruned)
    channels = keras_channels.Channels(shrunk, _tf_variable)
    values = keras_channels.complete(
      model, channels, lambda v: _masked(v, masks), _tf_variable, shrunk.values
    )
    clone = keras_shrink.rebuild(
      model,
      _keras_module(model),
      keras_shrink.target_shapes(values, _tf_variable),
      _example_inputs(pruned.input_signature),
      channels,
    )
  else:
    values = {}
    clone = _clone(model, pruned.input_signature)
  clone.set_weights(masked_values(pruned, model, clone, values))
  if check:
    _check(pruned, clone)
  return clone


def masked_values(pruned, model, clone, shrunk=None):
  """The values for `clone.set_weights`: `model`'s, masked where pruned.

  `shrunk` maps id(tf.Variable) to a value that replaces the variable's
  (`keras_shrink.shrunk_values`).
  """
  shrunk = shrunk or {}
  masks = _masks(pruned)
  source, target = model.weights, clone.weights
  want = [
    tuple(shrunk[id(_tf_variable(v))].shape)
    if id(_tf_variable(v)) in shrunk
    else tuple(v.shape)
    for v in source
  ]
  if want != [tuple(v.shape) for v in target]:
    raise errors.KerasStripError(
      f'The clone of {model.name!r} has weights of shapes '
      f'{[tuple(v.shape) for v in target]} where the model has '
      f'{[tuple(v.shape) for v in source]}; give the model a get_config '
      'that rebuilds the same layers.'
    )
  return [
    shrunk[id(_tf_variable(v))]
    if id(_tf_variable(v)) in shrunk
    else _masked(v, masks)
    for v in source
  ]


def _masks(pruned) -> Dict[int, Any]:
  """id(tf.Variable) -> its mask, for every masked weight."""
  # Unit parameters (`unit_params=all`) are masked like the weights.
  return {
    id(_tf_variable(w.weight)): w.mask
    for w in tuple(pruned.pruned_weights) + tuple(pruned.unit_params)
  }


def _masked(v, masks) -> np.ndarray:
  """`v`'s value, times its mask if it has one (+0.0 where pruned)."""
  value = np.asarray(v.numpy() if hasattr(v, 'numpy') else v)
  mask = masks.get(id(_tf_variable(v)))
  if mask is not None:
    value = value * mask.numpy().astype(value.dtype) + value.dtype.type(0)
  return value


def _tf_variable(variable):
  """The `tf.Variable` behind a Keras 3 variable (itself otherwise)."""
  if isinstance(variable, tf.Variable):
    return variable
  value = getattr(variable, 'value', None)
  return value if isinstance(value, tf.Variable) else variable


def _keras_module(model):
  """The Keras package (`keras` or `tf_keras`) `model` belongs to."""
  for name in ('tf_keras', 'keras'):
    module = sys.modules.get(name)
    if module is not None and isinstance(model, module.Model):
      return module
  raise errors.KerasStripError(
    f'{_describe(model)} is not a Keras 3 or tf_keras model; use '
    'graph_prune.strip or graph_prune.export_saved_model.'
  )


def _clone(model, input_signature):
  keras_module = _keras_module(model)
  try:
    clone = keras_module.models.clone_model(model)
  except Exception as e:  # pylint: disable=broad-except
    # clone_model raises ValueError/TypeError/NotImplementedError for
    # subclassed models without a usable get_config.
    raise errors.KerasStripError(
      f'Cannot clone Keras model {model.name!r} '
      f'({type(model).__name__}): {_first_line(e)}; give it get_config() '
      'and from_config() (or use graph_prune.strip for a tf.Module).'
    ) from e
  if not clone.built or len(clone.weights) != len(model.weights):
    clone(*_example_inputs(input_signature))
  return clone


def _example_inputs(input_signature, batch: int = 2, seed: int = 0):
  rng = np.random.RandomState(seed)

  def one(spec):
    shape = [batch if d is None else d for d in spec.shape]
    if spec.dtype.is_floating:
      return tf.constant(rng.standard_normal(shape), spec.dtype)
    return tf.zeros(shape, spec.dtype)

  return tf.nest.map_structure(one, tuple(input_signature))


def _check(pruned, clone):
  inputs = _example_inputs(pruned.input_signature)
  want = tf.nest.flatten(pruned(*inputs))
  got = tf.nest.flatten(clone(*inputs, training=False))
  for a, b in zip(want, got):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5):
      diff = np.max(np.abs(a - b)) if a.shape == b.shape else b.shape
      raise errors.FoldError(
        f'The Keras clone of {clone.name!r} differs from the pruned model '
        f'(max difference or shape {diff}); please report this bug.'
      )


def _describe(obj) -> str:
  return f'{type(obj).__module__}.{type(obj).__name__}'


def _first_line(error) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__
