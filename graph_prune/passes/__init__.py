"""The graph pass: find prunable weights, replace each by `weight * mask`.

scan = find_weights(traced, do_not_prune)        # what can be pruned
result = insert_masks(traced, {name: mask})      # a PassResult
fn, report = result.graph, result.report         # the rewritten function
y = call(fn, x)              # in a tf.function: imported in place
"""

from graph_prune.passes.graph_ir import MASKED_WEIGHT_SUFFIX
from graph_prune.passes.graph_ir import PassResult
from graph_prune.passes.insert import call
from graph_prune.passes.insert import insert_masks
from graph_prune.passes.insert import MaskedWeight
from graph_prune.passes.insert import RewriteReport
from graph_prune.passes.scan import find_weights
from graph_prune.passes.scan import require_candidates
from graph_prune.passes.scan import Skipped
from graph_prune.passes.scan import WeightScan
from graph_prune.passes.scan import WeightUse

__all__ = [
  'call',
  'find_weights',
  'insert_masks',
  'require_candidates',
  'MaskedWeight',
  'PassResult',
  'RewriteReport',
  'Skipped',
  'WeightScan',
  'WeightUse',
  'MASKED_WEIGHT_SUFFIX',
]
