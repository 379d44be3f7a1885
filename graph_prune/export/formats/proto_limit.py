"""The 2 GB limit of the formats that hold weights as constants.

    check_fits(module.model_variables, 'TFLite', 'the pruned model')

A GraphDef is a protocol buffer, limited to 2 GB serialised; the TFLite
flatbuffer has the same limit. `check_fits` refuses, before anything is
frozen or written, a model whose weights alone exceed it, with the formats
that do work (the SavedModel keeps weights in `variables/`, without limit).
Shared by frozen_graph.py and tflite.py, the two formats it limits.
"""

from typing import Any, Iterable

import numpy as np
import tensorflow as tf

from graph_prune import errors

# Protocol buffers (a GraphDef) and flatbuffers (TFLite) are limited to 2 GB.
PROTO_LIMIT_BYTES = 2**31 - 1


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
