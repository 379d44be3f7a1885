"""Interleaved timing of model variants, shared by the latency benchmarks."""

import time


def interleaved(fns, x, rounds, min_calls=3):
  """Seconds per call of each of `fns` on `x`, one list entry per round.

  Every function runs once first (tracing); the number of calls per round
  makes `fns['dense']` take about 0.2 s (at least `min_calls`). Variants run
  interleaved, the order rotating per round, so load changes on a shared
  machine hit every variant alike.
  """
  for fn in fns.values():
    fn(x)
  start = time.perf_counter()
  fns['dense'](x).numpy()
  elapsed = max(time.perf_counter() - start, 1e-6)
  calls = int(max(min_calls, min(300, 0.2 / elapsed)))
  times = {k: [] for k in fns}
  keys = list(fns)
  for r in range(rounds):
    order = keys[r % len(keys) :] + keys[: r % len(keys)]
    for key in order:
      start = time.perf_counter()
      for _ in range(calls):
        out = fns[key](x)
      out.numpy()
      times[key].append((time.perf_counter() - start) / calls)
  return times
