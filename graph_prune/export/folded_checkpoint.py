"""Folded weights written into a SavedModel's checkpoint one at a time.

    folds = DeferredFolds()
    variable = folds.variable(weight, mask, 'dense/kernel')  # no values yet
    tf.saved_model.save(module, path)      # writes every other variable
    folds.write(path, {id(variable): ('model_variables', '0')})

`export_saved_model` makes a stripped model only to write it. Were its
folded weights (`weight * mask`) variables holding their values, all of them
would exist at once while `tf.saved_model.save` runs: a third copy of the
masked weights beside the weights and their masks, which is what issue 23's
memory bound (apply_pruning + mask_update + export at most 3x the weights'
bytes) cannot afford. Here a folded weight is an uninitialized variable of
its shape and dtype instead: the SavedModel's functions capture it and its
object graph lists it as any variable, and `tf.saved_model.save` writes no
value for it (TensorFlow records an uninitialized variable's checkpoint key
in the object graph but saves no tensor under it). `write` then computes the
folded values a chunk at a time (the chunks no bigger than the largest
weight), saves each chunk as a checkpoint part under the keys the object
graph gave its variables (`tf.raw_ops.SaveV2`), merges the parts into the
SavedModel's checkpoint as a sharded save does (`MergeV2Checkpoints`), and
writes the SavedModel's fingerprint again, whose checkpoint hash changed.
The output is an ordinary SavedModel: its loader restores every variable
from `variables/`, folded ones included.

It is separate from `rebuild.VariableCopies`, which makes a stripped model's
variables, because what is special here is only when and how the folded
values reach the disk.
"""

import glob
import os
import shutil
import tempfile
from typing import Dict, List, Mapping, NamedTuple, Sequence, Tuple

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from graph_prune import _tf_internal
from graph_prune import errors

# Where every object-based checkpoint stores its `TrackableObjectGraph`.
_OBJECT_GRAPH_KEY = '_CHECKPOINTABLE_OBJECT_GRAPH'
# The attribute under which a variable's value is checkpointed.
_VARIABLE_VALUE = 'VARIABLE_VALUE'


class _Fold(NamedTuple):
  variable: tf.Variable
  weight: tf.Variable
  mask: tf.Variable
  name: str


def folded_value(weight, mask) -> tf.Tensor:
  """`weight * mask`, +0.0 where pruned.

  Adding +0.0 turns the -0.0 of a masked negative weight into +0.0, so the
  saved zeros are plain zero bytes (see passes/folded_values.py).
  """
  return tf.multiply(weight, mask) + tf.zeros((), weight.dtype)


def count_nonzero(weight, mask) -> int:
  """How many values of `folded_value(weight, mask)` are not zero.

  Counted without keeping the folded value (see `_count_nonzero`). The
  values go in as tensors (reads share the variables' buffers): given
  variables, the trace relaxed for a second shape keeps the first
  variable's static shape in `tf.shape` (the reshape then fails).
  """
  return int(
    _count_nonzero(tf.convert_to_tensor(weight), tf.convert_to_tensor(mask))
  )


@tf.function(autograph=False, reduce_retracing=True)
def _count_nonzero(weight, mask):
  """The non-zeros of `weight * mask`, as an int64 scalar.

  In a graph each intermediate is freed as soon as it is used, so the
  product, its comparison and the integer cast of one weight are never all
  held at once (eagerly, `tf.math.count_nonzero(weight * mask)` holds the
  product beside an int64 copy: three times the weight's bytes). Rows are
  summed as int32 (the cast half as big as int64), their sums as int64.
  """
  nonzero = tf.not_equal(tf.multiply(weight, mask), 0)
  rows = tf.reshape(nonzero, [-1, tf.shape(nonzero)[-1]])
  return tf.reduce_sum(
    tf.cast(tf.reduce_sum(tf.cast(rows, tf.int32), 1), tf.int64)
  )


