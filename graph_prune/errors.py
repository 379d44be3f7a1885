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
