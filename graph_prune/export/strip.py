"""Stripping a pruned model for inference: masks folded into the weights.

    stripped = strip(pruned)                 # stripped(x) == pruned(x)
    export_saved_model(pruned, '/tmp/model')  # serving_default, no masks

`strip` takes a live `PrunedModel` and puts each exported computation
through one mechanism (`stripped_model.strip_function`, then
`stripped_model.rebuild`; see graph_prune/export/stripped_model.py for what
it does and why unpruned weights stay variables). A SavedModel of a pruned
model (the strip_masks tool's input) is stripped by `strip_saved_model` in
graph_prune/export/strip_saved_model.py; its names are importable from here
too, as they were before it moved. `export_saved_model` writes the stripped
model through the export driver (graph_prune/export/formats/driver.py),
which writes every format all or nothing.
"""

import dataclasses
from typing import Any, Mapping, Optional

import tensorflow as tf

from graph_prune import errors
from graph_prune.export import report as report_lib
from graph_prune.export import shrink_report
from graph_prune.export import strip_saved_model as saved_model_lib
from graph_prune.export.formats import base
from graph_prune.export.formats import driver
from graph_prune.export.formats import saved_model as saved_model_format
from graph_prune.export.formats import tflite as tflite_format
from graph_prune.export.stripped_model import PruningVariables
from graph_prune.export.stripped_model import rebuild
from graph_prune.export.stripped_model import signature_input_specs
from graph_prune.export.stripped_model import strip_function
from graph_prune.export.stripped_model import StrippedModel
from graph_prune.export.stripped_model import VariableCopies
from graph_prune.model import tracing

DEFAULT_SIGNATURE = 'serving_default'

# Importable from here as before they moved: the SavedModel input's entry
# points (strip_saved_model.py) and the TFLite format's conversion
# (formats/tflite.py). Neither module imports this one.
load_pruned_saved_model = saved_model_lib.load_pruned_saved_model
strip_saved_model = saved_model_lib.strip_saved_model
write_tflite = tflite_format.convert_and_check


def strip(
  pruned, signatures: Optional[Mapping[str, Any]] = None, shrink: bool = False
) -> StrippedModel:
  """Returns `pruned` as a `StrippedModel`: masks folded, no pruning state.

  Args:
    pruned: a `PrunedModel` from `graph_prune.apply_pruning`.
    signatures: optional signature key -> `tf.function` with an input
      signature (or `ConcreteFunction`) computing with `pruned`, e.g.
      `tf.function(lambda x: {'probs': tf.nn.softmax(pruned(x))}, ...)`;
      each is stripped too. A single function means {'serving_default': it}.
    shrink: also remove zero units physically (`graph_prune.shrink`); the
      model's `shrink_report` says what was removed.

  Returns:
    A `StrippedModel` whose `__call__` has `pruned`'s input signature and
    computes `pruned(x)` with every masked weight a non-trainable variable
    holding `weight * mask` (+0.0 where pruned) and every other weight a
    variable holding a copy of its current value.

  Raises:
    StripError: `pruned` is not a PrunedModel, or a signature function has no
      input signature.
    FoldError: a masked weight cannot be folded.
  """
  return _fold_model(pruned, signatures, shrink, VariableCopies())


def _fold_model(
  pruned, signatures, shrink, copies: VariableCopies
) -> StrippedModel:
  """`strip`, with the stripped model's variables made in `copies`."""
  for attr in ('masks', 'thresholds', 'last_mask_update_step', '__call__'):
    if not hasattr(pruned, attr):
      raise errors.StripError(
        f'strip expects the PrunedModel returned by '
        f'graph_prune.apply_pruning, got {type(pruned).__name__}.'
      )
  pruning = PruningVariables.of([pruned])
  call = pruned.__call__
  cf = tracing.inference_trace(call)
  stripped = strip_function(cf, pruning, 'the pruned model', shrink, copies)
  shrunk = {'__call__': stripped}
  functions = {}
  folded = list(stripped.folded)
  parameters = dict(stripped.parameters)
  if signatures is not None:
    if not isinstance(signatures, Mapping):
      signatures = {DEFAULT_SIGNATURE: signatures}
    for key, fn in signatures.items():
      sig_cf = _concrete(fn, key)
      sig = strip_function(
        sig_cf, pruning, f'signature {key!r}', shrink, copies
      )
      shrunk[key] = sig
      functions[key] = rebuild(
        sig, sig_cf, signature_input_specs(sig_cf), copies
      )
      folded += sig.folded
      parameters.update(sig.parameters)
  report = report_lib.make_report(
    folded, parameters, tuple(functions) or (DEFAULT_SIGNATURE,)
  )
  call = rebuild(stripped, cf, call.input_signature, copies)
  module = StrippedModel(
    call=call,
    signature_functions=functions,
    report=report,
    variables=copies.variables,
    deferred=copies.deferred,
  )
  if shrink:
    module.shrink_report = shrink_report.make_report(list(shrunk.items()))
  return module


def export_saved_model(
  pruned,
  export_dir: str,
  signatures: Optional[Mapping[str, Any]] = None,
  overwrite: bool = False,
  shrink: bool = False,
) -> report_lib.StripReport:
  """Writes `strip(pruned, signatures, shrink)` as a SavedModel.

  The SavedModel has `__call__` and, without `signatures`, a
  `serving_default` signature from it. It is written to a temporary
  directory beside `export_dir` and renamed at the end.

  Args:
    pruned: a `PrunedModel`.
    export_dir: the SavedModel directory to write.
    signatures: as in `strip`.
    overwrite: replace `export_dir` if it exists and is not empty.
    shrink: remove zero units physically (see `strip`).

  Returns:
    A `StripReport` with the output's size (its gzipped size is measured
    when first read) and `outputs`, the driver's `ExportReport`.

  Raises:
    OutputExistsError: `export_dir` is not empty and `overwrite` is False.
    OutputPathError: a parent of `export_dir` is a file.
    StripError, FoldError: as in `strip`.
  """
  request = base.Request(saved_model_format.NAME, export_dir, 'export_dir')
  driver.check_requests([request], overwrite)
  # The model's own variables go into the SavedModel as they are (no copy)
  # and the folded ones are written into its checkpoint one chunk at a time
  # (`folded_checkpoint`): the stripped model lives only until it is
  # written. Shrink slices the folded values, so it makes them.
  copies = VariableCopies(share=True, defer_folds=not shrink)
  module = _fold_model(pruned, signatures, shrink, copies)
  keys = module.report.signatures
  source = base.Source(module, keys, keys, 'the pruned model', pruned=pruned)
  written = driver.write(source, [request], overwrite)
  return dataclasses.replace(
    module.report,
    output_size=written[saved_model_format.NAME].size,
    outputs=written,
  )


def _concrete(fn, key):
  if isinstance(fn, tf.types.experimental.ConcreteFunction):
    return fn
  if getattr(fn, 'input_signature', None) is None:
    raise errors.StripError(
      f'Signature {key!r} is a function without an input signature; '
      'declare it with tf.function(input_signature=[...]) or pass a '
      'ConcreteFunction.'
    )
  return tracing.inference_trace(fn)
