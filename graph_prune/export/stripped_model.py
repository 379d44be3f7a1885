"""The stripped computation: masks folded, weights still variables.

    stripped = strip_function(concrete_function, pruning, 'the model', copies)
    fn = rebuild(stripped, concrete_function, input_signature, copies)

`graph_prune.export.strip.strip` runs this for a live `PrunedModel` (its
`__call__`) and for each signature of a SavedModel of one. `strip_function`
takes the traced function's GraphDef as it is, each captured variable a
handle Placeholder, and runs the strip passes, checking the graph before
and after each (`passes/driver.py`): `fold_masks` replaces each masked
weight `Mul(weight, mask)` by a read of a new variable; `drop_unused` drops
everything no output needs, which takes the masks with it (the model's
function never reads thresholds, the saliency state or the step). Last it
checks that no mask, threshold, saliency variable or step and no
`masked_weight` Mul is left
(`fold_checks.check_stripped`). The folded variables are made by
`VariableCopies.folded`: `weight * mask` computed once by TensorFlow, +0.0
where pruned (for `export_saved_model`, variables without values whose
values go into the SavedModel's checkpoint a chunk at a time after it is
saved: `folded_checkpoint.py`). `rebuild` makes a `tf.function` that
imports the GraphDef and feeds each handle Placeholder its variable; a
`StrippedModel` holds one per signature.

Weights stay variables, as in a dense model (contrib froze them; so did
graph_prune until the export had to scale):
  * No GraphDef carries weight values, so the SavedModel stores every
    weight in `variables/` as a dense model's does (sharded checkpoint
    files, no 2 GB proto limit), saving costs what a checkpoint costs, and
    loading does not parse or optimise constants (measured:
    bench/scale.py, BUILD_NOTES).
  * Grappler sees no weight values when the function is instantiated, so
    the stripped graph runs as the dense one: with constant zero biases (an
    untrained Keras Dense) it would drop `BiasAdd(x, 0)`, which stops
    MatMul+BiasAdd+Relu from fusing (bench/export_size.py; BUILD_NOTES,
    'Measurements behind the code').
  * A folded weight is a fixed value: a non-trainable variable that no
    training updates. The other variables are copies of their values when
    `strip` ran (the stripped model does not follow later training of the
    original; strip again), or the originals themselves for an export that
    writes them and is done (`VariableCopies(share=True)`).
  * Signatures that share a masked weight share its folded variable.
  * Formats that need constants freeze at their own step
    (`frozen_strip.freeze` for the frozen GraphDef; the TFLite converter
    freezes by itself), within their 2 GB limit (`frozen_strip.check_fits`).
    Shrink reads the variables through constant stubs
    (`export/shrink_variables.py`).
"""

import dataclasses
import itertools
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.export import shrink_variables
from graph_prune.export.rebuild import rebuild  # noqa: F401
from graph_prune.export.rebuild import VariableCopies
from graph_prune.export.stripped_function import first_line  # noqa: F401
from graph_prune.export.stripped_function import register_rewritten
from graph_prune.export.stripped_function import StrippedFunction
from graph_prune.model import saved_model_conventions as conventions
from graph_prune.model.untracked import Untracked
from graph_prune.passes import driver
from graph_prune.passes import drop_unused
from graph_prune.passes import flatten
from graph_prune.passes import fold_checks
from graph_prune.passes import fold_masks
from graph_prune.passes import graph_ir
from graph_prune.passes.folded_values import FoldedWeight

# Makes names of rewritten functions and import scopes unique per process.
_call_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class PruningVariables:
  """The variables of the pruning, keyed by `id(variable.handle)`.

  Attributes:
    masks: handle id -> name of the weight the mask multiplies.
    others: handle id -> variable name, for thresholds, the saliency state
      (g and the old weights of a gradient `prune_option`) and the step.
  """

  masks: Mapping[int, str]
  others: Mapping[int, str]

  @classmethod
  def of(cls, owners: Sequence[Any]) -> 'PruningVariables':
    """Collects the variables of `PrunedModel`s (live or loaded)."""
    masks, others = {}, {}
    for owner in owners:
      # Unit parameters' masks (`unit_params=all`) fold like weights' masks.
      unit_masks = list(getattr(owner, 'unit_param_masks', ()))
      for mask in list(owner.masks) + unit_masks:
        name = graph_ir.variable_name(mask)
        weight = graph_ir.weight_of_mask(name)
        masks[id(mask.handle)] = name if weight is None else weight
      # A SavedModel written before `prune_option` has no saliency lists.
      saliency = [
        v
        for attr in ('gradients', 'old_weights', 'old_old_weights')
        for v in getattr(owner, attr, ())
      ]
      variables = (
        list(owner.thresholds) + saliency + [owner.last_mask_update_step]
      )
      for variable in variables:
        others[id(variable.handle)] = graph_ir.variable_name(variable)
    return cls(masks, others)


