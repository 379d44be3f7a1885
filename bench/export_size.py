"""Benchmark: size and speed of stripped exports of a pruned MLP.

Usage:
  python bench/export_size.py [--sparsities=0,0.5,0.9,0.95] [--rounds=R]
      [--formats [--blocks=1x1,4x1,8x1]]

--formats also trains the digits MLP at each sparsity with the training
binary's schedule and measures every format it can ship as (SavedModels,
.keras, TFLite float/dynamic/float16/int8, both weight encodings), each
with its test accuracy, and the dynamic-range TFLite model's latency
against the float one (bench/export_formats.py). --blocks trains it once
per block shape HxW (block_height x block_width; 1x1 is unstructured, the
default) and ends with issue 14's goal line: the smallest int8 TFLite file
at 90% over the shapes, against 5% of dense gzipped and the accuracy of
its own and of the unstructured float pruned model.

For the 784-1000-1000-500-200-10 ReLU MLP (Keras 3, Glorot-uniform weights,
seed 0), at each sparsity: prunes it with graph_prune (every kernel masked
by `mask_update` at the end of the schedule, so each holds exactly the
target's smallest |w| as zeros) and writes what graph_prune writes: the
stripped SavedModel (`export_saved_model`), its TFLite flatbuffer with
sparse weights (`write_tflite`) and its frozen GraphDef. The dense reference
is the unpruned model as `tf.saved_model.save(model)` writes it (weights in
variables/) and its TFLite flatbuffer (`from_keras_model`).

Sizes are bytes on disk and gzip -9 (`graph_prune.export.sizes`: a directory
as a deterministic .tar.gz, a file as .gz). Ratios are to the dense SavedModel's
gzipped size. Also measured: the same SavedModel with -0.0 at pruned
positions (what `weight * mask` gives for negative weights), to show what
normalising zeros to +0.0 saves.

Inference time at 90% sparsity (or the nearest measured): the loaded
stripped SavedModel's `serving_default` against the loaded dense
SavedModel's, and the PrunedModel itself (mask multiply in the graph) for
reference; the variants run
interleaved, the order rotating per round, and the ratio is the median of
the per-round ratios, of wall time and of the process's CPU time (less
sensitive to other load on a shared machine). Writes
bench/results/export_size.json.
"""

import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import export_formats  # bench/export_formats.py, beside this script
import keras
import numpy as np
import results_io  # bench/results_io.py, beside this script
import tensorflow as tf

import graph_prune
from graph_prune.export import frozen_strip
from graph_prune.export import sizes
from graph_prune.export.strip import export_saved_model
from graph_prune.export.strip import strip
from graph_prune.export.strip import write_tflite

_SPARSITIES = flags.DEFINE_list(
  'sparsities', ['0', '0.5', '0.9', '0.95'], 'Target sparsities.'
)
_ROUNDS = flags.DEFINE_integer('rounds', 21, 'Interleaved timing rounds.')
_BATCHES = flags.DEFINE_list('batches', ['256', '1'], 'Batch sizes timed.')
_FORMATS = flags.DEFINE_bool(
  'formats',
  False,
  'Also train the digits MLP per sparsity and measure every export format '
  'with its test accuracy (bench/export_formats.py; minutes).',
)
_BLOCKS = flags.DEFINE_list(
  'blocks',
  ['1x1'],
  'With --formats: block shapes HxW (block_height x block_width) to train '
  'the digits MLP with at each sparsity; 1x1 is unstructured.',
)


@flags.validator('blocks')
def _check_blocks(values):
  try:
    export_formats.parse_blocks(values)
  except ValueError as e:  # the message names the entry and the fix
    raise flags.ValidationError(str(e)) from e
  return True


_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'export_size.json'),
  'JSON output path.',
)

_HIDDEN = [1000, 1000, 500, 200]
_END = 100


def _mlp():
  keras.utils.set_random_seed(0)
  layers = [keras.Input((784,))]
  layers += [keras.layers.Dense(h, activation='relu') for h in _HIDDEN]
  layers.append(keras.layers.Dense(10))
  return keras.Sequential(layers)


def _pruned(sparsity):
  model = _mlp()
  pruned = graph_prune.apply_pruning(
    model,
    f'target_sparsity={sparsity},begin_pruning_step=0,'
    f'end_pruning_step={_END},sparsity_function_end_step={_END}',
  )
  pruned.mask_update(_END)
  return model, pruned


