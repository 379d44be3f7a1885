"""Errors of the pruning study.

Also importable as `graph_prune.errors.SweepConfigError`.
"""

from graph_prune import errors


class SweepConfigError(errors.GraphPruneError, ValueError):
  """A sweep setting is malformed (a method name, a sparsity, a count)."""
