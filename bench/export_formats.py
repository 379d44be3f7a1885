"""Every export format of a trained pruned MLP: size and test accuracy.

Used by `bench/export_size.py --formats` (run that script, not this one).

For each target sparsity, the training binary's own run
(`graph_prune.train.experiment.train`, default schedule and steps, the
1000-1000-500-200 ReLU MLP on the embedded digits, seed 0) writes the pruned
and stripped SavedModels and TFLite files in the four quantization modes
(int8 calibrated on the training images), and measures each one's test
accuracy by running that artifact; `graph_prune.strip_keras` adds the
`.keras` file. Sizes are raw and gzip -9 (`graph_prune.export.sizes`), and
shares of the dense float SavedModel's gzipped size (the unpruned model's
`tf.saved_model.save`; at sparsity 0 the trained dense model itself).

Latency: the dense-weight float and dynamic-range TFLite files of the 90%
model in the interpreter (LiteRT when installed), batch 1 and 256, the two
variants interleaved per round with the order alternating; the ratio is the
median of per-round ratios.
"""

import os
import tempfile
import time

import numpy as np

import graph_prune
from graph_prune.export import sizes
from graph_prune.export import tflite
from graph_prune.export import tflite_read
from graph_prune.train import datasets
from graph_prune.train import experiment

MODES = tflite.QUANTIZE_MODES


def _hparams(sparsity):
  return experiment.DEFAULT_HPARAMS.replace(
    'target_sparsity=0.9', f'target_sparsity={sparsity}'
  )


def measure(sparsity, root):
  """One row: {format: {raw, gzipped, share, accuracy}} for `sparsity`."""
  config = experiment.TrainConfig(
    hparams=_hparams(sparsity),
    model_dir=os.path.join(root, f'run_{sparsity}'),
    export_tflite=MODES,
  )
  result = experiment.train(config, log=lambda line: None)
  data = datasets.load()
  row = {'sparsity': sparsity, 'float_pruned_accuracy': result.test_accuracy}
  dense = result.dense_export
  row['dense_saved_model'] = {
    'raw': dense.raw_bytes,
    'gzipped': dense.gzip_bytes,
  }
  for e in result.exports:
    row[e.kind] = {
      'raw': e.raw_bytes,
      'gzipped': e.gzip_bytes,
      'accuracy': e.test_accuracy,
    }
  keras_path = os.path.join(root, f'm_{sparsity}.keras')
  plain = graph_prune.strip_keras(result.pruned)
  plain.save(keras_path)
  size = sizes.measure(keras_path)
  logits = plain.predict(data.x_test, verbose=0)
  row['keras'] = {
    'raw': size.raw,
    'gzipped': size.gzipped,
    'accuracy': float(np.mean(logits.argmax(1) == data.y_test)),
  }
  # Both encodings of each mode, for the sparse encoding decision.
  row['encodings'] = {}
  stripped = next(e.path for e in result.exports if e.kind == 'stripped')
  for mode in MODES:
    row['encodings'][mode] = {}
    for sparse in ('on', 'off'):
      path = os.path.join(root, f'{sparsity}_{mode}_{sparse}.tflite')
      try:
        report = tflite.convert_and_check(
          stripped, ['serving_default'], path, mode, data.x_train, sparse
        )
      except graph_prune.TFLiteExportError as e:  # lost weights, or no run
        print(f'  {sparsity} {mode} sparse={sparse}: {e}')
        row['encodings'][mode][sparse] = None
        continue
      row['encodings'][mode][sparse] = report.size.gzipped
  for value in row.values():
    if isinstance(value, dict) and 'gzipped' in value:
      value['share'] = value['gzipped'] / dense.gzip_bytes
  row['paths'] = {e.kind: e.path for e in result.exports}
  return row


def latency(float_path, dynamic_path, x, rounds=15):
  """Median ms per call and median per-round ratio dynamic / float."""
  runners = {}
  for name, path in (('none', float_path), ('dynamic', dynamic_path)):
    with open(path, 'rb') as f:
      runner = tflite_read.make_interpreter(f.read()).get_signature_runner()
    (key,) = runner.get_input_details()
    runners[name] = (runner, key)
  n = max(5, 2000 // len(x))
  times = {name: [] for name in runners}
  for r in range(rounds):
    order = list(runners) if r % 2 == 0 else list(runners)[::-1]
    for name in order:
      runner, key = runners[name]
      runner(**{key: x})
      start = time.perf_counter()
      for _ in range(n):
        runner(**{key: x})
      times[name].append((time.perf_counter() - start) / n)
  ratio = np.median(np.array(times['dynamic']) / np.array(times['none']))
  return {
    'batch': len(x),
    'ms': {k: 1e3 * float(np.median(v)) for k, v in times.items()},
    'min_ms': {k: 1e3 * float(np.min(v)) for k, v in times.items()},
    'dynamic_over_float': float(ratio),
    'interpreter': tflite_read.interpreter_name(),
  }


def run(sparsities, batches=(1, 256)):
  """All rows and the latency entries; prints the tables."""
  root = tempfile.mkdtemp()
  rows = [measure(float(s), root) for s in sparsities]
  timed = min(rows, key=lambda r: abs(r['sparsity'] - 0.9))
  x_test = datasets.load().x_test
  float_path = os.path.join(root, 'dense_float.tflite')
  dynamic_path = os.path.join(root, 'dense_dynamic.tflite')
  stripped = timed['paths']['stripped']
  for mode, path in (('none', float_path), ('dynamic', dynamic_path)):
    tflite.convert_and_check(
      stripped, ['serving_default'], path, mode, None, 'off'
    )
  speed = [
    latency(float_path, dynamic_path, np.resize(x_test, (b, 8, 8)))
    for b in batches
  ]
  _print(rows, speed, timed['sparsity'])
  return {'formats': rows, 'tflite_latency': speed, 'root': root}


def _print(rows, speed, timed):
  kinds = ['stripped', 'keras'] + [f'tflite-{m}' for m in MODES]
  print(
    '\nEvery format of the trained digits MLP: gzipped KiB, % of the dense '
    'float SavedModel gzipped, test accuracy (the float pruned model in the '
    'first column).'
  )
  header = f'{"sparsity":>8} {"dense KiB":>10} {"pruned acc":>10}'
  for k in kinds:
    header += f' | {k:>24}'
  print(header)
  for row in rows:
    dense_kib = row['dense_saved_model']['gzipped'] / 1024
    line = (
      f'{row["sparsity"]:8.2f} {dense_kib:10.1f}'
      f' {row["float_pruned_accuracy"]:10.4f}'
    )
    for k in kinds:
      c = row[k]
      line += (
        f' | {c["gzipped"] / 1024:8.1f} {100 * c["share"]:5.2f}% '
        f'{c["accuracy"]:.4f}'
      )
    print(line)
  print('\nSparse encoding, gzipped KiB on / off, per mode:')
  for row in rows:
    cells = ', '.join(
      f'{m} {_kib(e["on"])} / {_kib(e["off"])}'
      for m, e in row['encodings'].items()
    )
    print(f'  {row["sparsity"]:.2f}: {cells}')
  print(f'\nTFLite latency at sparsity {timed} (dense-weight files):')
  for s in speed:
    print(
      f'  batch {s["batch"]:>4}: float {s["ms"]["none"]:.3f} ms, dynamic '
      f'{s["ms"]["dynamic"]:.3f} ms, dynamic/float '
      f'{s["dynamic_over_float"]:.3f}x ({s["interpreter"]})'
    )


def _kib(n):
  return 'fails' if n is None else f'{n / 1024:.1f}'
