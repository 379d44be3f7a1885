"""The TFLite format: a quantized, sparse and checked flatbuffer.

    report = convert_and_check(saved_dir, ['serving_default'],
                               '/out/m.tflite', quantize='int8',
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

The weights are stored dense or in TFLite's sparse encoding, whichever is
smaller and loses nothing (`tflite_encoding`). Every written model is
checked: `tflite_read.read_weights` decodes the weights from the flatbuffer
itself (the report's sparsity is what the file holds), and the TFLite model
runs on the representative inputs (or random ones) beside the float
SavedModel; the report has the largest absolute difference and, for
classifier outputs, how often both pick the same class. As a format of
`driver.write`, it converts the SavedModel written beside it, or a
temporary one (`driver.Workspace.saved_model_dir`).
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from graph_prune import errors
from graph_prune.export import native_logs
from graph_prune.export import representative as representative_lib
from graph_prune.export import sizes
from graph_prune.export import tflite_read
from graph_prune.export.formats import base
from graph_prune.export.formats import proto_limit
from graph_prune.export.formats import tflite_encoding
from graph_prune.export.formats.tflite_convert import convert_saved_model
from graph_prune.export.formats.tflite_convert import read_inputs

NAME = 'tflite'
QUANTIZE_MODES = ('none', 'dynamic', 'float16', 'int8')
SPARSE_CHOICES = ('auto', 'on', 'off')


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
    path: the file, once written to its final path (None before).
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
  path: Optional[str] = None

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


@dataclasses.dataclass(frozen=True)
class Options:
  """The TFLite file's options.

  Attributes:
    quantize: one of `QUANTIZE_MODES`.
    representative_data: inputs for int8 calibration and the check (see
      `graph_prune.model.data_inputs`), or None.
    sparse: one of `SPARSE_CHOICES`.
  """

  quantize: str = 'none'
  representative_data: Any = None
  sparse: str = 'auto'


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
    representative_data: see `graph_prune.model.data_inputs`, or a
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
    else read_inputs(saved_model_dir, signature_keys, representative_data)
  )
  # 'on' converts the dense encoding too, as the reference its weights are
  # checked against (see tflite_encoding.sparse_loss).
  choices = (False,) if sparse == 'off' else (True, False)
  candidates = {
    encoded: convert_saved_model(
      saved_model_dir, signature_keys, quantize, representative, encoded
    )
    for encoded in choices
  }
  encoded, measured, lost = tflite_encoding.choose_encoding(
    candidates, sparse, quantize
  )
  args = (
    saved_model_dir,
    signature_keys,
    None if representative is None else representative.batches,
  )
  with native_logs.captured():  # the interpreter's delegate lines
    encoded, checked, rejected = tflite_encoding.run_checked(
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


def _check(request: base.Request) -> None:
  options = request.options or Options()
  check_options(options.quantize, options.sparse, options.representative_data)


def _prepare(source: base.Source, options: Options):
  proto_limit.check_fits(source.module.model_variables, 'TFLite', source.what)
  return source, options


def _write(prepared, path: str, workspace) -> TFLiteReport:
  source, options = prepared
  # Looked up here, so that tests can replace the conversion step.
  return convert_and_check(
    workspace.saved_model_dir(),
    list(source.distinct_keys),
    path,
    options.quantize,
    options.representative_data,
    options.sparse,
  )


FORMAT = base.Format(
  name=NAME,
  is_file=True,
  label='TFLite',
  options=Options,
  check=_check,
  prepare=_prepare,
  write=_write,
)
