"""Benchmark: one-shot pruning of the export issue's 134 M-parameter MLP.

Usage:
  python bench/oneshot_scale.py [--params=1.34e8] [--samples=256]
      [--methods=sparsegpt,wanda,weight] [--target_sparsity=0.5]
      [--output=bench/results/oneshot_scale.json]

Issue 25's time goal: `prune_oneshot` with `prune_option=sparsegpt` of the
MLP of 4096-wide Dense layers that `bench/scale.py` builds (8 layers: 134.2 M
parameters at --params=1.34e8), from 256 calibration samples, in under 5
minutes on this machine. Each method runs in its own child process (a fresh
TensorFlow, its peak RSS from `wait4`), which builds the model (random
he-uniform weights, seed 0), draws the calibration inputs (standard normal,
seed 0) and times `prune_oneshot` (tracing and the per-layer probe runs
included), every kernel but the logits pruned. The parent prints a table of
seconds and peak RSS per method against the weights' bytes, and writes the
JSON to --output. The machine is shared: each row also has the CPU seconds
of the call and the load average at its end; a wall time under load says
little.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import results_io  # bench/results_io.py, beside this script

_PARAMS = flags.DEFINE_float('params', 1.34e8, 'About this many parameters.')
_WIDTH = flags.DEFINE_integer('width', 4096, 'Width of the Dense layers.')
_SAMPLES = flags.DEFINE_integer('samples', 256, 'Calibration samples.')
_METHODS = flags.DEFINE_list(
  'methods', ['sparsegpt', 'wanda', 'weight'], 'prune_option values.'
)
_TARGET = flags.DEFINE_float('target_sparsity', 0.5, 'Target sparsity.')
_CHILD = flags.DEFINE_string('child', None, 'Internal: run one method.')
_RESULT = flags.DEFINE_string('result', None, 'Internal: the child JSON.')
_OUTPUT = flags.DEFINE_string(
  'output',
  os.path.join(os.path.dirname(__file__), 'results', 'oneshot_scale.json'),
  'Where to write the JSON.',
)

GOAL_SECONDS = 300.0


def layer_count(params: float, width: int) -> int:
  """Dense layers of `width` (kernel and bias) nearest `params`, at least 2."""
  return max(2, round(params / (width * width + width)))


def run_child(method: str, path: str) -> None:
  """Builds the MLP, prunes it once, writes seconds and counts to `path`."""
  import keras
  import numpy as np

  import graph_prune

  layers = layer_count(_PARAMS.value, _WIDTH.value)
  width = _WIDTH.value
  keras.utils.set_random_seed(0)
  hidden = [
    keras.layers.Dense(
      width, activation='relu', kernel_initializer='he_uniform'
    )
    for _ in range(layers - 1)
  ]
  last = keras.layers.Dense(
    width, kernel_initializer='he_uniform', name='logits'
  )
  model = keras.Sequential([keras.Input((width,)), *hidden, last])
  x = np.random.RandomState(0).randn(_SAMPLES.value, width).astype('float32')
  began, cpu = time.perf_counter(), time.process_time()
  pruned = graph_prune.prune_oneshot(
    model,
    x,
    f'prune_option={method},target_sparsity={_TARGET.value},'
    'do_not_prune=[logits]',
    max_examples=_SAMPLES.value,
  )
  seconds = time.perf_counter() - began
  cpu_seconds = time.process_time() - cpu
  sparsity = pruned.sparsity()
  record = dict(
    method=method,
    seconds=seconds,
    cpu_seconds=cpu_seconds,
    load_average=os.getloadavg(),
    layers=layers,
    params=model.count_params(),
    weight_bytes=4 * model.count_params(),
    sparsity=float(sparsity.overall),
    errors=[float(r.error) for r in pruned.report.oneshot],
  )
  with open(path, 'w') as f:
    json.dump(record, f)


def run_method(method: str, tmp: str) -> dict:
  """One method in a child process; its record with the child's peak RSS."""
  path = os.path.join(tmp, f'{method}.json')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  args = [
    sys.executable,
    os.path.abspath(__file__),
    f'--child={method}',
    f'--result={path}',
    f'--params={_PARAMS.value}',
    f'--width={_WIDTH.value}',
    f'--samples={_SAMPLES.value}',
    f'--target_sparsity={_TARGET.value}',
  ]
  began = time.perf_counter()
  proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
  _, status, usage = os.wait4(proc.pid, 0)
  record = dict(
    method=method,
    process_seconds=time.perf_counter() - began,
    peak_rss_mib=usage.ru_maxrss / 1024,
    returncode=os.waitstatus_to_exitcode(status),
  )
  if record['returncode'] == 0:
    with open(path) as f:
      record.update(json.load(f))
  return record


def main(argv):
  del argv
  if _CHILD.value:
    run_child(_CHILD.value, _RESULT.value)
    return
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for method in _METHODS.value:
      rows.append(run_method(method, tmp))
      print(json.dumps(rows[-1]), flush=True)
  print()
  print(
    '| method | layers | params (M) | prune_oneshot (s) | process (s) '
    '| peak RSS (MiB) | peak / weights |'
  )
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    if r['returncode']:
      print(f'| {r["method"]} | failed rc={r["returncode"]} | | | | | | |')
      continue
    print(
      f'| {r["method"]} | {r["layers"]} | {r["params"] / 1e6:.1f} '
      f'| {r["seconds"]:.1f} | {r["process_seconds"]:.1f} '
      f'| {r["cpu_seconds"]:.0f} '
      f'| {r["peak_rss_mib"]:.0f} '
      f'| {r["peak_rss_mib"] * 2**20 / r["weight_bytes"]:.2f}x |'
    )
  for r in rows:
    if r['method'] == 'sparsegpt' and not r['returncode']:
      met = r['seconds'] <= GOAL_SECONDS
      print(
        f'\nsparsegpt {r["params"] / 1e6:.0f} M from {_SAMPLES.value} samples: '
        f'{r["seconds"]:.0f} s (goal {GOAL_SECONDS:.0f} s): '
        f'{"met" if met else "MISSED"}'
      )
  results_io.write(_OUTPUT.value, dict(samples=_SAMPLES.value, rows=rows))


if __name__ == '__main__':
  app.run(main)
