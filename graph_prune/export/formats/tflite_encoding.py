"""Choosing TFLite's weight encoding: sparse only where it is smaller and right.

    encoded, measured, lost = choose_encoding(candidates, 'auto', 'int8')

TFLite's sparse weight encoding (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`)
stores only the non-zero values of a weight plus index arrays. With int8
values an index can cost as much as the value it locates, so whether it
makes a file smaller depends on the mode and the sparsity: 'auto' converts
both ways (`candidates`: sparse encoded? -> flatbuffer) and keeps the file
whose gzipped size is smaller. The sparse file's decoded weights must equal
the dense file's: TFLite's converter can drop int8 weight blocks
(`sparse_loss`), so a sparse file that lost weights is never kept ('auto')
or is an error ('on'); so is one that the interpreter cannot run or that
outputs NaN (float16 weights in 1x4 blocks lose their Densify op,
`run_checked`).
"""

import gzip
from typing import Optional

import numpy as np

from graph_prune import errors
from graph_prune.export import sizes
from graph_prune.export import tflite_read


def choose_encoding(candidates, sparse: str, quantize: str):
  """(sparse encoding used?, sizes by encoding, what sparse lost or None).

  Raises:
    TFLiteExportError: 'on', and the sparse file lost weights.
  """
  measured = {k: size_of(fb) for k, fb in candidates.items()}
  lost = sparse_loss(candidates) if len(candidates) == 2 else None
  if lost and sparse == 'on':
    raise errors.TFLiteExportError(
      f"TFLite's sparse weight encoding changed {lost} with "
      f'quantize={quantize!r} (a converter bug with weight blocks that '
      "overhang a dimension); pass sparse='auto' or 'off' "
      '(--tflite_sparse=auto).'
    )
  if sparse == 'on':
    return True, measured, None
  if lost or sparse == 'off':
    return False, measured, lost and f'it changed {lost}'
  return (
    min(measured, key=lambda k: (measured[k].gzipped, not k)),
    measured,
    None,
  )


def run_checked(candidates, encoded: bool, sparse: str, quantize: str, run):
  """(encoding used, what `run` returned for it, why sparse was rejected).

  A sparse file is rejected ('auto': the dense one is checked and kept;
  'on': an error) when the interpreter cannot run it (XNNPack cannot
  prepare some sparse weights) or it outputs NaN: TF 2.21's converter
  feeds float16 weights in 1x4 blocks (block_height=4 in Keras) to
  Dequantize with no Densify op.

  Raises:
    TFLiteExportError: the kept file cannot run, or 'on' and the sparse
      file outputs NaN.
  """
  try:
    checked = run(candidates[encoded])
  except RuntimeError as e:  # the interpreter cannot prepare or run it
    if not (encoded and sparse == 'auto'):
      raise _run_error(e, quantize, encoded) from e
    rejected = f'{tflite_read.interpreter_name()} cannot run it ({_line(e)})'
    return False, run(candidates[False]), rejected
  if not (encoded and np.isnan(checked[0])):
    return encoded, checked, None
  if sparse == 'on':
    raise errors.TFLiteExportError(
      f'The TFLite model with sparse weights (quantize={quantize!r}) '
      'differs from the float model by NaN (a converter bug with '
      "block-sparse float16 weights); pass sparse='auto' or 'off' "
      '(--tflite_sparse=auto).'
    )
  return False, run(candidates[False]), 'its outputs are NaN'


def sparse_loss(candidates) -> Optional[str]:
  """What the sparse candidate's weights lost against the dense one's.

  Both conversions quantize the same way, so their decoded weights must be
  equal. TFLite's converter (TF 2.21) encodes an int8 weight in 1x16 blocks
  and drops the blocks that overhang a dimension narrower than 16 (or its
  ragged end), silently zeroing whole rows; that is caught here.

  Returns:
    None when equal, else which tensor differs and by how many values.
  """

  def key(w):
    return (w.shape, w.dtype, w.values.tobytes())

  sparse = sorted(tflite_read.read_weights(candidates[True]), key=key)
  dense = sorted(tflite_read.read_weights(candidates[False]), key=key)
  if [w.shape for w in sparse] != [w.shape for w in dense]:
    return 'the set of weight tensors'
  for s, d in zip(sparse, dense):
    if s.dtype != d.dtype or not np.array_equal(s.values, d.values):
      differ = int(np.sum(s.values != d.values))
      return f'{differ} of {d.size} values of weight {list(d.shape)}'
  return None


def size_of(flatbuffer: bytes) -> sizes.Size:
  """The `sizes.Size` the file of these bytes will have."""
  # The same bytes sizes.gzipped_size counts for a file (gzip -9, mtime 0).
  return sizes.Size(
    raw=len(flatbuffer),
    gzipped=len(gzip.compress(flatbuffer, compresslevel=9, mtime=0)),
  )


def _run_error(error, quantize, encoded):
  encoding = 'sparse' if encoded else 'dense'
  return errors.TFLiteExportError(
    f'{tflite_read.interpreter_name()} cannot run the converted TFLite model '
    f'(quantize={quantize!r}, {encoding} weights): {_line(error)}; try '
    "another quantization, or sparse='off' (--tflite_sparse=off)."
  )


def _line(error) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__
