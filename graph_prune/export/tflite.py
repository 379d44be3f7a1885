"""TFLite export of a stripped model: quantized, sparse, and checked.

    report = export_tflite(pruned, '/tmp/m.tflite', quantize='int8',
                           representative_data=x_train)
    print(report.to_text())   # sizes, zeros read back, error vs float model

Pruning and post-training quantization compound: the zeros of a pruned
weight compress well under gzip whatever the value type, and quantization
shrinks the values that are left. `quantize` is one of

  none     float32 weights and arithmetic;
  dynamic  int8 weights, float activations (dynamic-range quantization);
  float16  float16 weights, dequantized when loaded;
  int8     int8 weights and activations (full integer), calibrated on
           representative inputs, float inputs and outputs.

TFLite's sparse weight encoding (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`)
stores only the non-zero values of a weight plus index arrays. With int8
values an index can cost as much as the value it locates, so whether it
makes a file smaller depends on the mode and the sparsity: `sparse='auto'`
converts both ways and keeps the file whose gzipped size is smaller (the
report says which, and the other's size). The sparse file's decoded weights
must equal the dense file's: TFLite's converter can drop int8 weight blocks
(`_sparse_loss`), so a sparse file that lost weights is never kept ('auto')
or is an error ('on'); so is one that the interpreter cannot run or that
outputs NaN (float16 weights in 1x4 blocks lose their Densify op,
`_run_checked`).

Every written model is checked: `tflite_read.read_weights` decodes the
weights from the flatbuffer itself (the report's sparsity is what the file
holds), and the TFLite model runs on the representative inputs (or random
ones) beside the float SavedModel; the report has the largest absolute
difference and, for classifier outputs, how often both pick the same class.
"""

import dataclasses
import gzip
import os
import tempfile
from typing import Any, Callable, Optional, Sequence, Tuple
import warnings

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.export import frozen_strip
from graph_prune.export import native_logs
from graph_prune.export import output_paths
from graph_prune.export import representative as representative_lib
from graph_prune.export import sizes
from graph_prune.export import staging
from graph_prune.export import tflite_read

QUANTIZE_MODES = ('none', 'dynamic', 'float16', 'int8')
SPARSE_CHOICES = ('auto', 'on', 'off')
_INTERPRETER_WARNING = r'(?s).*tf\.lite\.Interpreter is deprecated'


@dataclasses.dataclass(frozen=True)
class TFLiteReport:
  """What a TFLite export wrote and how it compares with the float model.

  Attributes:
    quantize: the mode.
    sparse_encoded: whether weights use TFLite's sparse encoding.
    size: `sizes.Size` of the file written (None before it is measured).
    other_encoding_size: for `sparse='auto'`, the size the other encoding
      would have had.
    weights: (name, shape, dtype, sparsity, sparse_encoded) per weight
      tensor, read back from the flatbuffer.
    weight_sparsity: zeros / values over all those tensors.
    max_abs_diff: largest |TFLite - SavedModel| over the checked outputs.
    top1_agreement: fraction of checked inputs where both pick the same
      class (outputs of rank 2 with more than one column), else None.
    checked_examples: how many inputs were compared.
    interpreter: which interpreter ran the model.
    sparse_rejected: why the sparse encoding was not used although asked
      for ('auto'), or None.
  """

  quantize: str
  sparse_encoded: bool
  size: Optional[sizes.Size]
  other_encoding_size: Optional[sizes.Size]
  weights: Tuple[Tuple[str, Tuple[int, ...], str, float, bool], ...]
  weight_sparsity: float
  max_abs_diff: float
  top1_agreement: Optional[float]
  checked_examples: int
  interpreter: str
  sparse_rejected: Optional[str] = None

  def to_text(self) -> str:
    """The report for people, a few lines."""
    encoding = 'sparse' if self.sparse_encoded else 'dense'
    lines = [
      f'TFLite ({self.quantize}, {encoding} weights): weight sparsity read '
      f'back {self.weight_sparsity:.2%} over {len(self.weights)} tensors.'
    ]
    if self.size is not None:
      other = ''
      if self.other_encoding_size is not None:
        gzipped = sizes.format_bytes(self.other_encoding_size.gzipped)
        other = f' (the other encoding: {gzipped} gzipped)'
      lines.append(
        f'  size {sizes.format_bytes(self.size.raw)} raw, '
        f'{sizes.format_bytes(self.size.gzipped)} gzipped{other}'
      )
    agreement = (
      f', top-1 agreement {self.top1_agreement:.2%}'
      if self.top1_agreement is not None
      else ''
    )
    if self.sparse_rejected:
      lines.append(f'  sparse encoding rejected: {self.sparse_rejected}.')
    lines.append(
      f'  vs the float SavedModel on {self.checked_examples} inputs: max abs '
      f'diff {self.max_abs_diff:.3g}{agreement} ({self.interpreter}).'
    )
    return '\n'.join(lines)


