"""Errors of training runs: their data, models, settings and checkpoints.

Also importable as `graph_prune.errors.X` (and, for those in its `__all__`,
`graph_prune.X`).
"""

from graph_prune import errors


class DataError(errors.GraphPruneError, ValueError):
  """A dataset file or folder is missing or malformed."""


class UnknownModelError(errors.GraphPruneError, ValueError):
  """A model name or an input shape the built-in models cannot take."""


class ConfigError(errors.GraphPruneError, ValueError):
  """A training setting is out of range, or disagrees with model_dir."""


class ResumeError(errors.GraphPruneError, ValueError):
  """A model_dir holds a checkpoint that does not fit the model being built."""


class ModelDirBusyError(ConfigError):
  """Another live training run holds the lock of the model_dir."""


class ResumeMismatchError(ConfigError):
  """A rerun's flags differ from the run recorded in its model_dir."""
