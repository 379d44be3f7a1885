"""Shrinking a pruned model: zero units removed physically.

    shrunk = graph_prune.shrink(pruned)          # shrunk(x) ~= pruned(x)
    print(shrunk.shrink_report.to_text())
    graph_prune.export_saved_model(pruned, '/tmp/model', shrink=True)

`shrink` is `strip` with one more pass on each stripped graph
(`passes/shrink_units.py`): every output unit whose kernel slice is all zero
(what `granularity=unit` prunes) goes, with its bias, its BatchNorm
parameters, its depthwise channels and the next layer's input rows, where
that leaves every output the same. Channels coupled by a residual add, a
squeeze-and-excitation gate or a concatenation go when they are zero in
every layer of their group (`report.main.coupled` lists the groups); where
removal would change an output, the unit stays and the report says why.
Dense kernels that are smaller run faster on any hardware, which zeros
inside a dense kernel do not.
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from graph_prune.export.latency import check_batches
from graph_prune.export.latency import measure_latency
from graph_prune.export.strip import strip


def shrink(
  pruned,
  signatures: Optional[Mapping[str, Any]] = None,
  latency_batches: Sequence[int] = (),
):
  """Returns `pruned` as a `StrippedModel` with its zero units removed.

  Args:
    pruned: a `PrunedModel` from `graph_prune.apply_pruning`.
    signatures: as in `graph_prune.strip`.
    latency_batches: batch sizes at which to time the stripped and the
      shrunk `__call__` (random inputs; fixed input dims needed); the times
      go into the report's `latency`. Empty: no timing.

  Returns:
    A `StrippedModel` like `strip(pruned, signatures)`'s, computing the same
    outputs to float tolerance, with a `shrink_report`
    (`shrink_report.ShrinkReport`).

  Raises:
    LatencyBatchesError: a batch size is not a positive integer.
    StripError, FoldError: as `strip`.
  """
  check_batches(latency_batches)
  module = strip(pruned, signatures, shrink=True)
  if latency_batches:
    stripped = strip(pruned)
    rows = measure_latency(
      stripped, module, pruned.__call__.input_signature, latency_batches
    )
    module.shrink_report = dataclasses.replace(
      module.shrink_report, latency=tuple(rows)
    )
  return module