def check_options(quantize: str, sparse: str, representative_data) -> None:
  """Raises for a bad mode, or missing or bad representative data.

  Called before anything is stripped or staged: the data is checked as far
  as it can be without the model's signature (`representative.check_data`:
  the file, the dtype, empty data, NaN or Inf); its shapes are checked
  against the signatures before the conversion.

  Raises:
    TFLiteExportError: unknown `quantize` or `sparse`.
    RepresentativeDataError: `quantize='int8'` without representative data,
      or data that no model could take.
  """
  if quantize not in QUANTIZE_MODES:
    raise errors.TFLiteExportError(
      f'Unknown TFLite quantization {quantize!r}; use one of '
      f'{", ".join(QUANTIZE_MODES)} (--quantize).'
    )
  if sparse not in SPARSE_CHOICES:
    raise errors.TFLiteExportError(
      f'Unknown sparse encoding choice {sparse!r}; use one of '
      f'{", ".join(SPARSE_CHOICES)}.'
    )
  if quantize == 'int8' and representative_data is None:
    raise errors.RepresentativeDataError(
      'Full-integer int8 quantization needs representative inputs to '
      'calibrate activation ranges; pass representative_data= (an array, a '
      'tf.data.Dataset of input batches or an .npz path; '
      '--representative_data=FILE.npz in strip_masks) or choose '
      '--quantize=dynamic.'
    )
  if representative_data is not None and not isinstance(
    representative_data, representative_lib.RepresentativeInputs
  ):
    representative_lib.check_data(representative_data)


def convert_saved_model(
  saved_model_dir: str,
  signature_keys: Sequence[str],
  quantize: str = 'none',
  representative: Any = None,
  sparse: bool = True,
) -> bytes:
  """Converts a (stripped) SavedModel to a TFLite flatbuffer, guarded.

  The converter runs inside `native_logs.captured()`: its C++ log lines
  follow TF_CPP_MIN_LOG_LEVEL (off the binaries' terminal), and its failure
  is one `TFLiteExportError` line, never a traceback.

  Args:
    saved_model_dir: the SavedModel.
    signature_keys: its signatures to convert.
    quantize: one of `QUANTIZE_MODES`.
    representative: for int8, a `representative.RepresentativeInputs` or
      data `read_representative` reads.
    sparse: use TFLite's sparse weight encoding.

  Raises:
    TFLiteExportError: the converter fails (the message has its first
      error line and what to try).
    RepresentativeDataError: int8 representative data that does not fit.
  """
  converter = tf.lite.TFLiteConverter.from_saved_model(
    saved_model_dir, signature_keys=list(signature_keys)
  )
  optimizations = [] if quantize == 'none' else [tf.lite.Optimize.DEFAULT]
  if sparse:
    optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
  converter.optimizations = optimizations
  if quantize == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  if quantize == 'int8':
    converter.representative_dataset = _read(
      saved_model_dir, signature_keys, representative
    ).calibration()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  try:
    with native_logs.captured() as logs, warnings.catch_warnings():
      # int8 calibration runs TF's own tf.lite.Interpreter, which warns that
      # it is deprecated; the warning is about TF's internals, not the user's.
      warnings.filterwarnings('ignore', message=_INTERPRETER_WARNING)
      return converter.convert()
  except Exception as e:  # pylint: disable=broad-except
    # The converter raises ConverterError and others, all with a message.
    raise _converter_error(e, logs.errors(), signature_keys, quantize) from e