class DeferredFolds:
  """Folded variables made without values, their values written later."""

  def __init__(self):
    self._folds: Dict[int, _Fold] = {}

  def __bool__(self) -> bool:
    return bool(self._folds)

  def variable(self, weight, mask, name: str) -> tf.Variable:
    """A non-trainable variable of `weight`'s shape and dtype, uninitialized,
    that `write` fills with `folded_value(weight, mask)` on disk."""
    with tf.init_scope():
      variable = _tf_internal.uninitialized_variable(
        weight.shape, weight.dtype, name
      )
    self._folds[id(variable)] = _Fold(variable, weight, mask, name)
    return variable

  def holds(self, variable) -> bool:
    return id(variable) in self._folds

  def nonzeros(self, variable) -> int:
    """The non-zeros of `variable`'s folded value (computed, then dropped)."""
    fold = self._folds[id(variable)]
    return count_nonzero(fold.weight, fold.mask)

  def write(
    self, export_dir: str, paths: Mapping[int, Tuple[str, ...]]
  ) -> None:
    """Adds the folded values to the checkpoint of SavedModel `export_dir`.

    Args:
      export_dir: a SavedModel just written by `tf.saved_model.save`, whose
        object graph holds this object's variables.
      paths: `id(variable)` -> the names of the children from the saved
        root object to it (e.g. ('model_variables', '3')), for each variable
        made by `variable` that the SavedModel holds.

    Raises:
      StripError: the checkpoint lists no key for a folded variable, or
        already holds a value under it.
    """
    prefix = os.path.join(export_dir, 'variables', 'variables')
    folds = [self._folds[key] for key in paths if key in self._folds]
    if not folds:
      return
    keys = _checkpoint_keys(prefix, [paths[id(f.variable)] for f in folds])
    saved = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    for fold, key in zip(folds, keys):
      if key is None or key in saved:
        raise errors.StripError(
          f'Cannot write folded weight {fold.name!r} into {export_dir!r}: '
          f'the checkpoint {"holds a value under" if key else "lists no"} '
          f'its key {key!r}; this TensorFlow saves uninitialized variables '
          'differently, export with shrink=True or report it.'
        )
    temp = tempfile.mkdtemp(prefix='folded_', dir=os.path.dirname(prefix))
    try:
      parts = [_move_checkpoint(prefix, os.path.join(temp, 'saved'))]
      for i, chunk in enumerate(_chunks(folds, keys)):
        part = os.path.join(temp, f'part-{i}')
        values = [folded_value(f.weight, f.mask) for f, _ in chunk]
        tf.raw_ops.SaveV2(
          prefix=part,
          tensor_names=[key for _, key in chunk],
          shape_and_slices=[''] * len(chunk),
          tensors=values,
        )
        del values
        parts.append(part)
      tf.raw_ops.MergeV2Checkpoints(
        checkpoint_prefixes=parts, destination_prefix=prefix
      )
    finally:
      shutil.rmtree(temp, ignore_errors=True)
    _tf_internal.write_fingerprint(export_dir)


def _checkpoint_keys(prefix: str, paths: Sequence[Tuple[str, ...]]):
  """The checkpoint key of the variable at each path (None where absent)."""
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(
    tf.train.load_checkpoint(prefix).get_tensor(_OBJECT_GRAPH_KEY)
  )
  keys = []
  for path in paths:
    node = graph.nodes[0]
    for name in path:
      ids = [c.node_id for c in node.children if c.local_name == name]
      node = graph.nodes[ids[0]] if ids else None
      if node is None:
        break
    found = [
      a.checkpoint_key
      for a in (node.attributes if node is not None else ())
      if a.name == _VARIABLE_VALUE
    ]
    keys.append(found[0] if found else None)
  return keys


def _chunks(folds: List[_Fold], keys: List[str]):
  """(fold, key) pairs in chunks of at most the largest fold's bytes."""
  sizes = [f.weight.shape.num_elements() * f.weight.dtype.size for f in folds]
  limit = max(sizes)
  chunk, total = [], 0
  for fold, key, size in zip(folds, keys, sizes):
    if chunk and total + size > limit:
      yield chunk
      chunk, total = [], 0
    chunk.append((fold, key))
    total += size
  if chunk:
    yield chunk


def _move_checkpoint(prefix: str, new_prefix: str) -> str:
  """Renames the checkpoint files of `prefix` (index and data) to
  `new_prefix`; returns `new_prefix`."""
  for path in glob.glob(glob.escape(prefix) + '.*'):
    os.rename(path, new_prefix + path[len(prefix) :])
  return new_prefix
