"""Folds the masks of a pruned SavedModel into its weights and exports it.

Usage:
  strip_masks --saved_model=IN --output_dir=OUT [--signature=KEY[,KEY...]]
      [--tflite=FILE [--quantize=none|dynamic|float16|int8]
       [--representative_data=FILE.npz] [--tflite_sparse=auto|on|off]]
      [--frozen_graph=FILE] [--overwrite] [--nodense_reference]
      [--shrink [--latency_batches=1,256]]

IN is a SavedModel of a graph_prune PrunedModel, with its masks
(tf.saved_model.save(pruned, IN)). OUT receives a SavedModel with the same
signatures (all of them, or those named by --signature) giving the same
outputs, in which every masked weight is one constant weight * mask and no
mask, threshold or step variable, and no mask arithmetic, is left. The other
weights (biases, norms) stay variables.

  --tflite=FILE        also write a TFLite flatbuffer, checked: the weights'
                       sparsity is read back from the file and its outputs
                       are compared with the stripped SavedModel's (max abs
                       diff, top-1 agreement).
  --quantize=MODE      the TFLite file's quantization: none (float32),
                       dynamic (int8 weights), float16, or int8 (full
                       integer; needs --representative_data).
  --representative_data=FILE.npz
                       inputs to calibrate int8 with and to compare on: an
                       .npz with x_train (the training binary's format,
                       integer images scaled as that binary scales them),
                       x or inputs (one array per input name for several
                       inputs), or an .npy; other integer data is cast as it
                       is. Checked against the signatures' inputs (shapes,
                       dtype, finite values) before anything is written.
  --tflite_sparse=auto|on|off
                       TFLite's sparse weight encoding: auto (default) keeps
                       it where it makes the gzipped file smaller.
  --frozen_graph=FILE  also write a frozen GraphDef (.pb) of one signature
                       (the only one selected, or serving_default), as
                       contrib's strip_pruning_vars did.
  --shrink             also remove zero units (granularity=unit) physically:
                       smaller dense kernels, same outputs; prints what was
                       removed per layer, the parameters and multiply-adds
                       before and after, and the stripped and shrunk
                       latency at --latency_batches (empty: not timed); a
                       note when nothing could be removed.

IN is never modified. Outputs are written to temporary paths beside them and
renamed when everything succeeded, so a failed run leaves no output. An
existing non-empty output is replaced only with --overwrite. Each stripped
signature is checked against the input on random inputs before the rename.

Prints a report: each folded weight's shape and sparsity, the parameter
count and non-zeros, and the sizes of the input and outputs, raw and
gzip-compressed, each beside the dense float SavedModel's and as a share of
its gzipped size. The dense reference is IN exported with every mask set to
ones (in memory; IN is untouched) and measured in a temporary directory:
the unpruned model's weights as one SavedModel, what
tf.saved_model.save(model) of it writes. --nodense_reference skips it.
A bad input exits with status 1 and a one-line message.

IN saved with graph_prune.save_pruned has the signatures serve and
serving_default (Keras 3's export convention) on one function; OUT then has
both too, the weights stored once.
"""

from typing import Optional

from absl import app
from absl import flags

from graph_prune.cli import runner
from graph_prune.export.formats import driver
from graph_prune.export.formats import tflite
from graph_prune.export.formats.table import FORMATS
from graph_prune.export.strip_saved_model import strip_saved_model

_SAVED_MODEL = flags.DEFINE_string(
  'saved_model', None, 'SavedModel directory of a pruned model (input).'
)
_OUTPUT_DIR = flags.DEFINE_string(
  'output_dir', None, 'Directory to write the stripped SavedModel to.'
)
_SIGNATURE = flags.DEFINE_list(
  'signature',
  None,
  'Signature keys to strip and write (default: every signature).',
)
_TFLITE = flags.DEFINE_string(
  'tflite', None, 'Also write a sparse TFLite flatbuffer to this file.'
)
_QUANTIZE = flags.DEFINE_enum(
  'quantize',
  'none',
  list(tflite.QUANTIZE_MODES),
  'Quantization of the --tflite file.',
)
_REPRESENTATIVE_DATA = flags.DEFINE_string(
  'representative_data',
  None,
  'An .npz (x_train, x or inputs) or .npy of inputs to calibrate '
  '--quantize=int8 with and to check the --tflite file on.',
)
_TFLITE_SPARSE = flags.DEFINE_enum(
  'tflite_sparse',
  'auto',
  list(tflite.SPARSE_CHOICES),
  "TFLite's sparse weight encoding; auto keeps it where the gzipped file "
  'is smaller.',
)
_FROZEN_GRAPH = flags.DEFINE_string(
  'frozen_graph', None, 'Also write a frozen GraphDef (.pb) to this file.'
)
_DENSE_REFERENCE = flags.DEFINE_bool(
  'dense_reference',
  True,
  'Also measure the dense float SavedModel IN stands for (IN with masks of '
  'ones) and show every size as a share of its gzipped size; '
  '--nodense_reference skips that export.',
)
_OVERWRITE = flags.DEFINE_bool(
  'overwrite', False, 'Replace outputs that exist and are not empty.'
)
_SHRINK = flags.DEFINE_bool(
  'shrink', False, 'Also remove zero units physically (smaller kernels).'
)
_LATENCY_BATCHES = flags.DEFINE_list(
  'latency_batches',
  ['1', '256'],
  'With --shrink: batch sizes at which to time stripped vs shrunk.',
)
flags.register_validator(
  'latency_batches',
  lambda v: all(b.isdigit() and int(b) >= 1 for b in v),
  message='--latency_batches must be positive integers, e.g. 1,256.',
)