def _converter_error(error, logged, signature_keys, quantize):
  message = _converter_message(error)
  if logged and not message:
    message = _converter_message(logged[0])
  other = 'none' if quantize == 'dynamic' else 'dynamic'
  also = (
    ''
    if quantize == 'none'
    else f"try quantize='{other}' (--quantize={other}), or "
  )
  return errors.TFLiteExportError(
    f'The TFLite converter failed on signatures {list(signature_keys)} '
    f'with quantize={quantize!r} ({message}); {also}as TFLite builtin ops '
    'are used, e.g. a recurrent layer needs a fixed batch size in the input '
    'signature: prune with apply_pruning(model, hparams, '
    'input_signature=[tf.TensorSpec([1, ...], tf.float32)]) and export '
    'that model.'
  )


def _read(saved_model_dir, signature_keys, representative):
  if isinstance(representative, representative_lib.RepresentativeInputs):
    return representative
  return representative_lib.read_representative(
    saved_model_dir, signature_keys, representative
  )


def convert_and_check(
  saved_model_dir: str,
  signature_keys: Sequence[str],
  path: str,
  quantize: str = 'none',
  representative_data: Any = None,
  sparse: str = 'auto',
  run_check: Callable[..., Any] = tflite_read.compare_with_saved_model,
) -> TFLiteReport:
  """Converts, picks the encoding, checks, and writes `path`.

  The representative data is read and checked against every signature
  first, so bad data never reaches the converter. Conversion and checks run
  inside `native_logs.captured()` (TFLite's C++ log lines follow
  TF_CPP_MIN_LOG_LEVEL).

  Args:
    saved_model_dir: the stripped float SavedModel (also the reference).
    signature_keys: its signatures to convert.
    path: the file to write (the caller stages it).
    quantize: one of `QUANTIZE_MODES`.
    representative_data: see `graph_prune.data_inputs`, or a
      `representative.RepresentativeInputs` already read; required for
      int8.
    sparse: 'auto' (the smaller gzipped file), 'on' or 'off'.
    run_check: runs a flatbuffer beside the SavedModel, with the arguments
      of `tflite_read.compare_with_saved_model`, and returns what it does;
      it raises RuntimeError when the interpreter cannot prepare or run the
      file. A parameter so that the fallback from a sparse file no runtime
      here can run to the dense one is testable whatever the installed
      runtime supports.

  Returns:
    A `TFLiteReport` (its `size` that of the bytes written).

  Raises:
    TFLiteExportError, RepresentativeDataError: bad options or data, or the
      converter failed.
  """
  check_options(quantize, sparse, representative_data)
  representative = (
    None
    if representative_data is None
    else _read(saved_model_dir, signature_keys, representative_data)
  )
  # 'on' converts the dense encoding too, as the reference its weights are
  # checked against (see _sparse_loss).
  choices = (False,) if sparse == 'off' else (True, False)
  candidates = {
    encoded: convert_saved_model(
      saved_model_dir, signature_keys, quantize, representative, encoded
    )
    for encoded in choices
  }
  encoded, measured, lost = _choose_encoding(candidates, sparse, quantize)
  args = (
    saved_model_dir,
    signature_keys,
    None if representative is None else representative.batches,
  )
  with native_logs.captured():  # the interpreter's delegate lines
    encoded, checked, rejected = _run_checked(
      candidates, encoded, sparse, quantize, lambda fb: run_check(fb, *args)
    )
  lost = rejected or lost
  diff, agreement, examples = checked
  flatbuffer = candidates[encoded]
  with open(path, 'wb') as f:
    f.write(flatbuffer)
  weights = tflite_read.read_weights(flatbuffer)
  values = sum(w.size for w in weights)
  zeros = sum(int(np.sum(w.zeros)) for w in weights)
  return TFLiteReport(
    quantize=quantize,
    sparse_encoded=encoded,
    size=measured[encoded],
    other_encoding_size=measured.get(not encoded),
    weights=tuple(
      (w.name, w.shape, w.dtype, w.sparsity, w.sparse_encoded) for w in weights
    ),
    weight_sparsity=zeros / values if values else 0.0,
    max_abs_diff=diff,
    top1_agreement=agreement,
    checked_examples=examples,
    interpreter=tflite_read.interpreter_name(),
    sparse_rejected=lost,
  )


