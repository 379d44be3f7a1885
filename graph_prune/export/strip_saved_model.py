"""Stripping a SavedModel of a pruned model: what the strip_masks tool runs.

    report = strip_saved_model('/tmp/pruned', '/tmp/model',
                               tflite_path='/tmp/model.tflite')
    print(report.to_text())

`strip` (graph_prune/export/strip.py) takes a live `PrunedModel`;
`strip_saved_model` a SavedModel of one, whose pruning variables it finds in
the object graph (every object with `masks`, `thresholds` and
`last_mask_update_step`, i.e. a saved `PrunedModel`). Each selected
signature goes through the same mechanism as `strip`
(`stripped_model.strip_function`, then `stripped_model.rebuild`).

`strip_saved_model` never modifies its input. It maps its arguments to one
request per format (the SavedModel, TFLite, the frozen graph; see
graph_prune/export/formats/) and the export driver writes them all or
nothing, after each stripped signature was checked against the input on
random inputs. It lives apart from strip.py because everything here is
about a SavedModel input (finding its pruning variables, choosing its
signatures), which `strip` of a live model does not need.
"""

import dataclasses
import os
from typing import Any, Optional, Sequence

import tensorflow as tf

from graph_prune import errors
from graph_prune.export import dense_reference as dense_lib
from graph_prune.export import latency
from graph_prune.export import report as report_lib
from graph_prune.export import shrink_report
from graph_prune.export import sizes
from graph_prune.export.formats import base
from graph_prune.export.formats import driver
from graph_prune.export.formats import frozen_graph
from graph_prune.export.formats import saved_model
from graph_prune.export.formats import tflite as tflite_format
from graph_prune.export.stripped_model import first_line
from graph_prune.export.stripped_model import PruningVariables
from graph_prune.export.stripped_model import rebuild
from graph_prune.export.stripped_model import signature_input_specs
from graph_prune.export.stripped_model import strip_function
from graph_prune.export.stripped_model import StrippedModel
from graph_prune.export.stripped_model import VariableCopies
from graph_prune.model import saved_model_conventions as conventions

# Converts a (stripped) SavedModel to a checked TFLite file; importable from
# here as before the TFLite format moved (formats/tflite.py, where the
# driver reads it).
write_tflite = tflite_format.convert_and_check


def load_pruned_saved_model(path: str):
  """Loads a SavedModel of a pruned model and finds its pruning variables.

  Returns:
    (loaded object, `PruningVariables`).

  Raises:
    SavedModelNotFoundError: `path` is missing, not a SavedModel directory,
      or cannot be loaded.
    NoPruningVariablesError: it holds no PrunedModel's masks.
  """
  _check_saved_model_path(path)
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except
    # Any failure to parse or restore: a corrupt or foreign SavedModel.
    raise errors.SavedModelNotFoundError(
      f'Cannot load SavedModel {path!r}: {first_line(e)}'
    ) from e
  owners = [
    obj
    for obj in tf.train.TrackableView(loaded).descendants()
    if all(
      hasattr(obj, a) for a in ('masks', 'thresholds', 'last_mask_update_step')
    )
  ]
  pruning = PruningVariables.of(owners)
  if not pruning.masks:
    raise errors.NoPruningVariablesError(
      f'SavedModel {path!r} has no pruning variables (no mask of a '
      'PrunedModel); save the model returned by graph_prune.apply_pruning '
      '(tf.saved_model.save(pruned, path)), not the original model.'
    )
  return loaded, pruning


def _check_saved_model_path(path: str) -> None:
  if not os.path.exists(path):
    raise errors.SavedModelNotFoundError(
      f'SavedModel path {path!r} does not exist; pass the directory '
      'tf.saved_model.save wrote.'
    )
  if not os.path.isdir(path) or not tf.saved_model.contains_saved_model(path):
    raise errors.SavedModelNotFoundError(
      f'{path!r} is not a SavedModel directory (it has no saved_model.pb); '
      'pass the directory tf.saved_model.save wrote.'
    )


