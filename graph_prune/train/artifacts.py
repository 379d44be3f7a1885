"""What a run's exports are worth: test accuracy and size beside dense.

    dense = artifacts.dense_reference(model)        # the unpruned float size
    exports = artifacts.with_accuracy(exports, x_test, y_test)

The final table compares every artifact with the dense float SavedModel of
the same architecture (the model's weights saved unmasked with
`tf.saved_model.save`, as a user would ship it without pruning), and shows
what each artifact itself predicts on the test split: a SavedModel through
its `serving_default` signature, a TFLite file through the interpreter
(`graph_prune.export.tflite_read`), so a quantization that costs accuracy
shows in the table.
"""

import dataclasses
import os
import tempfile
from typing import List, Sequence

import numpy as np
import tensorflow as tf

from graph_prune.export import native_logs
from graph_prune.export import sizes
from graph_prune.export import tflite_read
from graph_prune.train import versioned_export

_BATCH = 1000  # test examples per call


def dense_reference(model) -> versioned_export.Export:
  """The size of `model` as a dense float SavedModel (written, then removed).

  Args:
    model: the Keras 3 model, unmasked weights.

  Returns:
    An `Export` of kind 'dense' with no path kept (`written` False).
  """
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'dense')
    # tf.saved_model.save, not Keras 3's model.export(), which stores every
    # variable twice (twice the bytes of the weights) and would flatter
    # every share of it.
    tf.saved_model.save(model, path)
    size = sizes.measure(path)
  return versioned_export.Export(
    'dense', '(dense float SavedModel, not kept)', size.raw, size.gzipped, False
  )


def accuracy(path: str, x: np.ndarray, y: np.ndarray) -> float:
  """Top-1 accuracy of the SavedModel or .tflite file at `path` on (x, y)."""
  if path.endswith('.tflite'):
    with open(path, 'rb') as f:
      flatbuffer = f.read()
    with native_logs.captured():  # the interpreter's delegate lines
      interpreter = tflite_read.make_interpreter(flatbuffer)
      runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()

    def predict(batch):
      (logits,) = runner(**{name: batch}).values()
      return logits

  else:
    signature = tf.saved_model.load(path).signatures['serving_default']
    (name,) = signature.structured_input_signature[1]

    def predict(batch):
      (logits,) = signature(**{name: tf.constant(batch)}).values()
      return logits.numpy()

  correct = 0
  with native_logs.captured():
    for start in range(0, len(x), _BATCH):
      logits = predict(x[start : start + _BATCH].astype(np.float32))
      correct += int(np.sum(logits.argmax(-1) == y[start : start + _BATCH]))
  return correct / max(len(x), 1)


def with_accuracy(
  exports: Sequence[versioned_export.Export], x: np.ndarray, y: np.ndarray
) -> List[versioned_export.Export]:
  """`exports`, each with its `test_accuracy` measured on (x, y)."""
  return [
    dataclasses.replace(e, test_accuracy=accuracy(e.path, x, y))
    for e in exports
  ]