def _choose_encoding(candidates, sparse: str, quantize: str):
  """(sparse encoding used?, sizes by encoding, what sparse lost or None).

  Raises:
    TFLiteExportError: 'on', and the sparse file lost weights.
  """
  measured = {k: _size_of(fb) for k, fb in candidates.items()}
  lost = _sparse_loss(candidates) if len(candidates) == 2 else None
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


def _run_checked(candidates, encoded: bool, sparse: str, quantize: str, run):
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


def _sparse_loss(candidates) -> Optional[str]:
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


def export_tflite(
  pruned,
  path: str,
  quantize: str = 'none',
  representative_data: Any = None,
  sparse: str = 'auto',
  overwrite: bool = False,
) -> TFLiteReport:
  """Writes a pruned model as a (quantized) TFLite file, masks folded in.

  The model is stripped (`graph_prune.strip`), saved to a temporary
  SavedModel, converted and checked against it; `path` appears only when
  all of that succeeded.

  Args:
    pruned: a `PrunedModel`.
    path: the .tflite file to write.
    quantize: 'none', 'dynamic', 'float16' or 'int8'.
    representative_data: inputs to calibrate int8 with and to compare on,
      read by `graph_prune.data_inputs.read_example_inputs`: an array
      (batch first), a list of batches, a batched or unbatched
      `tf.data.Dataset` (labels ignored), a dict per input name, or an
      `.npz` (`x_train`, `x`, `inputs`) / `.npy` path. Integer data is cast
      as it is, except an `.npz` with `x_train`, scaled as the training
      binary scaled it. Checked before anything is written.
    sparse: 'auto' keeps whichever weight encoding gives the smaller gzipped
      file; 'on' / 'off' force TFLite's sparse encoding or dense weights.
    overwrite: replace `path` if it exists.

  Returns:
    A `TFLiteReport`.

  Raises:
    TFLiteExportError, RepresentativeDataError: bad options or data (one
      line naming the value and the fix), or the converter failed.
    OutputExistsError: `path` exists and `overwrite` is False.
    OutputPathError: `path` is a directory or under a file.
    StripError, FoldError: as in `strip`.
  """
  # strip.py imports this module (strip_saved_model.py's write_tflite), so
  # strip is imported here.
  from graph_prune.export import strip as strip_lib  # pylint: disable=g-import-not-at-top

  check_options(quantize, sparse, representative_data)
  output_paths.check(path, 'path', is_file=True)
  staging.check_output(path, overwrite, 'overwrite=True')
  module = strip_lib.strip(pruned)
  frozen_strip.check_fits(module.model_variables, 'TFLite', 'the pruned model')
  keys = [strip_lib.DEFAULT_SIGNATURE]
  with tempfile.TemporaryDirectory() as tmp:
    saved = os.path.join(tmp, 'stripped')
    module.save(saved)
    # Checked against the signature before anything is staged.
    representative = (
      None
      if representative_data is None
      else _read(saved, keys, representative_data)
    )
    with staging.Staging(overwrite, 'overwrite=True') as stage:
      report = convert_and_check(
        saved, keys, stage.file(path), quantize, representative, sparse
      )
      stage.commit()
  return report


def _size_of(flatbuffer: bytes) -> sizes.Size:
  # The same bytes sizes.gzipped_size counts for a file (gzip -9, mtime 0).
  return sizes.Size(
    raw=len(flatbuffer),
    gzipped=len(gzip.compress(flatbuffer, compresslevel=9, mtime=0)),
  )


def _converter_message(error) -> str:
  """The first error of a TFLite converter message, without MLIR locations."""
  lines = str(error).splitlines() or [type(error).__name__]
  line = next((text for text in lines if 'error:' in text), lines[0])
  line = line.split('error:', 1)[-1]
  return line.rsplit('): ', 1)[-1].strip()
