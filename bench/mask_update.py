"""Benchmark: one elementwise mask update against full sorts and np.partition.

Usage:
  python bench/mask_update.py [--sizes=1024,2048,4096,8192] [--repeats=5]
      [--slow_repeats=1] [--slow_limit_s=20]

For square float32 weights of each size (random normal, seed 0) at sparsity
0.9, times these rows (the median of --repeats rounds, after a warm-up call
that traces the tf.functions):

  exact update       |w|, exact selection, float mask (one tf.function)
  histogram update   the same with contrib's histogram method, nbins=256
  exact kernel       |w|, selection.prune_smallest, float mask: the update
                     without masking's extra work
  histogram kernel   the same with selection.histogram_prune
  floor              |w| >= constant, cast to float: the passes any exact
                     update must make, whatever the selection (a lower bound)
  tf.sort            tf.sort of the flattened |w|
  tf.math.top_k      top_k of the flattened |w| with k = size: what tfmot does
  np.partition       NumPy's single-threaded selection on the same |w|

The update rows time `graph_prune.masks.masking.elementwise_mask`. Fast rows are
interleaved round by round so that load from other processes hits them alike;
the slow rows (tf.sort and top_k) are traced without running, then timed
--slow_repeats times, and are
skipped above 4096x4096 when the time measured at the previous size,
extrapolated by n log n, exceeds --slow_limit_s.

TF's CPU ops pay page faults on every fresh output buffer (~100 ms per 256 MiB)
with the default allocator; run with TF_CPU_ALLOCATOR_USE_BFC=true to see the
kernels without that cost (the JSON records which allocator ran).

Prints a table of medians and minima with their ratios to np.partition (the
minimum is the estimate least disturbed by other processes on a shared
machine) and writes bench/results/mask_update.json.
"""

import json
import math
import os
import platform
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from graph_prune.masks import masking
from graph_prune.masks import selection

_SIZES = flags.DEFINE_list(
  'sizes',
  ['1024', '2048', '4096', '8192'],
  'Side lengths of the square weights.',
)
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed rounds of the fast rows.')
_SLOW_REPEATS = flags.DEFINE_integer(
  'slow_repeats', 1, 'Timed runs of tf.sort and top_k.'
)
_SLOW_LIMIT_S = flags.DEFINE_float(
  'slow_limit_s',
  20.0,
  'Above 4096x4096, skip tf.sort / top_k when extrapolated beyond this.',
)
_SPARSITY = flags.DEFINE_float('sparsity', 0.9, 'Fraction of weights pruned.')
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'mask_update.json'),
  'JSON output path.',
)

flags.register_validator(
  'sizes',
  lambda sizes: all(s.isdigit() and int(s) > 0 for s in sizes),
  message='--sizes must be positive integers, e.g. --sizes=1024,2048.',
)
flags.register_validator(
  'repeats', lambda r: r >= 1, message='--repeats must be >= 1.'
)
flags.register_validator(
  'slow_repeats', lambda r: r >= 1, message='--slow_repeats must be >= 1.'
)
flags.register_validator(
  'sparsity', lambda s: 0.0 <= s < 1.0, message='--sparsity must be in [0, 1).'
)

_NBINS = 256
_ROWS = (
  'exact update',
  'histogram update',
  'exact kernel',
  'histogram kernel',
  'floor',
  'tf.sort',
  'tf.math.top_k',
  'np.partition',
)
# Above this many weights, slow rows may be skipped (the brief's 4096x4096).
_SKIP_ABOVE = 4096 * 4096


def _num_prune(n, sparsity):
  """contrib's count: round(n * (1 - s)) weights survive, at least one."""
  return n - max(1, int(round(n * (1.0 - sparsity))))


def _kernel_fns(sparsity):
  """Updates straight on masks/selection: weight -> (mask, threshold)."""

  def exact(w):
    flat = tf.reshape(tf.abs(w), [-1])
    keep, threshold = selection.prune_smallest(
      flat, _num_prune(int(flat.shape[0]), sparsity)
    )
    return tf.reshape(tf.cast(keep, w.dtype), w.shape), threshold

  def histogram(w):
    keep, threshold = selection.histogram_prune(
      tf.reshape(tf.abs(w), [-1]), sparsity, _NBINS
    )
    return tf.reshape(tf.cast(keep, w.dtype), w.shape), threshold

  return exact, histogram


def _update_fns(sparsity):
  """The timed rows: {row: weight -> (float mask, threshold)}, and a label."""
  exact, histogram = _kernel_fns(sparsity)

  def masking_exact(w):
    return tuple(masking.elementwise_mask(w, sparsity, method='exact'))

  def masking_histogram(w):
    return tuple(
      masking.elementwise_mask(w, sparsity, method='histogram', nbins=_NBINS)
    )

  return (
    {
      'exact update': masking_exact,
      'histogram update': masking_histogram,
      'exact kernel': exact,
      'histogram kernel': histogram,
    },
    'graph_prune.masks.masking.elementwise_mask',
  )


def _floor(w, num_prune):
  # The cut is arbitrary: this row only measures the passes themselves.
  del num_prune
  bits = tf.bitcast(tf.abs(w), tf.int32)
  return tf.cast(bits >= 0x3FD00000, w.dtype), tf.zeros([])


def _sort(flat_abs, num_prune):
  return tf.sort(flat_abs)[num_prune]