def _tflite_dense(model, path):
  # from_keras_model: converting tf.saved_model.save's SavedModel of a Keras
  # 3 model gives a 2.6 KB flatbuffer without the weights (TF 2.21).
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  with open(path, 'wb') as f:
    f.write(converter.convert())


def _size(path):
  s = sizes.measure(path)
  return {'raw': s.raw, 'gzipped': s.gzipped}


def _negative_zero_saved_model(stripped_dir, pruned, path):
  """A copy of the stripped SavedModel with -0.0 where weight*mask gives it.

  Only for measuring its size: the folded weights' bytes are replaced in the
  checkpoint's data file, whose checksums then no longer match.
  """
  shutil.copytree(stripped_dir, path)
  pb = os.path.join(path, 'variables', 'variables.data-00000-of-00001')
  with open(pb, 'rb') as f:
    data = f.read()
  for weight, mask in zip(pruned.weights, pruned.masks):
    w, m = weight.numpy(), mask.numpy()
    positive = np.where(m == 0, np.float32(0), w).tobytes()
    signed = (w * m).tobytes()
    assert data.count(positive) == 1, 'folded weight not found once'
    data = data.replace(positive, signed)
  with open(pb, 'wb') as f:
    f.write(data)


def measure_sizes(sparsity, root):
  model, pruned = _pruned(sparsity)
  d = os.path.join(root, f's{sparsity}')
  os.makedirs(d)
  stripped_dir = os.path.join(d, 'stripped')
  report = export_saved_model(pruned, stripped_dir)
  write_tflite(
    stripped_dir, ['serving_default'], os.path.join(d, 'm.tflite'), sparse='on'
  )
  frozen = frozen_strip.freeze(strip(pruned).__call__, 'the MLP')
  with open(os.path.join(d, 'frozen.pb'), 'wb') as f:
    f.write(frozen.graph_def.SerializeToString())
  dense_dir = os.path.join(d, 'dense')
  tf.saved_model.save(model, dense_dir)
  _tflite_dense(model, os.path.join(d, 'dense.tflite'))
  row = {
    'sparsity': float(sparsity),
    'zero_fraction': 1 - report.nonzero_params / report.total_params,
    'params': report.total_params,
    'nonzeros': report.nonzero_params,
    'stripped_saved_model': _size(stripped_dir),
    'tflite_sparse': _size(os.path.join(d, 'm.tflite')),
    'frozen_graph': _size(os.path.join(d, 'frozen.pb')),
    'dense_saved_model': _size(dense_dir),
    'dense_tflite': _size(os.path.join(d, 'dense.tflite')),
  }
  if sparsity > 0:
    _negative_zero_saved_model(stripped_dir, pruned, os.path.join(d, 'negzero'))
    row['stripped_saved_model_negative_zeros'] = _size(
      os.path.join(d, 'negzero')
    )
  return row, (model, pruned, stripped_dir, dense_dir)


def _timer(fn, x, n):
  """Returns a function timing n calls: (wall s, process CPU s) per call."""
  fn(x)

  def run():
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
      out = fn(x)
    np.asarray(out)
    return ((time.perf_counter() - start) / n, (time.process_time() - cpu) / n)

  return run


