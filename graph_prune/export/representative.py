"""Representative inputs of a TFLite conversion: read, checked, fed.

    inputs = read_representative(saved_model_dir, ['serving_default'], data)
    converter.representative_dataset = inputs.calibration(256)

Full-integer quantization calibrates activation ranges on example inputs,
and every TFLite export is compared with the float model on inputs. Both
read what the user hands in with `graph_prune.model.data_inputs`, against each
converted signature's inputs, before anything is converted or written: an
array, a list of batches, a `tf.data.Dataset` (batched or not, labels
ignored), a dict per input name, or an `.npz` / `.npy` path; integer data is
never divided by its dtype's maximum (an `.npz` with `x_train` is scaled as
the training binary scaled it). Bad data is a one-line
`RepresentativeDataError`, never the converter's crash (Inf in calibration
data kills the process inside TFLite's quantizer).
"""

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.model import data_inputs

# At most this many examples are read: the comparison with the float model
# uses them all, calibration the first `CALIBRATION_EXAMPLES`.
MAX_EXAMPLES = data_inputs.MAX_EXAMPLES
CALIBRATION_EXAMPLES = 256
_WHAT = 'Representative data'

Batch = Dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class RepresentativeInputs:
  """Representative inputs read against each signature.

  Attributes:
    batches: signature key -> batches, each {input name: array} ready to
      feed the signature (one batch unless its batch dimension is fixed).
    fixed_batch: signature key -> whether its batch dimension is fixed.
  """

  batches: Mapping[str, List[Batch]]
  fixed_batch: Mapping[str, bool]

  @property
  def examples(self) -> int:
    """How many examples each signature gets."""
    first = next(iter(self.batches.values()))
    return sum(len(next(iter(b.values()))) for b in first)

  def calibration(self, limit: int = CALIBRATION_EXAMPLES) -> Callable:
    """A TFLite `representative_dataset`: one example (or fixed batch) a step.

    With several signatures each step is (key, inputs), as the converter
    wants for a multi-signature model.
    """
    keys = list(self.batches)

    def steps(key) -> Iterator[Batch]:
      count = 0
      for batch in self.batches[key]:
        size = len(next(iter(batch.values())))
        step = size if self.fixed_batch[key] else 1
        for start in range(0, size, step):
          if count >= limit:
            return
          yield {k: v[start : start + step] for k, v in batch.items()}
          count += step

    def dataset():
      for samples in zip(*(steps(key) for key in keys)):
        for key, sample in zip(keys, samples):
          yield sample if len(keys) == 1 else (key, sample)

    return dataset


def check_data(data: Any) -> None:
  """Checks what can be checked without the model: file, dtype, values.

  A float input of any shape stands in for the model's inputs (a dict of
  arrays for a dict of them), so a missing or truncated file, an object,
  string or complex dtype, empty data and NaN or Inf are refused before
  anything is stripped or staged.

  Raises:
    RepresentativeDataError: naming the value and the fix.
  """
  if isinstance(data, Mapping):
    signature = {str(k): tf.TensorSpec(None, tf.float32) for k in data}
  else:
    signature = tf.TensorSpec(None, tf.float32)
  try:
    data_inputs.read_example_inputs(data, signature, what=_WHAT)
  except errors.ExampleDataError as e:
    raise errors.RepresentativeDataError(str(e)) from e


def read_representative(
  saved_model_dir: str, signature_keys: Sequence[str], data: Any
) -> RepresentativeInputs:
  """Reads `data` against the inputs of each signature of a SavedModel.

  Args:
    saved_model_dir: the (stripped) SavedModel to convert.
    signature_keys: its signatures to convert.
    data: see `graph_prune.model.data_inputs.read_example_inputs`.

  Returns:
    A `RepresentativeInputs`.

  Raises:
    RepresentativeDataError: the data cannot feed a signature (which one,
      which input, which dimension) or is bad in itself.
  """
  loaded = tf.saved_model.load(saved_model_dir)
  batches, fixed = {}, {}
  for key in signature_keys:
    specs = loaded.signatures[key].structured_input_signature[1]
    fixed[key] = any(
      s.shape.rank and s.shape[0] is not None for s in specs.values()
    )
    what = _WHAT if len(signature_keys) == 1 else f'{_WHAT} for {key!r}'
    try:
      batches[key] = data_inputs.read_example_inputs(
        data, specs, max_examples=MAX_EXAMPLES, what=what
      )
    except errors.ExampleDataError as e:
      raise errors.RepresentativeDataError(str(e)) from e
  return RepresentativeInputs(batches, fixed)
