"""The graph pass: find prunable weights, replace each by `weight * mask`.

  scan = find_weights(traced, do_not_prune)        # what can be pruned
  fn, report = insert_masks(traced, {name: mask})  # the rewritten function
"""

from graph_prune.rewrite.insert import insert_masks
from graph_prune.rewrite.insert import MASKED_WEIGHT_SUFFIX
from graph_prune.rewrite.insert import MaskedWeight
from graph_prune.rewrite.insert import RewriteReport
from graph_prune.rewrite.scan import find_weights
from graph_prune.rewrite.scan import require_candidates
from graph_prune.rewrite.scan import Skipped
from graph_prune.rewrite.scan import WeightScan
from graph_prune.rewrite.scan import WeightUse

__all__ = [
    'find_weights', 'insert_masks', 'require_candidates', 'MaskedWeight',
    'RewriteReport', 'Skipped', 'WeightScan', 'WeightUse', 'MASKED_WEIGHT_SUFFIX',
]
