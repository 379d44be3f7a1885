"""`export_tflite`: a pruned model as a (quantized) TFLite file, checked.

    report = export_tflite(pruned, '/tmp/m.tflite', quantize='int8',
                           representative_data=x_train)
    print(report.to_text())   # sizes, zeros read back, error vs float model

The TFLite format itself (quantization modes, the sparse encoding, the
check against the float model, `TFLiteReport`) is
graph_prune/export/formats/tflite.py; its names are importable from here
too, as they were before it moved. `export_tflite` strips the model and
asks the export driver (`formats/driver.py`) for that one format.
"""

from typing import Any

from graph_prune.export import strip as strip_lib
from graph_prune.export.formats import base
from graph_prune.export.formats import driver
from graph_prune.export.formats import tflite as tflite_format

# Importable from here as before the format moved.
QUANTIZE_MODES = tflite_format.QUANTIZE_MODES
SPARSE_CHOICES = tflite_format.SPARSE_CHOICES
TFLiteReport = tflite_format.TFLiteReport
check_options = tflite_format.check_options
convert_and_check = tflite_format.convert_and_check
convert_saved_model = tflite_format.convert_saved_model


def export_tflite(
  pruned,
  path: str,
  quantize: str = 'none',
  representative_data: Any = None,
  sparse: str = 'auto',
  overwrite: bool = False,
  shrink: bool = False,
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
      read by `graph_prune.model.data_inputs.read_example_inputs`: an array
      (batch first), a list of batches, a batched or unbatched
      `tf.data.Dataset` (labels ignored), a dict per input name, or an
      `.npz` (`x_train`, `x`, `inputs`) / `.npy` path. Integer data is cast
      as it is, except an `.npz` with `x_train`, scaled as the training
      binary scaled it. Checked before anything is written.
    sparse: 'auto' keeps whichever weight encoding gives the smaller gzipped
      file; 'on' / 'off' force TFLite's sparse encoding or dense weights.
    overwrite: replace `path` if it exists.
    shrink: remove zero units, channels and attention heads first
      (`graph_prune.shrink`), so the file holds the smaller kernels.

  Returns:
    A `TFLiteReport` (with the file's `path` and `size`).

  Raises:
    TFLiteExportError, RepresentativeDataError: bad options or data (one
      line naming the value and the fix), or the converter failed.
    OutputExistsError: `path` exists and `overwrite` is False.
    OutputPathError: `path` is a directory or under a file.
    ProtoLimitError: the weights exceed TFLite's 2 GB limit.
    StripError, FoldError: as in `strip`.
  """
  options = tflite_format.Options(quantize, representative_data, sparse)
  requests = [base.Request(tflite_format.NAME, path, 'path', options)]
  driver.check_requests(requests, overwrite)
  keys = (strip_lib.DEFAULT_SIGNATURE,)
  source = base.Source(
    strip_lib.strip(pruned, shrink=shrink),
    keys,
    keys,
    'the pruned model',
    pruned=pruned,
  )
  return driver.write(source, requests, overwrite)[tflite_format.NAME]
