"""Keras `fit` for a pruned Keras model, with no callback.

    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.9,...')
    trainer = graph_prune.keras_trainer(pruned)
    trainer.compile(optimizer='adam', loss='sparse_categorical_crossentropy')
    trainer.fit(x, y, epochs=5)          # masks follow the schedule
    graph_prune.export_saved_model(pruned, '/tmp/model')

`keras_trainer` wraps the Keras model `apply_pruning` traced in a Keras model
of the same Keras (Keras 3 or tf_keras) whose forward pass is the pruned graph
and whose own train step ends with
`pruned.conditional_mask_update(optimizer.iterations)`: exactly the custom
training step of the README, so `fit`, `evaluate` and `predict` work, and the
schedule is driven by the optimizer's step. Its weights are the original
model's weights; the masks stay in `pruned`.
"""

import inspect
from typing import Any

import tensorflow as tf

from graph_prune import errors
from graph_prune.model import tracing


def keras_trainer(pruned: Any) -> Any:
  """A Keras model that trains `pruned` with `fit` and updates its masks.

  Args:
    pruned: a `PrunedModel` from `apply_pruning` of a Keras model.

  Returns:
    A model of the same Keras as the pruned one (a `keras.Model` or a
    `tf_keras.Model`), not compiled. Compile it with any optimizer, loss and
    metrics; Keras 3's `jit_compile` defaults to False here (the mask update
    has data-dependent shapes XLA cannot compile).
    `tf.train.Checkpoint(trainer=trainer)` saves and restores the weights,
    masks, thresholds, the last update step and the optimizer, so `fit`
    resumes the schedule exactly; `trainer.save` raises
    `UnsupportedSaveError` (export `pruned` with
    `graph_prune.export_saved_model` instead). Under a `tf.distribute`
    strategy, call it and `compile` under the scope the model and `pruned`
    were made in.

  Raises:
    UntraceableError: `pruned` was not made from a Keras model.
  """
  model = getattr(pruned, 'keras_model', None)
  if model is None:
    raise errors.UntraceableError(
      f'keras_trainer needs a PrunedModel made by apply_pruning from a Keras '
      f'model; got {type(pruned).__name__} {getattr(pruned, "name", "")!r}. '
      'For other computations call pruned.conditional_mask_update('
      'optimizer.iterations) in your own training step.'
    )
  base = next(
    cls for cls in tracing.keras_model_classes() if isinstance(model, cls)
  )
  return _trainer_class(base)(pruned, model)


def _trainer_class(base):
  """The trainer class deriving from `base` (keras.Model or tf_keras.Model)."""

  class PruningTrainer(base):
    """Runs `pruned`'s graph; its train step updates the masks."""

    def __init__(self, pruned, model):
      super().__init__(name=f'{model.name}_pruning')
      # Tracked: the model's weights are this model's (trainable) weights.
      self.inner_model = model
      self._pruned = pruned
      self._signature = pruned.input_signature

    def call(self, inputs, training=None):  # pylint: disable=arguments-differ
      args = (inputs,) if len(self._signature) == 1 else tuple(inputs)
      return self._pruned(
        *_as_signature(args, self._signature), training=_static_mode(training)
      )

    def compile(self, *args, **kwargs):  # pylint: disable=arguments-differ
      if 'jit_compile' in inspect.signature(base.compile).parameters:
        kwargs.setdefault('jit_compile', False)
      return super().compile(*args, **kwargs)

    def save(self, filepath, *args, **kwargs):  # pylint: disable=arguments-differ
      del args, kwargs
      raise errors.UnsupportedSaveError(
        f'{self.name} cannot be saved as a Keras model ({filepath!r}): it '
        'runs a rewritten graph. Export the pruned model with '
        'graph_prune.export_saved_model(pruned, dir) (masks folded) or '
        'tf.saved_model.save(pruned, dir); to resume training, save '
        'tf.train.Checkpoint(trainer=trainer), which holds the weights, '
        'masks and optimizer.'
      )

    def train_step(self, data):
      logs = super().train_step(data)
      self._pruned.conditional_mask_update(self.optimizer.iterations)
      return logs

  return PruningTrainer


def _as_signature(args, signature):
  """`args` in the structure and dtypes of `signature`.

  Keras hands a model's inputs over as tuples where the traced signature may
  hold lists (or the reverse); the leaves are matched in flattened order.
  """
  flat = tf.nest.flatten(args)
  specs = tf.nest.flatten(signature)
  if len(flat) != len(specs):
    raise errors.UntraceableError(
      f'keras_trainer got {len(flat)} input tensors, but the pruned model '
      f'takes {len(specs)}: {signature}; pass inputs of that structure.'
    )
  return tf.nest.pack_sequence_as(
    signature, [tf.cast(x, spec.dtype) for x, spec in zip(flat, specs)]
  )


def _static_mode(training):
  """None or a Python bool: each mode is a separate graph of `pruned`."""
  if training is None or isinstance(training, bool):
    return training
  value = tf.get_static_value(training)
  if value is None:
    raise errors.UntraceableError(
      f'keras_trainer needs training=True/False known when Keras traces its '
      f'step, got the tensor {training!r}; pass a Python bool.'
    )
  return bool(value)
