"""Errors of the pruning study (defined in `graph_prune.errors`)."""

from graph_prune.errors import SweepConfigError

__all__ = ['SweepConfigError']