class StrippedModel(conventions.SavedModelConventions, tf.Module):
  """An inference-only model: masked weights folded, no pruning state.

  Attributes:
    signature_functions: signature key -> `tf.function` (with an input
      signature) computing that signature; `save` writes them.
    report: a `strip_report.StripReport` (no sizes).
    variables: the copies of the unpruned weights (tf.Module's property).
  """

  def __init__(
    self,
    call=None,
    signature_functions=None,
    report=None,
    variables=(),
    name=None,
    deferred=None,
  ):
    """Args: as the attributes; `deferred`, the `DeferredFolds` that made
    the folded variables without values (a model that can be saved, not
    called), or None."""
    super().__init__(name=name)
    # Tracked, so that SavedModels and checkpoints hold them.
    self.model_variables = list(variables)
    self._deferred = Untracked(deferred)
    if call is not None:
      # As in PrunedModel: SavedModel exports this instance attribute as the
      # loaded object's __call__.
      self.__call__ = call
    self._signatures = Untracked(dict(signature_functions or {}))
    self.report = report

  def __call__(self, *args):  # pylint: disable=method-hidden
    call = self.__dict__.get('__call__')
    if call is None:
      raise errors.StripError(
        'This StrippedModel was made from SavedModel signatures and has no '
        "__call__; use model.signature_functions['<key>']."
      )
    return call(*args)

  @property
  def signature_functions(self) -> Dict[str, Any]:
    return dict(self._signatures.value)

  def save(self, export_dir: str) -> None:
    """Writes this model as a SavedModel (as is; strip.py stages it).

    Keras 3's convention (`saved_model_conventions`): signatures `serve`
    and `serving_default`, and `serve`, `variables`, `trainable_variables`
    and `non_trainable_variables` on the loaded object.
    """
    signatures = conventions.export_signatures(
      self._signatures.value, self.__dict__.get('__call__')
    )
    tf.saved_model.save(self, export_dir, signatures=signatures)
    deferred = self._deferred.value
    if deferred:
      # Found from the root through the tracked list above.
      deferred.write(
        export_dir,
        {
          id(v): ('model_variables', str(i))
          for i, v in enumerate(self.model_variables)
        },
      )

  _serve_is_default_signature = False  # `save` passes its signatures

  def _export_variables(self):
    return list(self.model_variables)

  def _export_serve(self):
    return self._signatures.value.get(
      'serving_default', self.__dict__.get('__call__')
    )


class _Consts(NamedTuple):
  """The placeholders of a function's captures, by what they capture.

  Each maps a placeholder's node name (the Const it becomes when frozen) to:
  `masks` the name of the weight the mask multiplies, `pruning` the name of
  the pruning variable (masks, thresholds, saliency state, step),
  `variables` the variable.
  """

  masks: Dict[str, str]
  pruning: Dict[str, str]
  variables: Dict[str, Any]


def _captured(cf, pruning, captures=None) -> _Consts:
  """Sorts the capture placeholders of `cf` (see `_Consts`).

  Args:
    cf: the `ConcreteFunction`.
    pruning: its `PruningVariables`.
    captures: placeholder name -> captured tensor; default: `cf`'s own
      capture placeholders (a flat graph names them after its arguments).
  """
  if captures is None:
    captures = {
      internal.op.name: external for external, internal in cf.graph.captures
    }
  variables = {id(v.handle): v for v in cf.variables}
  consts = _Consts({}, {}, {})
  for placeholder, external in captures.items():
    key = id(external)
    if key in pruning.masks:
      consts.masks[placeholder] = pruning.masks[key]
      consts.pruning[placeholder] = graph_ir.mask_name(pruning.masks[key])
    elif key in pruning.others:
      consts.pruning[placeholder] = pruning.others[key]
    elif key in variables:
      consts.variables[placeholder] = variables[key]
  return consts


