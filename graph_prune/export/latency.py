"""Timing a stripped and a shrunk model side by side, for the shrink report.

Both run on the same random input, in alternating order within each round;
the report gives medians and minima over rounds (the bench's method), so a
slow moment of a shared machine hits both alike.
"""

import time
from typing import Sequence

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.export import shrink_report


def check_batches(batches: Sequence[int]) -> None:
  """Raises unless every batch size is a positive integer.

  Raises:
    LatencyBatchesError: naming the first bad batch size.
  """
  for batch in batches:
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)):
      raise errors.LatencyBatchesError(
        f'latency_batches holds {batch!r}, not an integer; pass positive '
        'batch sizes, e.g. latency_batches=[1, 256].'
      )
    if batch < 1:
      raise errors.LatencyBatchesError(
        f'latency_batches holds batch size {batch}; a batch holds at least '
        'one example, so pass positive batch sizes, e.g. '
        'latency_batches=[1, 256].'
      )


def measure_latency(
  stripped, shrunk, input_signature, batches: Sequence[int], rounds: int = 7
):
  """Times `stripped(x)` and `shrunk(x)`, interleaved, at each batch size.

  Each round runs both on the same input, in alternating order, for a fixed
  number of calls chosen from a first timing; medians and minima are over
  rounds.

  Returns:
    A list of `shrink_report.Latency`.

  Raises:
    LatencyBatchesError: a batch size is not a positive integer.
  """
  check_batches(batches)
  rows = []
  for batch in batches:
    args = _random_inputs(input_signature, batch)
    times = {'stripped': [], 'shrunk': []}
    models = {'stripped': stripped, 'shrunk': shrunk}
    for model in models.values():
      model(*args)  # trace and warm up
    calls = _calls_per_round(stripped, args)
    for r in range(rounds):
      order = ('stripped', 'shrunk') if r % 2 == 0 else ('shrunk', 'stripped')
      for key in order:
        start = time.perf_counter()
        for _ in range(calls):
          out = models[key](*args)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times[key].append((time.perf_counter() - start) / calls)
    rows.append(
      shrink_report.Latency(
        batch,
        float(np.median(times['stripped'])),
        float(np.min(times['stripped'])),
        float(np.median(times['shrunk'])),
        float(np.min(times['shrunk'])),
      )
    )
  return rows


def _calls_per_round(model, args, target_seconds=0.05):
  start = time.perf_counter()
  model(*args)
  elapsed = time.perf_counter() - start
  return int(max(1, min(200, target_seconds / max(elapsed, 1e-6))))


def _random_inputs(input_signature, batch):
  rng = np.random.RandomState(0)
  args = []
  for spec in tf.nest.flatten(input_signature):
    dims = spec.shape.as_list()
    shape = [batch if dims[0] is None else dims[0]] + [
      d if d is not None else 1 for d in dims[1:]
    ]
    if spec.dtype.is_floating:
      args.append(tf.constant(rng.rand(*shape), dtype=spec.dtype))
    else:
      args.append(tf.zeros(shape, dtype=spec.dtype))
  return tf.nest.pack_sequence_as(input_signature, args)
