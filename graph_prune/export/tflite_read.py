"""Reading a TFLite flatbuffer back: its weights, and running it.

    for w in read_weights(flatbuffer):       # every constant of rank >= 2
      print(w.name, w.shape, w.sparsity, w.sparse_encoded)
    outputs = run_signature(flatbuffer, 'serving_default', {'x': x})

A converted model is checked by what it holds, not by what the converter was
asked for: `read_weights` decodes every constant weight tensor from the
flatbuffer's own buffers, undoing TFLite's sparse encoding (the
`SparsityParameters` of the schema: a traversal order, optional blocks, and
per dimension either a dense size or CSR segments and indices), so the zeros
counted are the zeros the file really holds, in their positions.

`compare_with_saved_model` runs a TFLite model beside the SavedModel it was
converted from, on the same inputs.

The interpreter is LiteRT's (`ai_edge_litert.interpreter`) when the
`ai-edge-litert` package is installed; otherwise `tf.lite.Interpreter`, which
current TensorFlow deprecates with a warning in favour of LiteRT.
"""

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from graph_prune import _tf_internal

# TensorType values of the schema -> NumPy dtypes, for the weight types the
# converter writes (float, float16, and the quantized integer types).
_DTYPES = {0: np.float32, 1: np.float16, 3: np.uint8, 9: np.int8, 7: np.int16}
# DimensionType of the schema.
_DENSE = 0


@dataclasses.dataclass(frozen=True)
class TFLiteWeight:
  """A constant weight tensor of a TFLite model, decoded to dense.

  Attributes:
    name: the tensor's name in the flatbuffer.
    shape: its dense shape (TFLite's layout, e.g. [out, in] for a
      fully connected kernel).
    dtype: the stored element type ('float32', 'float16', 'int8', ...).
    values: the dense stored values (quantized integers for int8).
    zero_point: the value that stands for 0.0 (0 for float types).
    sparse_encoded: whether the file stores it in TFLite's sparse format.
  """

  name: str
  shape: Tuple[int, ...]
  dtype: str
  values: np.ndarray
  zero_point: int
  sparse_encoded: bool

  @property
  def size(self) -> int:
    return int(self.values.size)

  @property
  def zeros(self) -> np.ndarray:
    """Boolean array: where the weight is exactly 0.0."""
    return self.values == self.zero_point

  @property
  def sparsity(self) -> float:
    return float(np.mean(self.zeros)) if self.size else 0.0


def read_weights(flatbuffer: bytes) -> List[TFLiteWeight]:
  """Every constant tensor of rank >= 2 and a weight type, decoded to dense.

  Args:
    flatbuffer: the bytes of a .tflite file.

  Returns:
    One `TFLiteWeight` per such tensor of every subgraph, in file order.
  """
  schema = _tf_internal.tflite_schema()
  model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
  found = []
  for subgraph in model.subgraphs or ():
    for tensor in subgraph.tensors or ():
      data = model.buffers[tensor.buffer].data
      shape = tuple(
        int(d) for d in (tensor.shape if tensor.shape is not None else ())
      )
      if data is None or len(shape) < 2 or tensor.type not in _DTYPES:
        continue
      stored = np.frombuffer(bytes(data), dtype=_DTYPES[tensor.type])
      if tensor.sparsity is not None:
        values = densify(stored, shape, tensor.sparsity)
      else:
        values = stored.reshape(shape)
      found.append(
        TFLiteWeight(
          name=_text(tensor.name),
          shape=shape,
          dtype=np.dtype(_DTYPES[tensor.type]).name,
          values=values,
          zero_point=_zero_point(tensor),
          sparse_encoded=tensor.sparsity is not None,
        )
      )
  return found


def densify(stored: np.ndarray, shape, sparsity) -> np.ndarray:
  """Decodes TFLite's sparse tensor format into a dense array.

  The format (tensorflow/lite/schema/schema.fbs, `SparsityParameters`) walks
  the dimensions in `traversal_order`, the first len(shape) being the
  original dimensions (divided by their block size where blocked) and the
  rest the block dimensions of `block_map`. A DENSE dimension enumerates
  `dense_size` positions; a SPARSE_CSR one the indices
  `array_indices[segments[p]:segments[p + 1]]` of its parent position p. The
  position reached at the last level indexes the stored values.

  Args:
    stored: the stored values, in storage order.
    shape: the dense shape.
    sparsity: the tensor's `SparsityParametersT`.

  Returns:
    The dense array of `shape`, zeros where nothing is stored.
  """
  rank = len(shape)
  order = list(sparsity.traversalOrder)
  block_map = list(sparsity.blockMap if sparsity.blockMap is not None else ())
  metadata = sparsity.dimMetadata
  positions = np.zeros(1, dtype=np.int64)
  coords = np.zeros((len(order), 1), dtype=np.int64)
  for level, dim in enumerate(metadata):
    if dim.format == _DENSE:
      size = int(dim.denseSize)
      parents = np.repeat(np.arange(positions.size), size)
      local = np.tile(np.arange(size), positions.size)
      positions = positions[parents] * size + local
    else:
      segments = np.asarray(dim.arraySegments.values, dtype=np.int64)
      indices = np.asarray(dim.arrayIndices.values, dtype=np.int64)
      starts, ends = segments[positions], segments[positions + 1]
      parents = np.repeat(np.arange(positions.size), ends - starts)
      offsets = np.arange(parents.size) - np.repeat(
        np.cumsum(ends - starts) - (ends - starts), ends - starts
      )
      positions = starts[parents] + offsets
      local = indices[positions]
    coords = coords[:, parents]
    coords[level] = local
  by_dim = {order[level]: coords[level] for level in range(len(order))}
  dense_index = []
  for d in range(rank):
    index = by_dim[d]
    if d in block_map:
      block_dim = rank + block_map.index(d)
      block = int(metadata[order.index(block_dim)].denseSize)
      index = index * block + by_dim[block_dim]
    dense_index.append(index)
  # A block may overhang the dimension (a 1x16 block of a 6-wide kernel):
  # decode into the padded shape, then crop.
  padded = [
    int(max(shape[d], np.max(dense_index[d], initial=-1) + 1))
    for d in range(rank)
  ]
  dense = np.zeros(padded, dtype=stored.dtype)
  dense[tuple(dense_index)] = stored[positions]
  return dense[tuple(slice(0, n) for n in shape)]


