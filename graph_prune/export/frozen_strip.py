"""Formats that hold weights as constants: frozen, within the proto limit.

    graph = freeze(stripped_fn, 'signature serving_default')  # --frozen_graph

`freeze` turns a stripped `tf.function` (weights as variables, see
stripped_model.py) into contrib's all-constant GraphDef, only when that
format is asked for.

A GraphDef is a protocol buffer, limited to 2 GB serialised; the TFLite
flatbuffer has the same limit. `check_fits` refuses, before anything is
frozen or written, a model whose weights alone exceed it, with the formats
that do work (the SavedModel keeps weights in `variables/`, without limit).
"""

import dataclasses
from typing import Any, Iterable, Tuple

import numpy as np
import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.export.stripped_function import first_line
from graph_prune.passes import fold_checks

# Protocol buffers (a GraphDef) and flatbuffers (TFLite) are limited to 2 GB.
PROTO_LIMIT_BYTES = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class FrozenGraph:
  """A computation frozen into one all-constant GraphDef.

  Attributes:
    graph_def: the GraphDef (every weight a Const; no variable op).
    input_names, output_names: tensor names of its flat inputs and outputs.
  """

  graph_def: Any
  input_names: Tuple[str, ...]
  output_names: Tuple[str, ...]


def weight_bytes(variables: Iterable[Any]) -> int:
  """Bytes of the values of `variables`, each counted once."""
  seen, total = set(), 0
  for v in variables:
    if id(v.handle) in seen:
      continue
    seen.add(id(v.handle))
    total += int(np.prod(v.shape, dtype=np.int64)) * tf.as_dtype(v.dtype).size
  return total


def check_fits(variables: Iterable[Any], fmt: str, what: str) -> None:
  """Raises unless the weights of `variables` fit a 2 GB proto format.

  Args:
    variables: the variables the format would freeze into constants.
    fmt: the format, for the message ('a frozen GraphDef', 'TFLite').
    what: what is exported, for the message.

  Raises:
    ProtoLimitError: naming the limit, the size and the formats that work.
  """
  size = weight_bytes(variables)
  if size > PROTO_LIMIT_BYTES:
    raise errors.ProtoLimitError(
      f'Cannot write {what} as {fmt}: its weights take {size / 2**30:.2f} '
      f"GiB, over the format's 2 GiB limit ({PROTO_LIMIT_BYTES} bytes); "
      'export a SavedModel (export_saved_model, or strip_masks without '
      '--frozen_graph/--tflite), which keeps weights in variables/ without '
      'a limit.'
    )


def freeze(function, what: str) -> FrozenGraph:
  """contrib's frozen GraphDef of a stripped function: all constants.

  Args:
    function: a stripped `tf.function` with an input signature (or its
      `ConcreteFunction`).
    what: what it computes, for messages.

  Raises:
    ProtoLimitError: its weights exceed the 2 GB proto limit.
    FoldError: it cannot be frozen.
  """
  cf = function
  if not isinstance(cf, tf.types.experimental.ConcreteFunction):
    cf = function.get_concrete_function()
  check_fits(cf.variables, 'a frozen GraphDef', what)
  frozen = _freeze(cf, what)
  graph_def = frozen.graph.as_graph_def()
  fold_checks.check_stripped(graph_def, {}, what)
  return FrozenGraph(
    graph_def,
    tuple(t.name for t in frozen.inputs),
    tuple(t.name for t in frozen.outputs),
  )


def _freeze(cf, what):
  try:
    return _tf_internal.freeze_function(cf)
  except (ValueError, TypeError, tf.errors.OpError) as e:
    raise errors.FoldError(
      f'Cannot freeze {what} into constants: {first_line(e)}'
    ) from e