def strip_function(
  concrete_function,
  pruning: PruningVariables,
  what: str,
  shrink=False,
  copies: Optional['VariableCopies'] = None,
) -> StrippedFunction:
  """Folds the masked weights of a computation into fixed values.

  Args:
    concrete_function: the `ConcreteFunction` to strip; not modified.
    pruning: the pruning variables it may capture.
    what: what the function is, for messages.
    shrink: also remove zero units (`export/shrink_variables.py`), on the
      function's body with its calls inlined (`passes/flatten.py`).
    copies: where the folded variables (and copies of the other variables)
      are made; shared by the signatures of one model. Default: new ones.

  Returns:
    A `StrippedFunction`.

  Raises:
    FoldError: a masked weight cannot be folded, or something of the
      pruning is left (e.g. a function that returns a threshold).
  """
  suffix = f'stripped_{next(_call_ids)}'
  cf = concrete_function
  copies = VariableCopies() if copies is None else copies
  if shrink:
    # Shrink's analysis walks the top level: calls inlined.
    flat = flatten.flat_graph(cf)
    source = flat.graph_def
    input_names, output_names = flat.input_names, flat.output_names
    by_placeholder = dict(flat.captures)
  else:
    source = cf.graph.as_graph_def()
    n_inputs = len(cf.inputs) - len(cf.captured_inputs)
    input_names = tuple(t.name for t in cf.inputs[:n_inputs])
    output_names = tuple(t.name for t in cf.outputs)
    by_placeholder = {
      internal.op.name: external for external, internal in cf.graph.captures
    }
  sorted_captures = _captured(cf, pruning, by_placeholder)
  passes = (
    driver.Pass(
      'fold_masks',
      lambda g, _: fold_masks.fold_masked_weights(
        g, sorted_captures.masks, suffix
      ),
    ),
    driver.Pass(
      'drop_unused', lambda g, _: drop_unused.drop_unused(g, output_names)
    ),
  )
  graph_def, results = driver.run_passes(source, passes, what, 'tracing')
  fold_checks.check_stripped(
    graph_def, sorted_captures.pruning, what, frozen=False
  )
  register_rewritten(graph_def, suffix)
  variables = {id(v.handle): v for v in cf.variables}
  present = {n.name for n in graph_def.node}
  feeds, folded, originals = {}, [], {}
  with tf.init_scope():
    for handle in results['fold_masks'].report:
      weight = variables[id(by_placeholder[handle.weight_node])]
      mask = variables[id(by_placeholder[handle.mask_node])]
      if shrink:
        # Made only if shrink leaves it whole: most are sliced.
        value = shrink_variables.LazyFold(weight, mask, handle.name, copies)
      else:
        value = copies.folded(weight, mask, handle.name)
      feeds[handle.node] = value
      originals[handle.node] = weight
      folded.append(
        FoldedWeight(
          handle.name,
          handle.node,
          tuple(value.shape),
          tf.as_dtype(value.dtype).name,
          # (Counted once shrink made the variables: see below.)
          0 if shrink else copies.nonzeros(value),
        )
      )
    for placeholder, external in by_placeholder.items():
      if placeholder in present and placeholder not in feeds:
        variable = variables.get(id(external))
        # A captured tensor that is no variable is fed as it is.
        feeds[placeholder] = (
          external if variable is None else copies.copy_of(variable)
        )
        if variable is not None:
          originals[placeholder] = variable
    shrunk, names, kernels = None, {}, {}
    if shrink:
      result = shrink_variables.shrink_stripped(
        graph_def,
        output_names,
        suffix,
        what,
        {
          k: v
          for k, v in feeds.items()
          if isinstance(v, (tf.Variable, shrink_variables.LazyFold))
        },
        folded,
        copies,
      )
      graph_def, folded = result.graph_def, list(result.folded)
      shrunk, names, kernels = result.result, result.names, result.kernels
      present = {n.name for n in graph_def.node}
      feeds.update(result.variables)
      originals.update(result.sources)
      feeds = {
        k: v.make() if isinstance(v, shrink_variables.LazyFold) else v
        for k, v in feeds.items()
        if k in present
      }
      folded = [
        dataclasses.replace(
          w, nonzeros=int(tf.math.count_nonzero(feeds[w.node]))
        )
        if w.node in feeds
        else w
        for w in folded
      ]
    parameters = _parameters(feeds, folded)
  for w in folded:
    logging.info(
      'graph_prune: folded %s %s, sparsity %.4f',
      w.name,
      list(w.shape),
      w.sparsity,
    )
  return StrippedFunction(
    graph_def,
    input_names,
    output_names,
    tuple(folded),
    parameters,
    feeds,
    shrunk,
    names=names,
    originals={k: v for k, v in originals.items() if k in feeds},
    kernels=kernels,
  )


def _parameters(feeds, folded) -> Dict[str, Tuple[int, int]]:
  """Name -> (size, non-zeros) of every weight a stripped graph reads."""
  folded_handles = {w.node for w in folded}
  parameters = {w.name: (w.size, w.nonzeros) for w in folded}
  for placeholder, variable in feeds.items():
    if placeholder in folded_handles or not isinstance(variable, tf.Variable):
      continue
    parameters[graph_ir.variable_name(variable)] = (
      int(np.prod(variable.shape, dtype=np.int64)),
      int(tf.math.count_nonzero(variable)),
    )
  return parameters


def signature_input_specs(concrete_function) -> Tuple[tf.TensorSpec, ...]:
  """Positional specs, named by keyword, for a signature-style function.

  A SavedModel signature takes keyword arguments only; its flat inputs are
  in the order of the sorted keywords.
  """
  args, kwargs = concrete_function.structured_input_signature
  if args:
    return tuple(args)
  return tuple(
    tf.TensorSpec(spec.shape, spec.dtype, name=key)
    for key, spec in sorted(kwargs.items())
  )