def interpreter_name() -> str:
  """Which interpreter `run_signature` uses, for reports."""
  return _interpreter_class()[1]


def _interpreter_class():
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  except ImportError:
    return tf.lite.Interpreter, 'tf.lite.Interpreter'
  return Interpreter, 'LiteRT (ai-edge-litert)'


def make_interpreter(flatbuffer: bytes):
  """An interpreter for `flatbuffer`: LiteRT's if installed, else tf.lite's."""
  interpreter_class, _ = _interpreter_class()
  return interpreter_class(model_content=flatbuffer)


def run_signature(
  flatbuffer: bytes, key: str, inputs: Mapping[str, np.ndarray]
) -> Dict[str, np.ndarray]:
  """Runs one signature of a TFLite model on a batch of inputs.

  Args:
    flatbuffer: the .tflite bytes.
    key: the signature key.
    inputs: input name -> array (the batch size may differ from the
      converted one; the runner resizes).

  Returns:
    Output name -> array.
  """
  runner = make_interpreter(flatbuffer).get_signature_runner(key)
  outputs = runner(**{name: np.asarray(v) for name, v in inputs.items()})
  return {name: np.asarray(v) for name, v in outputs.items()}


def compare_with_saved_model(
  flatbuffer: bytes,
  saved_model_dir: str,
  signature_keys: Sequence[str],
  representative: Any = None,
):
  """Runs both models on the same inputs: (max abs diff, top-1, examples).

  Args:
    flatbuffer: the .tflite bytes.
    saved_model_dir: the SavedModel it was converted from.
    signature_keys: the signatures to compare.
    representative: the inputs: signature key -> batches, each {input
      name: array} (`representative.RepresentativeInputs.batches`), or one
      array for single-input signatures; signatures without any get 8
      deterministic random inputs per numeric input.

  Returns:
    The largest |TFLite - SavedModel| over every output (NaN when any
    output is NaN, so a file that computes NaN never passes for an exact
    one), the share of examples whose classifier outputs (rank 2, more than
    one column) pick the same class, or None, and the number of examples.
  """
  loaded = tf.saved_model.load(saved_model_dir)
  rng = np.random.RandomState(0)
  worst, agree, total, examples = 0.0, 0, 0, 0
  for key in signature_keys:
    function = loaded.signatures[key]
    batches = _check_inputs(key, function, representative, rng)
    if batches is None:
      continue
    count = 0
    for inputs in batches:
      tensors = {k: tf.constant(v) for k, v in inputs.items()}
      want = {k: np.asarray(v) for k, v in function(**tensors).items()}
      got = run_signature(flatbuffer, key, inputs)
      count += len(next(iter(inputs.values())))
      for name, a in want.items():
        b = got[name].astype(np.float64)
        # np.max, not max(): a NaN output must make the difference NaN
        # (max(0.0, nan) is 0.0).
        diff = np.max(np.abs(a.astype(np.float64) - b))
        worst = float(np.max([worst, diff]))
        if a.ndim == 2 and a.shape[1] > 1:
          agree += int(np.sum(a.argmax(1) == b.argmax(1)))
          total += a.shape[0]
    examples = max(examples, count)
  return worst, (agree / total if total else None), examples


def _check_inputs(
  key, function, representative, rng
) -> Optional[List[Dict[str, Any]]]:
  specs = function.structured_input_signature[1]
  if isinstance(representative, Mapping) and key in representative:
    return list(representative[key])
  if isinstance(representative, np.ndarray) and len(specs) == 1:
    (name,) = specs
    return [{name: representative}]
  inputs = {}
  for name, spec in specs.items():
    if spec.shape.rank is None or not spec.dtype.is_floating:
      return None
    shape = [8 if d is None else d for d in spec.shape]
    inputs[name] = rng.standard_normal(shape).astype(spec.dtype.as_numpy_dtype)
  return [inputs]


def _zero_point(tensor) -> int:
  quantization = tensor.quantization
  if quantization is None or quantization.zeroPoint is None:
    return 0
  points = np.asarray(quantization.zeroPoint)
  # Weights are quantized symmetrically (zero point 0), per tensor or per
  # channel; a single non-zero point is honoured.
  return int(points[0]) if points.size == 1 else 0


def _text(name) -> str:
  if name is None:
    return ''
  return name.decode('utf-8') if isinstance(name, bytes) else str(name)
