"""Errors of training runs: their data, models, settings and checkpoints.

Defined in `graph_prune.errors` (the core must not import train/); here
for the training code and its users.
"""

from graph_prune.errors import ConfigError
from graph_prune.errors import DataError
from graph_prune.errors import ModelDirBusyError
from graph_prune.errors import ResumeError
from graph_prune.errors import ResumeMismatchError
from graph_prune.errors import UnknownModelError

__all__ = [
  'ConfigError',
  'DataError',
  'ModelDirBusyError',
  'ResumeError',
  'ResumeMismatchError',
  'UnknownModelError',
]
