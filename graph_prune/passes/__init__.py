"""The graph pass: find prunable weights, replace each by `weight * mask`.

scan = find_weights(traced, do_not_prune)        # what can be pruned
result = insert_masks(traced, {name: mask})      # a PassResult
fn, report = result.graph, result.report         # the rewritten function
y = call(fn, x)              # in a tf.function: imported in place

What is in this package:
  * The IR and the interface: `graph_ir` (naming contract, tensor names,
    `FunctionGraph`), `rules` (per-op tables), `validity` (whether a graph
    is well formed, per kind), `driver` (`PassResult`, `Pass`,
    `run_passes`: a validity check before and after each pass).
  * Passes: take a graph, return a new one and a report in a
    `driver.PassResult`, never modify their input: `custom_gradients`,
    `inline`, `bind_weights`, `lower` (insertion's, in that order, run by
    `insert`, whose `insert_masks` builds the `tf.function`), `flatten`
    (inline + lower), `fold_masks`, `drop_unused`, `variable_view`
    (`const_view`, `thaw`), `shrink_units`.
  * Analyses: read a graph, rewrite nothing, return their own typed result
    (never a `PassResult`): `scan` (`find_weights` -> `WeightScan`,
    `analyse` -> `Analysis`), `fold_checks` (checks, raise or return
    nothing), `tape_ops.recordable` (`tape_ops.record` records imported
    ops on tapes at call time), and the two channel analyses over one op
    table (`channel_ops`: op -> kind and constant; `channel_classes`: the
    union-find): training's `channel_groups` (result types in
    `channel_group_types`) and shrink's unit analysis
    `unit_traversal`/`unit_rules`/`unit_layout_rules`/
    `unit_reshape_rules`/`unit_flow`/`unit_removal`/`unit_costs` (which
    `shrink_units` runs); `graph_cones` (which tensors vary, which variables
    a parameter reads) serves training's analyses. Attention heads: one walk
    of the heads axis (`head_walk`) with two recorders, training's
    `head_groups` and shrink's `head_flow` (which `shrink_units` adds to the
    unit flow).
  * Helpers of one pass: `function_body` (the bodies `fold_masks` edits),
    `folded_values` (the folded values `fold_masks` makes), `mask_keys`
    (`insert_masks`' masks by weight name, checked), `replicas` (the copy
    of a distributed variable a graph reads).
"""

from graph_prune.passes.driver import PassResult
from graph_prune.passes.graph_ir import MASKED_WEIGHT_SUFFIX
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
