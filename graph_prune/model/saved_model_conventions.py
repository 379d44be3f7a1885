"""Keras 3's SavedModel convention, for graph_prune's own modules.

A Keras 3 `model.export(path)` artifact, once loaded with
`tf.saved_model.load`, has `variables`, `trainable_variables` and
`non_trainable_variables` (lists of variables), a `serve` endpoint and the
signatures `serve` and `serving_default`; tools and users expect the same of
any model SavedModel. A `tf.Module`'s `variables` properties are computed in
Python and are not saved, so a loaded PrunedModel or StrippedModel had none
(an `AttributeError`).

`SavedModelConventions` is a mixin for a `tf.Module` that adds, only when a
SavedModel is written (a checkpoint is unchanged, so old checkpoints still
restore), the three variable lists and `serve` as children of the saved
object, and marks `serve` as the function `tf.saved_model.save` turns into
`serving_default` when no signatures are given (without that mark, two
functions with an input signature on one object would leave the SavedModel
without a default signature).

It overrides `Trackable._trackable_children`, the hook SavedModel saving
calls to list an object's children: Keras 3 layers override the same hook
for the same reason, and no public API adds saved-only children.
"""

from typing import Any, Optional, Sequence

import tensorflow as tf

SERVE = 'serve'
# The attribute tf.saved_model.save makes the default signature of when it
# is given no signatures (tensorflow/python/saved_model/
# signature_serialization.py, DEFAULT_SIGNATURE_ATTR).
_DEFAULT_SIGNATURE_ATTR = '_default_save_signature'


class SavedModelConventions:
  """Mixin: saved `variables` lists and a `serve` endpoint (see module doc).

  A subclass implements `_export_variables` and `_export_serve`; one whose
  `save` passes its own signatures sets `_serve_is_default_signature` False.
  """

  _serve_is_default_signature = True

  def _export_variables(self) -> Sequence[Any]:
    """The variables the SavedModel lists, in a stable order."""
    raise NotImplementedError

  def _export_serve(self) -> Optional[Any]:
    """The `tf.function` (with an input signature) `serve` is, or None."""
    raise NotImplementedError

  def _trackable_children(self, save_type='checkpoint', **kwargs):
    children = super()._trackable_children(save_type, **kwargs)
    if save_type != 'savedmodel':
      return children
    variables = _unique(self._export_variables())
    lists = {
      'variables': variables,
      'trainable_variables': [v for v in variables if v.trainable],
      'non_trainable_variables': [v for v in variables if not v.trainable],
    }
    for name, value in lists.items():
      children.setdefault(name, tf.__internal__.tracking.wrap(value))
    serve = self._export_serve()
    if serve is not None:
      children.setdefault(SERVE, serve)
      if self._serve_is_default_signature:
        children.setdefault(_DEFAULT_SIGNATURE_ATTR, serve)
    return children


def _unique(variables):
  seen, unique = set(), []
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      unique.append(v)
  return unique


def export_signatures(functions, call=None):
  """The signatures to save: Keras-like, 'serve' beside 'serving_default'.

  Args:
    functions: signature key -> `tf.function` with an input signature.
    call: the module's `__call__` `tf.function`, the default signature when
      `functions` is empty; or None.

  Returns:
    Signature key -> the `tf.function`, with 'serve' an alias of
    'serving_default' when there is one; None when there is nothing. The
    `tf.function`s themselves, not their `ConcreteFunction`s: for a
    `ConcreteFunction` traced before saving, `tf.saved_model.save` keeps
    that trace beside its own, and a stripped function's trace holds the
    folded weights as constants (the SavedModel would hold them twice).
  """
  signatures = dict(functions)
  if not signatures and call is not None:
    signatures = {'serving_default': call}
  if 'serving_default' in signatures:
    signatures.setdefault(SERVE, signatures['serving_default'])
  return signatures or None


def save_pruned(module, export_dir: str) -> None:
  """`tf.saved_model.save` with Keras 3's signatures: `serve` and default.

  A plain `tf.saved_model.save(module, dir)` makes one signature,
  `serving_default`, of the function this mixin marks (TensorFlow takes a
  single default function); Keras 3's `model.export()` writes `serve`
  beside it. Both keys name the same traced function, so the weights are
  stored once.

  Args:
    module: a `SavedModelConventions` module (e.g. a `PrunedModel`).
    export_dir: the directory to write.
  """
  serve = module._export_serve()  # pylint: disable=protected-access
  tf.saved_model.save(
    module, export_dir, signatures=export_signatures({}, serve)
  )


def signature_aliases(signatures) -> dict:
  """Signature keys of a loaded SavedModel that alias `serving_default`.

  `tf.saved_model.save` wraps each signature key in its own function, so a
  loaded `serve` and `serving_default` are different objects even when both
  were saved from one `tf.function`; what they share is the function they
  call. A tool that strips every signature strips such an alias once and
  saves it again as an alias (`export_signatures`), or the output would
  hold the folded weights twice.

  Args:
    signatures: a loaded SavedModel's `signatures` mapping.

  Returns:
    {alias key: 'serving_default'} for `serve` when it calls the same
    function as `serving_default` with the same inputs; else {}.
  """
  default = 'serving_default'
  if SERVE not in signatures or default not in signatures:
    return {}
  serve, target = signatures[SERVE], signatures[default]
  if (
    _called_functions(serve) == _called_functions(target)
    and _called_functions(serve)
    and serve.structured_input_signature == target.structured_input_signature
  ):
    return {SERVE: default}
  return {}


def _called_functions(concrete):
  return sorted(
    op.get_attr('f').name
    for op in concrete.graph.get_operations()
    if op.type in ('StatefulPartitionedCall', 'PartitionedCall')
  )