flags.mark_flags_as_required(['saved_model', 'output_dir'])
flags.register_validator(
  'saved_model',
  lambda value: value is None or bool(value.strip()),
  message='--saved_model must not be empty.',
)
flags.register_validator(
  'output_dir',
  lambda value: value is None or bool(value.strip()),
  message='--output_dir must not be empty.',
)
flags.register_multi_flags_validator(
  ['tflite', 'quantize', 'representative_data', 'tflite_sparse'],
  lambda v: (
    bool(v['tflite'])
    or (
      v['quantize'] == 'none'
      and not v['representative_data']
      and v['tflite_sparse'] == 'auto'
    )
  ),
  message='--quantize, --representative_data and --tflite_sparse set up the '
  'TFLite file; add --tflite=FILE.',
)


def _check_outputs() -> None:
  """Refuses unusable output paths in the binary's own words (--overwrite)."""
  outputs = (
    ('--output_dir', _OUTPUT_DIR.value, 'saved_model'),
    ('--tflite', _TFLITE.value, 'tflite'),
    ('--frozen_graph', _FROZEN_GRAPH.value, 'frozen_graph'),
  )
  driver.check_outputs(
    [(name, path, FORMATS[fmt].is_file) for name, path, fmt in outputs if path],
    _OVERWRITE.value,
    '--overwrite',
  )


def _shrink_note(report) -> Optional[str]:
  """A line when --shrink removed nothing, else None."""
  shrunk = report.shrink
  if shrunk is None or any(
    r.params_after != r.params_before for _, r in shrunk.functions
  ):
    return None
  return (
    'note: --shrink removed nothing: no unit of a masked weight is all '
    'zero, so the output equals the stripped model; prune with '
    'granularity=unit to zero whole units, which shrink removes.'
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  _check_outputs()
  report = strip_saved_model(
    _SAVED_MODEL.value,
    _OUTPUT_DIR.value,
    signature_keys=_SIGNATURE.value,
    tflite_path=_TFLITE.value or None,
    frozen_graph_path=_FROZEN_GRAPH.value or None,
    overwrite=_OVERWRITE.value,
    quantize=_QUANTIZE.value,
    representative_data=_REPRESENTATIVE_DATA.value or None,
    tflite_sparse=_TFLITE_SPARSE.value,
    shrink=_SHRINK.value,
    latency_batches=[int(b) for b in _LATENCY_BATCHES.value],
    dense_reference=_DENSE_REFERENCE.value,
  )
  print(f'Stripped {_SAVED_MODEL.value} -> {_OUTPUT_DIR.value}')
  print(report.to_text())
  note = _shrink_note(report)
  if note:
    print(note)
  return 0


def run():
  """Entry point of the `strip_masks` console script and tools/strip_masks."""
  runner.run(
    main,
    # The format this binary has always had (scripts may match it).
    prefix='strip_masks: error: ',
    # A path it cannot read or write is the input's fault too.
    also_catch=(OSError,),
    usage=__doc__,
    key_flags=(
      _SAVED_MODEL,
      _OUTPUT_DIR,
      _SIGNATURE,
      _TFLITE,
      _QUANTIZE,
      _REPRESENTATIVE_DATA,
      _TFLITE_SPARSE,
      _FROZEN_GRAPH,
      _OVERWRITE,
      _SHRINK,
      _LATENCY_BATCHES,
    ),
  )


if __name__ == '__main__':
  run()
