"""graph_prune: magnitude pruning for TensorFlow 2, done as a graph pass.

pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.9')
...  # train, calling pruned.conditional_mask_update(optimizer.iterations)
graph_prune.export_saved_model(pruned, '/tmp/model')  # masks folded in
"""

from graph_prune import errors as _errors
from graph_prune.errors import FoldError
from graph_prune.errors import GraphPruneError
from graph_prune.errors import GraphRewriteError
from graph_prune.errors import HParamsError
from graph_prune.errors import MaskError
from graph_prune.errors import NoPrunableWeightsError
from graph_prune.errors import NoPruningVariablesError
from graph_prune.errors import OutputExistsError
from graph_prune.errors import SavedModelNotFoundError
from graph_prune.errors import StrategyError
from graph_prune.errors import StripError
from graph_prune.errors import UnknownSignatureError
from graph_prune.errors import UnsupportedStrategyError
from graph_prune.errors import UntraceableError
from graph_prune.errors import WeightMatchError
from graph_prune.export.strip import export_saved_model
from graph_prune.export.strip import strip
from graph_prune.export.strip import strip_saved_model
from graph_prune.hparams import parse_hparams
from graph_prune.hparams import PruningHParams
from graph_prune.keras_fit import keras_trainer
from graph_prune.pruned_model import apply_pruning
from graph_prune.pruned_model import PrunedModel
from graph_prune.pruned_model import Sparsity

__all__ = [
  'ConfigError',
  'DataError',
  'FoldError',
  'GraphPruneError',
  'GraphRewriteError',
  'HParamsError',
  'MaskError',
  'NoPrunableWeightsError',
  'NoPruningVariablesError',
  'OutputExistsError',
  'PrunedModel',
  'PruningHParams',
  'ResumeError',
  'SavedModelNotFoundError',
  'Sparsity',
  'StrategyError',
  'StripError',
  'UnknownSignatureError',
  'UnsupportedStrategyError',
  'UntraceableError',
  'WeightMatchError',
  'apply_pruning',
  'export_saved_model',
  'keras_trainer',
  'parse_hparams',
  'strip',
  'strip_saved_model',
]

# The training binary's errors live in graph_prune.train.errors; looked up on
# first use so that importing graph_prune does not import train/.
_TRAINING_ERRORS = ('ConfigError', 'DataError', 'ResumeError')


def __getattr__(name):
  if name in _TRAINING_ERRORS:
    return getattr(_errors, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
