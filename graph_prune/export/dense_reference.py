"""The dense float SavedModel a pruned SavedModel stands for, measured.

A shipped size only means something beside what the model would have cost
unpruned. A pruned SavedModel holds its dense weights and masks, not the
dense model, so `export_dense` exports the same signatures with every mask
set to ones: the stripped model then holds each weight's full float value
and no pruning state, the unpruned model's weights as one SavedModel. The masks
are set on the loaded copy only and restored afterwards; `dense_size`
writes to a temporary directory and measures it.

    size = dense_size(loaded, pruning, ['serving_default'])
    print(size.gzipped)
"""

import os
import tempfile
from typing import Sequence

import numpy as np
import tensorflow as tf

from graph_prune.export import sizes
from graph_prune.export.stripped_model import PruningVariables
from graph_prune.export.stripped_model import rebuild
from graph_prune.export.stripped_model import signature_input_specs
from graph_prune.export.stripped_model import strip_function
from graph_prune.export.stripped_model import StrippedModel
from graph_prune.export.stripped_model import VariableCopies


def export_dense(
  loaded, pruning: PruningVariables, keys: Sequence[str], path: str
) -> None:
  """Writes `loaded`'s signatures with masks of ones as a SavedModel.

  Args:
    loaded: a pruned SavedModel loaded with `tf.saved_model.load` (the
      PrunedModel may be any object in it).
    pruning: its `PruningVariables` (which variables are masks).
    keys: the signatures to export (aliases left out, as in the output).
    path: the directory to write (a temporary one: callers measure it).
  """
  masks = _masks(loaded, pruning)
  saved = [m.numpy() for m in masks]
  try:
    for mask, value in zip(masks, saved):
      mask.assign(np.ones_like(value))
    functions, copies = {}, VariableCopies(share=True)
    for key in keys:
      cf = loaded.signatures[key]
      stripped = strip_function(
        cf, pruning, f'signature {key!r}', False, copies
      )
      functions[key] = rebuild(stripped, cf, signature_input_specs(cf), copies)
    StrippedModel(
      signature_functions=functions, variables=copies.variables
    ).save(path)
  finally:
    for mask, value in zip(masks, saved):
      mask.assign(value)


def _masks(loaded, pruning):
  """The loaded mask variables, found by handle as `pruning` names them."""
  found = {}
  for obj in tf.train.TrackableView(loaded).descendants():
    if isinstance(obj, tf.Variable) and id(obj.handle) in pruning.masks:
      found.setdefault(id(obj.handle), obj)
  return list(found.values())


def dense_size(
  loaded, pruning: PruningVariables, keys: Sequence[str]
) -> sizes.Size:
  """`sizes.measure` of `export_dense`'s SavedModel (see `export_dense`)."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'dense')
    export_dense(loaded, pruning, keys, path)
    return sizes.measure(path)
