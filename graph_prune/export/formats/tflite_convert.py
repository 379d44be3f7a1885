"""TFLite's converter, guarded: its log lines kept quiet, its failure one line.

    flatbuffer = convert_saved_model(saved_dir, ['serving_default'], 'int8',
                                     representative_inputs, sparse=True)

The converter (MLIR, C++) prints pages of log lines and raises errors whose
first line is an MLIR location; `convert_saved_model` runs it inside
`native_logs.captured()` (its lines follow TF_CPP_MIN_LOG_LEVEL, off the
binaries' terminal) and turns any failure into one `TFLiteExportError`
sentence with what to try.
"""

from typing import Any, Sequence
import warnings

import tensorflow as tf

from graph_prune import errors
from graph_prune.export import native_logs
from graph_prune.export import representative as representative_lib

_INTERPRETER_WARNING = r'(?s).*tf\.lite\.Interpreter is deprecated'


def read_inputs(saved_model_dir, signature_keys, representative):
  """`representative` read against the signatures, unless it already is."""
  if isinstance(representative, representative_lib.RepresentativeInputs):
    return representative
  return representative_lib.read_representative(
    saved_model_dir, signature_keys, representative
  )


def convert_saved_model(
  saved_model_dir: str,
  signature_keys: Sequence[str],
  quantize: str = 'none',
  representative: Any = None,
  sparse: bool = True,
) -> bytes:
  """Converts a (stripped) SavedModel to a TFLite flatbuffer, guarded.

  Args:
    saved_model_dir: the SavedModel.
    signature_keys: its signatures to convert.
    quantize: one of `tflite.QUANTIZE_MODES`.
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
    converter.representative_dataset = read_inputs(
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
  if 'neither a custom op nor a flex op' in message:
    # An op TFLite has no builtin for, as used (a transformer's causal mask
    # slices a shape the signature leaves open); TF Select ops would hold
    # it, but no interpreter installed here runs them to check the file.
    return errors.TFLiteExportError(
      f'The TFLite converter failed on signatures {list(signature_keys)} '
      f'({message}): TFLite has no builtin op for it as traced. Give the '
      'signature fixed shapes (apply_pruning(model, hparams, '
      "input_signature=[...]) with known dimensions, e.g. a transformer's "
      'sequence length), or export a SavedModel instead.'
    )
  return errors.TFLiteExportError(
    f'The TFLite converter failed on signatures {list(signature_keys)} '
    f'with quantize={quantize!r} ({message}); {also}as TFLite builtin ops '
    'are used, e.g. a recurrent layer needs a fixed batch size in the input '
    'signature: prune with apply_pruning(model, hparams, '
    'input_signature=[tf.TensorSpec([1, ...], tf.float32)]) and export '
    'that model.'
  )


def _converter_message(error) -> str:
  """The first error of a TFLite converter message, without MLIR locations."""
  lines = str(error).splitlines() or [type(error).__name__]
  line = next((text for text in lines if 'error:' in text), lines[0])
  line = line.split('error:', 1)[-1]
  return line.rsplit('): ', 1)[-1].strip()