def measure_speed(pruned, stripped_dir, dense_dir, batch):
  x = tf.constant(
    np.random.RandomState(0).standard_normal((batch, 784)).astype(np.float32)
  )
  stripped = tf.saved_model.load(stripped_dir).signatures['serving_default']
  dense = tf.saved_model.load(dense_dir).signatures['serving_default']
  (key,) = dense.structured_input_signature[1]
  (skey,) = stripped.structured_input_signature[1]
  np.testing.assert_allclose(
    list(stripped(**{skey: x}).values())[0], pruned(x), rtol=1e-5, atol=1e-5
  )
  n = max(5, 1000 // batch)
  variants = {
    'dense': _timer(lambda v: dense(**{key: v}), x, n),
    'stripped': _timer(lambda v: stripped(**{skey: v}), x, n),
    'pruned_with_masks': _timer(pruned, x, n),
  }
  names = list(variants)
  wall, cpu = {k: [] for k in names}, {k: [] for k in names}
  for r in range(_ROUNDS.value):
    for k in names[r % len(names) :] + names[: r % len(names)]:
      w, c = variants[k]()
      wall[k].append(w)
      cpu[k].append(c)

  def ratios(times):
    return {
      k: float(np.median(np.array(times[k]) / np.array(times['dense'])))
      for k in names
    }

  return {
    'batch': batch,
    'calls_per_round': n,
    'rounds': _ROUNDS.value,
    'ms_per_call': {k: 1e3 * float(np.median(v)) for k, v in wall.items()},
    'median_ratio_to_dense': ratios(wall),
    'cpu_ms_per_call': {k: 1e3 * float(np.median(v)) for k, v in cpu.items()},
    'median_cpu_ratio_to_dense': ratios(cpu),
  }


def _mib(n):
  return f'{n / 2**20:7.3f}'


def main(argv):
  del argv
  if _BLOCKS.value != ['1x1'] and not _FORMATS.value:
    raise app.UsageError(
      f'--blocks={",".join(_BLOCKS.value)} applies to the trained models '
      'only; add --formats.'
    )
  root = tempfile.mkdtemp()
  rows, artifacts = [], {}
  try:
    for s in _SPARSITIES.value:
      row, artifacts[float(s)] = measure_sizes(float(s), root)
      rows.append(row)
    timed = min(artifacts, key=lambda s: abs(s - 0.9))
    _, pruned, stripped_dir, dense_dir = artifacts[timed]
    speed = [
      measure_speed(pruned, stripped_dir, dense_dir, int(b))
      for b in _BATCHES.value
    ]
  finally:
    shutil.rmtree(root, ignore_errors=True)

  print(
    'Sizes in MiB, raw / gzip -9 (a SavedModel as .tar.gz); % = gzipped '
    'size over the dense SavedModel gzipped.'
  )
  print(
    f'{"sparsity":>8} | {"dense SavedModel":>17} | {"dense TFLite":>17} | '
    f'{"stripped SavedModel":>26} | {"TFLite sparse":>26} | '
    f'{"frozen GraphDef":>17} | {"-0.0 SavedModel":>16}'
  )
  for row in rows:
    base = row['dense_saved_model']['gzipped']

    def cell(key, pct=True, row=row, base=base):
      size = row[key]
      text = f'{_mib(size["raw"])} / {_mib(size["gzipped"])}'
      return text + (f' {100 * size["gzipped"] / base:6.2f}%' if pct else '')

    neg = row.get('stripped_saved_model_negative_zeros')
    neg_text = (
      f'{_mib(neg["gzipped"])} {100 * neg["gzipped"] / base:6.2f}%'
      if neg
      else ''
    )
    print(
      f'{row["sparsity"]:8.2f} | {cell("dense_saved_model", False)} | '
      f'{cell("dense_tflite", False)} | {cell("stripped_saved_model")} | '
      f'{cell("tflite_sparse")} | {cell("frozen_graph", False)} | '
      f'{neg_text:>16}'
    )
    row['gzipped_over_dense'] = {
      k: row[k]['gzipped'] / base
      for k in row
      if isinstance(row[k], dict) and 'gzipped' in row[k]
    }
    row['smallest_format'] = min(
      ('stripped_saved_model', 'tflite_sparse', 'frozen_graph'),
      key=lambda k: row[k]['gzipped'],
    )
  print(
    f'\nInference at sparsity {timed} (median of '
    f'{_ROUNDS.value} interleaved rounds; ratio to dense):'
  )
  for entry in speed:
    ms = entry['ms_per_call']
    ratio = entry['median_ratio_to_dense']
    cpu = entry['median_cpu_ratio_to_dense']
    print(
      f'  batch {entry["batch"]:>4}: dense {ms["dense"]:.3f} ms, stripped '
      f'{ms["stripped"]:.3f} ms ({ratio["stripped"]:.3f}x wall, '
      f'{cpu["stripped"]:.3f}x CPU), pruned with masks '
      f'{ms["pruned_with_masks"]:.3f} ms '
      f'({ratio["pruned_with_masks"]:.3f}x wall, '
      f'{cpu["pruned_with_masks"]:.3f}x CPU)'
    )
  results = {
    'model': '784-' + '-'.join(map(str, _HIDDEN)) + '-10 ReLU MLP, Keras 3',
    'gzip': 'gzip -9; a directory as a deterministic .tar.gz '
    '(graph_prune.export.sizes)',
    'dense_reference': 'tf.saved_model.save(unpruned model)',
    'sizes': rows,
    'inference_sparsity': timed,
    'inference': speed,
    'tensorflow': tf.__version__,
  }
  if _FORMATS.value:
    results['trained_formats'] = export_formats.run(
      _SPARSITIES.value, export_formats.parse_blocks(_BLOCKS.value)
    )
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
