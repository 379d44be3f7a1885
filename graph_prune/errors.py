"""Error types raised by graph_prune.

Every error caused by bad user input is a `ValueError` subclass, so callers
that already catch `ValueError` keep working, while callers that want to
tell the cases apart can catch the specific type.

The errors of the binaries (bad data, models, training settings, sweeps) are
here too, and re-exported by `graph_prune.train.errors` and
`graph_prune.study.errors`, so that this module imports nothing.
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

  Raised by `graph_prune.model.data_inputs.read_example_inputs` (TFLite's
  representative data, calibration data): the data is missing, unreadable,
  empty, not finite, of a non-numeric or complex dtype, or does not fit the
  model's input signature (which input, which dimension).
  """


class OneShotError(GraphPruneError, ValueError):
  """One-shot pruning (`prune_oneshot`) cannot prune a weight as asked.

  A masked weight is read by an op whose input the statistics cannot be
  taken from (leave it out with `do_not_prune`), or is shared by two ops.
  """


class StatisticsError(OneShotError):
  """Calibration rows that do not fit a layer, or hold NaN or Inf."""


class HessianError(OneShotError):
  """A layer's input Hessian does not match its weight or is not usable."""


class TFLiteExportError(StripError):
  """A TFLite export was asked for with a bad option (quantization mode)."""


class RepresentativeDataError(TFLiteExportError, ExampleDataError):
  """Representative data for quantization is missing, unreadable or wrong.

  Also an `ExampleDataError`: the data is read by `data_inputs` like every
  example input a user hands in.
  """


class KerasStripError(StripError):
  """`strip_keras` got a computation that is not a Keras model."""


# The errors of the binaries' runs (training data, models, settings,
# checkpoints, sweeps). They are defined here, with every other error, so
# that this module imports nothing of train/ or study/; those packages'
# `errors` modules re-export them.


class DataError(GraphPruneError, ValueError):
  """A dataset file or folder is missing or malformed."""


class UnknownModelError(GraphPruneError, ValueError):
  """A model name or an input shape the built-in models cannot take."""


class ConfigError(GraphPruneError, ValueError):
  """A training setting is out of range, or disagrees with model_dir."""


class ResumeError(GraphPruneError, ValueError):
  """A model_dir holds a checkpoint that does not fit the model being built."""


class ModelDirBusyError(ConfigError):
  """Another live training run holds the lock of the model_dir."""


class ResumeMismatchError(ConfigError):
  """A rerun's flags differ from the run recorded in its model_dir."""


class SweepConfigError(GraphPruneError, ValueError):
  """A sweep setting is malformed (a method name, a sparsity, a count)."""


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