def strip_saved_model(
  saved_model_dir: str,
  output_dir: str,
  signature_keys: Optional[Sequence[str]] = None,
  tflite_path: Optional[str] = None,
  frozen_graph_path: Optional[str] = None,
  overwrite: bool = False,
  verify: bool = True,
  quantize: str = 'none',
  representative_data: Any = None,
  tflite_sparse: str = 'auto',
  shrink: bool = False,
  latency_batches: Sequence[int] = (),
  dense_reference: bool = True,
) -> report_lib.StripReport:
  """Strips a SavedModel of a pruned model into a new SavedModel.

  The input is never modified. Every output is written to a temporary path
  beside it and renamed at the end, so a failure leaves no output.

  Args:
    saved_model_dir: a SavedModel of a `PrunedModel` (with its masks).
    output_dir: the stripped SavedModel to write.
    signature_keys: the signatures to strip and write (default: all).
    tflite_path: also write a TFLite flatbuffer of the stripped signatures,
      checked against them (`graph_prune/export/formats/tflite.py`).
    frozen_graph_path: also write the frozen GraphDef (.pb) of one
      signature: the only one selected, or 'serving_default'.
    overwrite: replace outputs that exist and are not empty.
    verify: run each stripped signature and its original on the same random
      inputs (numeric inputs only) and fail if they differ.
    quantize: the TFLite file's quantization: 'none', 'dynamic', 'float16'
      or 'int8' (which needs `representative_data`).
    representative_data: inputs for int8 calibration and the TFLite check:
      an array, a `tf.data.Dataset` of input batches or an `.npz` path.
    tflite_sparse: TFLite's sparse weight encoding: 'auto' (where it makes
      the gzipped file smaller), 'on' or 'off'.
    shrink: also remove zero units physically (`graph_prune.shrink`); the
      report's `shrink` says what was removed.
    latency_batches: with `shrink`, time the stripped and the shrunk first
      signature at these batch sizes (into the shrink report).
    dense_reference: also measure the dense float SavedModel the input
      stands for (the same signatures with masks of ones,
      `dense_reference.dense_size`), the report's `dense_size`.

  Returns:
    A `StripReport` with sizes, and in `outputs` one report per format
    written (`formats.base.ExportReport`).

  Raises:
    SavedModelNotFoundError, NoPruningVariablesError, UnknownSignatureError,
    OutputExistsError, FoldError, StripError: each with a one-sentence
    message naming the value and the fix.
  """
  _check_saved_model_path(saved_model_dir)
  requests = _requests(
    output_dir,
    tflite_path,
    frozen_graph_path,
    verify,
    tflite_format.Options(quantize, representative_data, tflite_sparse),
  )
  driver.check_requests(
    requests, overwrite, driver.OVERWRITE_HINT, input_path=saved_model_dir
  )
  loaded, pruning = load_pruned_saved_model(saved_model_dir)
  keys = _select_signatures(loaded, saved_model_dir, signature_keys)
  # `serve` saved as an alias of serving_default (Keras 3's convention) is
  # stripped once and written again as an alias: the weights stay single.
  aliases = conventions.signature_aliases(loaded.signatures)
  keys_to_fold = [k for k in keys if aliases.get(k) not in keys]
  if frozen_graph_path:  # refused before the (long) folding
    chosen = frozen_graph.Options(frozen_graph.signature_key(keys_to_fold))
    requests = [
      dataclasses.replace(r, options=chosen)
      if r.format == frozen_graph.NAME
      else r
      for r in requests
    ]
  module = _fold_signatures(
    loaded, pruning, keys_to_fold, saved_model_dir, shrink
  )
  module.report = dataclasses.replace(module.report, signatures=tuple(keys))
  source = base.Source(
    module,
    tuple(keys),
    tuple(keys_to_fold),
    f'SavedModel {saved_model_dir!r}',
    original=loaded,
  )
  written = driver.write(source, requests, overwrite)
  shrunk = None
  if shrink:
    shrunk = module.shrink_report
    if latency_batches:
      shrunk = dataclasses.replace(
        shrunk,
        latency=tuple(
          _signature_latency(
            loaded, pruning, keys_to_fold[0], module, latency_batches
          )
        ),
      )
  tflite = written.get(tflite_format.NAME)
  frozen = written.get(frozen_graph.NAME)
  return dataclasses.replace(
    module.report,
    shrink=shrunk,
    input_size=sizes.measure(saved_model_dir, lazy=True),
    output_size=written[saved_model.NAME].size,
    tflite_size=tflite.size if tflite else None,
    tflite=tflite,
    frozen_graph_size=frozen.size if frozen else None,
    frozen_graph_inputs=frozen.inputs if frozen else (),
    frozen_graph_outputs=frozen.outputs if frozen else (),
    dense_size=(
      dense_lib.dense_size(loaded, pruning, keys_to_fold)
      if dense_reference
      else None
    ),
    outputs=written,
  )


