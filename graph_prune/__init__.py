"""graph_prune: magnitude pruning for TensorFlow 2, done as a graph pass."""

from graph_prune.errors import GraphPruneError
from graph_prune.errors import GraphRewriteError
from graph_prune.errors import HParamsError
from graph_prune.errors import MaskError
from graph_prune.errors import NoPrunableWeightsError
from graph_prune.errors import UntraceableError
from graph_prune.errors import WeightMatchError
from graph_prune.hparams import parse_hparams
from graph_prune.hparams import PruningHParams
from graph_prune.pruned import apply_pruning
from graph_prune.pruned import PrunedModel
from graph_prune.pruned import Sparsity

__all__ = [
    'GraphPruneError',
    'GraphRewriteError',
    'HParamsError',
    'MaskError',
    'NoPrunableWeightsError',
    'PrunedModel',
    'PruningHParams',
    'Sparsity',
    'UntraceableError',
    'WeightMatchError',
    'apply_pruning',
    'parse_hparams',
]
