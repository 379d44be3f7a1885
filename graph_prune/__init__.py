"""graph_prune: magnitude pruning for TensorFlow 2, done as a graph pass.

pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.9')
...  # train, calling pruned.conditional_mask_update(optimizer.iterations)
graph_prune.export_saved_model(pruned, '/tmp/model')  # masks folded in

The public names are looked up on first use (PEP 562), so that `import
graph_prune` does not import TensorFlow yet: the binaries can then keep
TensorFlow's start-up log lines off the terminal (graph_prune/cli/main.py)
before they import it. To add a public name, add it to `_PUBLIC`.
"""

import importlib
from typing import TYPE_CHECKING

# Public name -> the module that defines it.
_PUBLIC = {
  'ArgumentTypeError': 'graph_prune.errors',
  'ConfigError': 'graph_prune.errors',
  'DataError': 'graph_prune.errors',
  'FoldError': 'graph_prune.errors',
  'GraphPruneError': 'graph_prune.errors',
  'GraphRewriteError': 'graph_prune.errors',
  'HParamsError': 'graph_prune.errors',
  'MaskError': 'graph_prune.errors',
  'NoPrunableWeightsError': 'graph_prune.errors',
  'NoPruningVariablesError': 'graph_prune.errors',
  'OneShotError': 'graph_prune.errors',
  'OutputExistsError': 'graph_prune.errors',
  'PrunedModel': 'graph_prune.model.pruned_model',
  'PruningHParams': 'graph_prune.config.hparams',
  'ResumeError': 'graph_prune.errors',
  'SavedModelNotFoundError': 'graph_prune.errors',
  'Sparsity': 'graph_prune.model.mask_update',
  'StrategyError': 'graph_prune.errors',
  'StripError': 'graph_prune.errors',
  'UnknownSignatureError': 'graph_prune.errors',
  'UnsupportedSaveError': 'graph_prune.errors',
  'UnsupportedStrategyError': 'graph_prune.errors',
  'UntraceableError': 'graph_prune.errors',
  'WeightMatchError': 'graph_prune.errors',
  'apply_pruning': 'graph_prune.model.pruned_model',
  'export_saved_model': 'graph_prune.export.strip',
  'keras_trainer': 'graph_prune.model.keras_fit',
  'parse_hparams': 'graph_prune.config.hparams',
  'shrink': 'graph_prune.export.shrink',
  'strip': 'graph_prune.export.strip',
  'strip_saved_model': 'graph_prune.export.strip_saved_model',
  'export_tflite': 'graph_prune.export.tflite',
  'strip_keras': 'graph_prune.export.keras_model',
  'TFLiteExportError': 'graph_prune.errors',
  'RepresentativeDataError': 'graph_prune.errors',
  'KerasStripError': 'graph_prune.errors',
  'save_pruned': 'graph_prune.model.saved_model_conventions',
  'ExampleDataError': 'graph_prune.errors',
  'ProtoLimitError': 'graph_prune.errors',
  'read_example_inputs': 'graph_prune.model.data_inputs',
  'prune_oneshot': 'graph_prune.oneshot.api',
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
  module = _PUBLIC.get(name)
  if module is None:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools and IDEs see
  from graph_prune.config.hparams import parse_hparams  # noqa: F401
  from graph_prune.config.hparams import PruningHParams  # noqa: F401
  from graph_prune.errors import ArgumentTypeError  # noqa: F401
  from graph_prune.errors import ConfigError  # noqa: F401
  from graph_prune.errors import DataError  # noqa: F401
  from graph_prune.errors import ExampleDataError  # noqa: F401
  from graph_prune.errors import FoldError  # noqa: F401
  from graph_prune.errors import GraphPruneError  # noqa: F401
  from graph_prune.errors import GraphRewriteError  # noqa: F401
  from graph_prune.errors import HParamsError  # noqa: F401
  from graph_prune.errors import KerasStripError  # noqa: F401
  from graph_prune.errors import MaskError  # noqa: F401
  from graph_prune.errors import NoPrunableWeightsError  # noqa: F401
  from graph_prune.errors import NoPruningVariablesError  # noqa: F401
  from graph_prune.errors import OneShotError  # noqa: F401
  from graph_prune.errors import OutputExistsError  # noqa: F401
  from graph_prune.errors import ProtoLimitError  # noqa: F401
  from graph_prune.errors import RepresentativeDataError  # noqa: F401
  from graph_prune.errors import ResumeError  # noqa: F401
  from graph_prune.errors import SavedModelNotFoundError  # noqa: F401
  from graph_prune.errors import StrategyError  # noqa: F401
  from graph_prune.errors import StripError  # noqa: F401
  from graph_prune.errors import TFLiteExportError  # noqa: F401
  from graph_prune.errors import UnknownSignatureError  # noqa: F401
  from graph_prune.errors import UnsupportedSaveError  # noqa: F401
  from graph_prune.errors import UnsupportedStrategyError  # noqa: F401
  from graph_prune.errors import UntraceableError  # noqa: F401
  from graph_prune.errors import WeightMatchError  # noqa: F401
  from graph_prune.export.keras_model import strip_keras  # noqa: F401
  from graph_prune.export.shrink import shrink  # noqa: F401
  from graph_prune.export.strip import export_saved_model  # noqa: F401
  from graph_prune.export.strip import strip  # noqa: F401
  from graph_prune.export.strip_saved_model import strip_saved_model  # noqa: F401
  from graph_prune.export.tflite import export_tflite  # noqa: F401
  from graph_prune.model.data_inputs import read_example_inputs  # noqa: F401
  from graph_prune.model.keras_fit import keras_trainer  # noqa: F401
  from graph_prune.model.mask_update import Sparsity  # noqa: F401
  from graph_prune.model.pruned_model import apply_pruning  # noqa: F401
  from graph_prune.model.pruned_model import PrunedModel  # noqa: F401
  from graph_prune.model.saved_model_conventions import save_pruned  # noqa: F401
  from graph_prune.oneshot.api import prune_oneshot  # noqa: F401