def _top_k(flat_abs, num_prune):
  values, _ = tf.math.top_k(flat_abs, k=tf.size(flat_abs))
  return values[tf.size(flat_abs) - 1 - num_prune]


def _timed(fn):
  """Runs fn() and returns its wall time in seconds; fn must block."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _blocking(tf_fn, *args):
  """Calls a tf.function and waits for it by fetching a small output."""

  def call():
    out = tf_fn(*args)
    out = out[-1] if isinstance(out, tuple) else out
    out.numpy()

  return call


def bench_size(side, sparsity, update_fns, slow_estimates):
  """Times every row on a side x side weight; returns {row: [seconds]}."""
  rng = np.random.default_rng(0)
  w_np = rng.standard_normal((side, side), dtype=np.float32)
  abs_np = np.abs(w_np).ravel()
  w = tf.constant(w_np)
  flat_abs = tf.constant(abs_np)
  n = side * side
  num_prune = _num_prune(n, sparsity)
  k = tf.constant(num_prune)

  updates = {row: tf.function(fn) for row, fn in update_fns.items()}
  fast = {row: _blocking(fn, w) for row, fn in updates.items()}
  fast['floor'] = _blocking(tf.function(_floor), w, k)
  fast['np.partition'] = lambda: np.partition(abs_np, num_prune)
  for call in fast.values():
    call()  # Traces, and warms the allocator.
  times = {row: [] for row in fast}
  for _ in range(_REPEATS.value):
    for row, call in fast.items():
      times[row].append(_timed(call))

  mask, _ = updates['exact update'](w)
  kept = int(tf.math.count_nonzero(mask))
  check = {
    'exact_kept': kept,
    'expected_kept': n - num_prune,
    'exact_ok': kept == n - num_prune,
  }

  for row, fn in (('tf.sort', _sort), ('tf.math.top_k', _top_k)):
    estimate = slow_estimates.get(row)
    if n > _SKIP_ABOVE and estimate is not None:
      projected = (
        estimate[1] * (n * math.log(n)) / (estimate[0] * math.log(estimate[0]))
      )
      if projected > _SLOW_LIMIT_S.value:
        times[row] = None
        continue
    traced = tf.function(fn).get_concrete_function(flat_abs, k)
    times[row] = [
      _timed(_blocking(traced, flat_abs, k)) for _ in range(_SLOW_REPEATS.value)
    ]
    slow_estimates[row] = (n, float(np.median(times[row])))
  return times, check


def _summary(times):
  baseline = float(np.median(times['np.partition']))
  best = float(min(times['np.partition']))
  rows = {}
  for row in _ROWS:
    if row not in times:
      continue
    if times[row] is None:
      rows[row] = None
      continue
    median = float(np.median(times[row]))
    rows[row] = {
      'median_s': median,
      'min_s': float(min(times[row])),
      'runs_s': [float(t) for t in times[row]],
      'ratio_to_np_partition': median / baseline,
      'ratio_of_mins': min(times[row]) / best,
    }
  return rows


def _print_table(results):
  print(
    f'{"weight":>11}  {"row":<17} {"median":>12} {"ratio":>9}'
    f' {"min":>12} {"ratio":>9}   (ratios to np.partition)'
  )
  for result in results:
    side = result['side']
    for row, entry in result['rows'].items():
      if entry is None:
        print(f'{side:>5}x{side:<5}  {row:<17} {"skipped":>12}')
      else:
        print(
          f'{side:>5}x{side:<5}  {row:<17} '
          f'{entry["median_s"] * 1e3:9.1f} ms '
          f'{entry["ratio_to_np_partition"]:8.2f}x '
          f'{entry["min_s"] * 1e3:9.1f} ms '
          f'{entry["ratio_of_mins"]:8.2f}x'
        )


def main(argv):
  del argv
  update_fns, timed_fn = _update_fns(_SPARSITY.value)
  allocator = (
    'BFC'
    if os.environ.get('TF_CPU_ALLOCATOR_USE_BFC', '').lower() in ('1', 'true')
    else 'default'
  )
  print(
    f'Timing {timed_fn}; TF {tf.__version__}, CPU allocator {allocator}, '
    f'{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}.'
  )
  load_before = os.getloadavg()
  results, slow_estimates = [], {}
  for side in (int(s) for s in _SIZES.value):
    times, check = bench_size(side, _SPARSITY.value, update_fns, slow_estimates)
    results.append(
      {'side': side, 'elements': side * side, 'rows': _summary(times), **check}
    )
    print(
      f'  {side}x{side} done; exact mask keeps {check["exact_kept"]} '
      f'(expected {check["expected_kept"]}).',
      flush=True,
    )
  _print_table(results)
  meta = {
    'timed_function': timed_fn,
    'sparsity': _SPARSITY.value,
    'nbins': _NBINS,
    'repeats': _REPEATS.value,
    'slow_repeats': _SLOW_REPEATS.value,
    'cpu_allocator': allocator,
    'tensorflow': tf.__version__,
    'numpy': np.__version__,
    'python': platform.python_version(),
    'cpu_count': os.cpu_count(),
    'load_average_before': load_before,
    'load_average_after': os.getloadavg(),
  }
  os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
  with open(_OUT.value, 'w') as f:
    json.dump({'meta': meta, 'results': results}, f, indent=1)
  print(f'Wrote {_OUT.value}.')


if __name__ == '__main__':
  app.run(main)