def _requests(output_dir, tflite_path, frozen_graph_path, verify, tflite):
  """The formats asked for, named as `strip_saved_model`'s arguments."""
  requests = [
    base.Request(
      saved_model.NAME, output_dir, 'output_dir', saved_model.Options(verify)
    )
  ]
  if tflite_path:
    requests.append(
      base.Request(tflite_format.NAME, tflite_path, 'tflite_path', tflite)
    )
  if frozen_graph_path:
    requests.append(
      base.Request(frozen_graph.NAME, frozen_graph_path, 'frozen_graph_path')
    )
  return requests


def _signature_latency(loaded, pruning, key, shrunk, batches):
  """Times signature `key` stripped and shrunk (`shrunk`, a StrippedModel)."""
  cf = loaded.signatures[key]
  specs = signature_input_specs(cf)
  stripped = rebuild(
    strip_function(cf, pruning, f'signature {key!r}'),
    cf,
    specs,
    VariableCopies(),
  )
  return latency.measure_latency(
    stripped, shrunk.signature_functions[key], specs, batches
  )


def _fold_signatures(loaded, pruning, keys, saved_model_dir, shrink=False):
  """Folds the masks of each signature of `loaded`: a `StrippedModel`.

  The loaded model's other variables are written as they are (no copy).

  Raises:
    NoPruningVariablesError: no signature computes a masked weight.
  """
  functions, stripped_by_key = {}, {}
  copies = VariableCopies(share=True)
  for key in keys:
    cf = loaded.signatures[key]
    stripped = strip_function(cf, pruning, f'signature {key!r}', shrink, copies)
    stripped_by_key[key] = stripped
    functions[key] = rebuild(stripped, cf, signature_input_specs(cf), copies)
  folded = [w for s in stripped_by_key.values() for w in s.folded]
  if not folded:
    raise errors.NoPruningVariablesError(
      f'No signature of {saved_model_dir!r} ({", ".join(keys)}) computes a '
      'masked weight; choose the signature that calls the pruned model.'
    )
  parameters = {}
  for s in stripped_by_key.values():
    parameters.update(s.parameters)
  report = report_lib.make_report(folded, parameters, tuple(keys))
  module = StrippedModel(
    signature_functions=functions, report=report, variables=copies.variables
  )
  if shrink:
    module.shrink_report = shrink_report.make_report(
      list(stripped_by_key.items())
    )
  return module


def _select_signatures(loaded, path, signature_keys):
  available = sorted(loaded.signatures.keys())
  if not available:
    raise errors.UnknownSignatureError(
      f'SavedModel {path!r} has no signatures; save it with '
      'tf.saved_model.save(pruned, path), which writes serving_default.'
    )
  if not signature_keys:
    return available
  keys = list(dict.fromkeys(signature_keys))
  for key in keys:
    if key not in available:
      raise errors.UnknownSignatureError(
        f'Signature {key!r} is not in SavedModel {path!r}; its signatures '
        f'are {available}.'
      )
  return keys
