"""Error types raised by graph_prune.

Every error caused by bad user input is a `ValueError` subclass, so callers
that already catch `ValueError` keep working, while callers that want to
tell the cases apart can catch the specific type.

The errors of the binaries (bad data, models, training settings, sweeps) live
with them, in `graph_prune.train.errors` and `graph_prune.study.errors`; they
stay importable from here (see `__getattr__` at the end).
"""

import importlib


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


class StripError(GraphPruneError, ValueError):
  """A pruned model cannot be stripped or exported as asked."""


class UnsupportedSaveError(StripError):
  """A pruned model was asked to be saved in a form graph_prune cannot write.

  For example a Keras trainer's `save('model.keras')`: the export is
  `graph_prune.export_saved_model`, a checkpoint `tf.train.Checkpoint`.
  """


class SavedModelNotFoundError(StripError):
  """The input path does not exist or is not a SavedModel directory."""


class NoPruningVariablesError(StripError):
  """The input holds no mask variable of graph_prune."""


class UnknownSignatureError(StripError):
  """A signature key names no signature of the SavedModel."""


class OutputExistsError(StripError):
  """An output path exists (non-empty) and overwriting was not asked for."""


class FoldError(StripError):
  """A masked weight cannot be folded (its mask into its value)."""


class ProtoLimitError(StripError):
  """A format that holds weights as constants cannot hold this model's."""


class StrategyError(GraphPruneError, ValueError):
  """A `tf.distribute` strategy cannot be set up or used as asked."""


class UnsupportedStrategyError(StrategyError):
  """graph_prune does not support this `tf.distribute` strategy."""


class ArgumentTypeError(GraphPruneError, TypeError, ValueError):
  """An argument has the wrong type (e.g. `training='yes'`, not a bool)."""


class ExampleDataError(GraphPruneError, ValueError):
  """Example inputs a user handed in cannot feed the model.

  Raised by `graph_prune.data_inputs.read_example_inputs` (TFLite's
  representative data, calibration data): the data is missing, unreadable,
  empty, not finite, of a non-numeric or complex dtype, or does not fit the
  model's input signature (which input, which dimension).
  """


class TFLiteExportError(StripError):
  """A TFLite export was asked for with a bad option (quantization mode)."""


class RepresentativeDataError(TFLiteExportError, ExampleDataError):
  """Representative data for quantization is missing, unreadable or wrong.

  Also an `ExampleDataError`: the data is read by `data_inputs` like every
  example input a user hands in.
  """


class KerasStripError(StripError):
  """`strip_keras` got a computation that is not a Keras model."""


# The binaries' errors, importable from here as before they moved. Looked up
# on first use rather than imported at the top: their modules import this one
# (a cycle), and the core, which imports this module, must not import train/
# or study/ (data flows down: cli -> train/study -> export -> core).
_MOVED = {
  'ConfigError': 'graph_prune.train.errors',
  'DataError': 'graph_prune.train.errors',
  'ResumeError': 'graph_prune.train.errors',
  'ModelDirBusyError': 'graph_prune.train.errors',
  'ResumeMismatchError': 'graph_prune.train.errors',
  'UnknownModelError': 'graph_prune.train.errors',
  'SweepConfigError': 'graph_prune.study.errors',
}


def __getattr__(name):
  if name in _MOVED:
    return getattr(importlib.import_module(_MOVED[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


class NonFiniteWeightError(MaskError):
  """A weight holds NaN or Inf, so its mask cannot be computed.

  Raised by an eager `mask_update`/`conditional_mask_update`; inside a
  `tf.function` the same message arrives as TensorFlow's
  `tf.errors.InvalidArgumentError` (the check runs in the graph). No mask,
  threshold or step was changed by the failed update.
  """


class OutputWriteError(GraphPruneError, ValueError):
  """An output cannot be written: the disk is full, read-only or forbidden.

  Names the final output path (not the hidden staging path the write went
  to); nothing of the output is left behind.
  """


class OutputPathError(StripError):
  """An output path cannot be used: its parent is a file, or a file output
  names a directory."""


class LatencyBatchesError(StripError):
  """`latency_batches` holds a batch size that is not a positive integer."""
