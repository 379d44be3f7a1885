"""Timing training steps: interleaved rounds, ratios to a baseline."""

import time

import numpy as np


def seconds_per_step(step, args, n):
  """Mean wall time of `n` calls of `step(*args)` after one warm-up call.

  `step` is a tf.function returning a tensor; the last result is fetched so
  that the asynchronous runtime has finished every call.
  """
  step(*args).numpy()
  start = time.perf_counter()
  for _ in range(n):
    result = step(*args)
  result.numpy()
  return (time.perf_counter() - start) / n


def interleaved(variants, args, steps, repeats, baseline='dense'):
  """Times every variant once per round, `repeats` rounds.

  Interleaving makes noise from other processes hit the variants alike.

  Args:
    variants: {name: step tf.function}, including `baseline`.
    args: the arguments of every step.
    steps: timed steps per variant and round.
    repeats: rounds.
    baseline: the variant the ratios are taken to.

  Returns:
    {name: {'ms_per_step', 'ratio_to_dense', 'min_ms_per_step',
    'min_ratio_to_dense'}}: the median over rounds and the minimum (the
    estimate least disturbed by other processes), as ratios to `baseline`.
  """
  times = {name: [] for name in variants}
  for _ in range(repeats):
    for name, step in variants.items():
      times[name].append(seconds_per_step(step, args, steps))
  return summarize(times, baseline)


def summarize(times, baseline='dense'):
  """{name: [seconds per step per round]} -> the rows `interleaved` returns."""
  median = {k: float(np.median(v)) for k, v in times.items()}
  best = {k: float(min(v)) for k, v in times.items()}
  return {
    k: {
      'ms_per_step': 1e3 * median[k],
      'ratio_to_dense': median[k] / median[baseline],
      'min_ms_per_step': 1e3 * best[k],
      'min_ratio_to_dense': best[k] / best[baseline],
    }
    for k in times
  }


def print_table(rows, width=12):
  """Prints `summarize`'s rows: ms per step and ratios, median and minimum."""
  print(
    f'{"variant":<{width}} {"ms/step":>8} {"x dense":>8} {"min ms":>8} '
    f'{"x dense":>8}'
  )
  for name, row in rows.items():
    print(
      f'{name:<{width}} {row["ms_per_step"]:8.2f} '
      f'{row["ratio_to_dense"]:8.3f} {row["min_ms_per_step"]:8.2f} '
      f'{row["min_ratio_to_dense"]:8.3f}'
    )
