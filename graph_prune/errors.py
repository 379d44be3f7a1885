"""Error types raised by graph_prune.

Every error caused by bad user input is a `ValueError` subclass, so callers
that already catch `ValueError` keep working, while callers that want to
tell the cases apart can catch the specific type.
"""


class GraphPruneError(Exception):
  """Base class of every error graph_prune raises on purpose."""


class HParamsError(GraphPruneError, ValueError):
  """A pruning hyperparameter spec string or value is invalid."""


class UnknownHParamError(HParamsError):
  """A spec names an hparam that does not exist."""


class HParamTypeError(HParamsError):
  """An hparam value has the wrong type (e.g. a float for an int hparam)."""


class HParamValueError(HParamsError):
  """An hparam value is of the right type but breaks a rule (range, form)."""


class HParamSyntaxError(HParamsError):
  """A spec string is malformed (bad clause, unbalanced brackets, ...)."""


class MaskError(GraphPruneError, ValueError):
  """A weight cannot be masked as asked (shape, dtype or structure)."""


class GraphRewriteError(GraphPruneError, ValueError):
  """The graph pass cannot rewrite the given computation."""


class UntraceableError(GraphRewriteError):
  """The computation cannot be traced into one concrete graph."""


class NoPrunableWeightsError(GraphRewriteError):
  """The traced graph holds no weight that can be pruned."""


class WeightMatchError(HParamsError):
  """Several entries of an hparam map match one weight."""


class DataError(GraphPruneError, ValueError):
  """A dataset file or folder is missing or malformed."""


class StripError(GraphPruneError, ValueError):
  """A pruned model cannot be stripped or exported as asked."""


class SavedModelNotFoundError(StripError):
  """The input path does not exist or is not a SavedModel directory."""


class NoPruningVariablesError(StripError):
  """The input holds no mask variable of graph_prune."""


class UnknownSignatureError(StripError):
  """A signature key names no signature of the SavedModel."""


class OutputExistsError(StripError):
  """An output path exists (non-empty) and overwriting was not asked for."""


class FoldError(StripError):
  """A masked weight cannot be folded into a constant."""


class StrategyError(GraphPruneError, ValueError):
  """A `tf.distribute` strategy cannot be set up or used as asked."""


class UnsupportedStrategyError(StrategyError):
  """graph_prune does not support this `tf.distribute` strategy."""


class UnknownModelError(GraphPruneError, ValueError):
  """A model name or an input shape the built-in models cannot take."""


class ConfigError(GraphPruneError, ValueError):
  """A training setting is out of range, or disagrees with model_dir."""


class ResumeError(GraphPruneError, ValueError):
  """A model_dir holds a checkpoint that does not fit the model being built."""


class SweepConfigError(GraphPruneError, ValueError):
  """A sweep setting is malformed (a method name, a sparsity, a count)."""
