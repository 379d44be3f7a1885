"""The stripped computation: frozen, masks folded, rebuilt as a tf.function.

    stripped = strip_function(concrete_function, pruning, 'the model')
    fn = rebuild(stripped, concrete_function, input_signature, copies)

`graph_prune.export.strip.strip` runs this for a live `PrunedModel` (its
`__call__`) and for each signature of a SavedModel of one. `strip_function`
freezes the concrete function, every variable becoming a Const
(`_tf_internal.freeze_function`), then runs the strip passes, checking the
graph before and after each (`graph_ir.check_valid`): `fold_masks` folds
each masked weight `Mul(weight, mask)` into one Const; `drop_unused` drops
everything no output needs, which takes the masks with it (the model's
function never reads thresholds or the step). Last it checks that the graph
holds no variable op, no mask and no `masked_weight` Mul
(`fold_checks.check_stripped`). `rebuild` makes a `tf.function` that imports
the GraphDef; a `StrippedModel` holds one per signature.

Masked weights become constants; every other weight (biases, norms, moving
statistics) stays a variable: a copy, owned by the `StrippedModel`, of its
value when `strip` ran (the stripped model does not follow later training
of the original; strip again). Why not constants too: Grappler would then
see their values when the function is instantiated and simplify with them,
so the stripped graph would not run as the dense one does: with constant
zero biases (an untrained Keras Dense), Grappler drops `BiasAdd(x, 0)`, which
stops MatMul+BiasAdd+Relu from fusing, and an MLP runs slower than dense at
batch 1; with the biases as variables, the graph is the dense graph with
constant kernels and runs as fast (bench/export_size.py; measured:
BUILD_NOTES, 'Measurements behind the code'). What that means:
  * The SavedModel holds the folded weights in `saved_model.pb` and the
    others in `variables/`: the same bytes as the dense model's checkpoint.
  * Signatures that share a masked weight each hold a copy of it (one
    graph each); export the signatures you serve.
  * A graph proto is limited to 2 GB, so models with more than about 2 GB of
    masked weights cannot be stripped.
  * The frozen GraphDef (`--frozen_graph`) is all constants, as contrib's
    was; the TFLite converter freezes the variables itself.
"""

import dataclasses
import itertools
from typing import Any, Callable, Dict, Mapping, NamedTuple, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune import saved_model_conventions as conventions
from graph_prune.export import shrink_report
from graph_prune.passes import drop_unused
from graph_prune.passes import fold_checks
from graph_prune.passes import fold_masks
from graph_prune.passes import graph_ir
from graph_prune.passes import shrink_units
from graph_prune.passes.fold_masks import FoldedWeight
from graph_prune.untracked import Untracked

# Makes names of rewritten functions and import scopes unique per process.
_call_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class PruningVariables:
  """The variables of the pruning, keyed by `id(variable.handle)`.

  Attributes:
    masks: handle id -> name of the weight the mask multiplies.
    others: handle id -> variable name, for thresholds and the step.
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
      variables = list(owner.thresholds) + [owner.last_mask_update_step]
      for variable in variables:
        others[id(variable.handle)] = graph_ir.variable_name(variable)
    return cls(masks, others)


@dataclasses.dataclass(frozen=True)
class StrippedFunction:
  """One computation, frozen and stripped.

  Attributes:
    graph_def: the stripped GraphDef (every weight a Const).
    input_names: tensor names of its inputs, in flat input order.
    output_names: tensor names of its flat outputs.
    folded: the masked weights folded into constants.
    parameters: name -> (size, non-zeros) of every frozen weight it holds
      (a folded weight under the weight's name, others under the
      variable's name).
    variables: top-level Const node name -> the variable it froze, for
      every variable other than a pruning one that the graph still reads.
    shrunk: the `shrink_units.ShrinkResult` when zero units were removed
      (`strip_function(..., shrink=True)`), else None.
  """

  graph_def: Any
  input_names: Tuple[str, ...]
  output_names: Tuple[str, ...]
  folded: Tuple[FoldedWeight, ...]
  parameters: Mapping[str, Tuple[int, int]]
  variables: Mapping[str, Any]
  shrunk: Any = None


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
  ):
    super().__init__(name=name)
    # Tracked, so that SavedModels and checkpoints hold them.
    self.model_variables = list(variables)
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

  _serve_is_default_signature = False  # `save` passes its signatures

  def _export_variables(self):
    return list(self.model_variables)

  def _export_serve(self):
    return self._signatures.value.get(
      'serving_default', self.__dict__.get('__call__')
    )


def strip_function(
  concrete_function, pruning: PruningVariables, what: str, shrink=False
) -> StrippedFunction:
  """Freezes a computation and folds its masked weights into constants.

  Args:
    concrete_function: the `ConcreteFunction` to strip; not modified.
    pruning: the pruning variables it may capture.
    what: what the function is, for messages.
    shrink: also remove zero units (`shrink_units`).

  Returns:
    A `StrippedFunction`.

  Raises:
    FoldError: it cannot be frozen, a masked weight cannot be folded, or
      something of the pruning is left (e.g. a function that returns a
      threshold).
  """
  consts = _captured_consts(concrete_function, pruning)
  try:
    frozen = _tf_internal.freeze_function(concrete_function)
  except (ValueError, TypeError, tf.errors.OpError) as e:
    raise errors.FoldError(
      f'Cannot freeze {what} into constants: {first_line(e)}'
    ) from e
  input_names = tuple(t.name for t in frozen.inputs)
  output_names = tuple(t.name for t in frozen.outputs)
  suffix = f'stripped_{next(_call_ids)}'
  passes = (
    _Pass(
      'fold_masks',
      lambda g, _: fold_masks.fold_masked_weights(g, consts.masks, suffix),
    ),
    _Pass('drop_unused', lambda g, _: drop_unused.drop_unused(g, output_names)),
  )
  if shrink:
    passes += (
      _Pass(
        'shrink_units',
        lambda g, done: shrink_units.shrink_units(
          g,
          output_names,
          suffix,
          shrink_report.weight_names(
            done['fold_masks'].report, consts.variables
          ),
        ),
      ),
    )
  graph_def, results = _run_passes(frozen.graph.as_graph_def(), passes, what)
  fold_checks.check_stripped(graph_def, consts.pruning, what)
  for fdef in graph_def.library.function:
    # Functions the pass rewrote are new to the runtime; import_graph_def
    # only tells the Python graph about them.
    if fdef.signature.name.endswith('_' + suffix):
      _tf_internal.register_function_def(fdef)
  folded = results['fold_masks'].report
  if shrink:
    folded = shrink_units.shrunk_weights(graph_def, folded)
  parameters, kept = _parameters(graph_def, folded, consts.variables)
  for w in folded:
    logging.info(
      'graph_prune: folded %s %s into a constant, sparsity %.4f',
      w.name,
      list(w.shape),
      w.sparsity,
    )
  shrunk = results['shrink_units'].report if shrink else None
  return StrippedFunction(
    graph_def, input_names, output_names, folded, parameters, kept, shrunk
  )


class _Consts(NamedTuple):
  """The placeholders of a function's captures, by what they capture.

  Each maps a placeholder's node name (the Const it becomes when frozen) to:
  `masks` the name of the weight the mask multiplies, `pruning` the name of
  the pruning variable (masks, thresholds, step), `variables` the variable.
  """

  masks: Dict[str, str]
  pruning: Dict[str, str]
  variables: Dict[str, Any]


def _captured_consts(cf, pruning: PruningVariables) -> _Consts:
  variables = {id(v.handle): v for v in cf.variables}
  consts = _Consts({}, {}, {})
  for external, internal in cf.graph.captures:
    key = id(external)
    placeholder = internal.op.name
    if key in pruning.masks:
      consts.masks[placeholder] = pruning.masks[key]
      consts.pruning[placeholder] = graph_ir.mask_name(pruning.masks[key])
    elif key in pruning.others:
      consts.pruning[placeholder] = pruning.others[key]
    elif key in variables:
      consts.variables[placeholder] = variables[key]
  return consts


class _Pass(NamedTuple):
  """A strip pass: its name and (GraphDef, earlier results) -> result.

  The earlier results, by pass name, serve a pass that needs what one before
  it found (shrink names the weights fold_masks folded).
  """

  name: str
  run: Callable[[Any, Mapping[str, graph_ir.PassResult]], graph_ir.PassResult]


def _run_passes(graph_def, passes: Sequence[_Pass], what: str):
  """Runs `passes` in order, checking the graph before and after each.

  As TF's `optimize_for_inference` does (`ensure_graph_is_valid`).

  Returns:
    (the last pass's GraphDef, pass name -> its `PassResult`).
  """
  graph_ir.check_valid(graph_def, f'freezing {what}')
  results = {}
  for p in passes:
    result = p.run(graph_def, dict(results))
    graph_def = result.graph
    graph_ir.check_valid(graph_def, f'pass {p.name!r} on {what}')
    results[p.name] = result
  return graph_def, results


def _parameters(graph_def, folded, variable_consts):
  """(name -> (size, non-zeros) of each frozen weight, Const -> variable)."""
  parameters, kept = {}, {}
  folded_nodes = {w.node: w for w in folded}
  for node in graph_def.node:
    if node.name in folded_nodes:
      w = folded_nodes[node.name]
      parameters[w.name] = (w.size, w.nonzeros)
    elif node.name in variable_consts:
      kept[node.name] = variable_consts[node.name]
      value = tf.make_ndarray(node.attr['value'].tensor)
      parameters[graph_ir.variable_name(kept[node.name])] = (
        int(value.size),
        int(np.count_nonzero(value)),
      )
  return parameters, kept


class VariableCopies:
  """New variables holding the frozen values of a model's other weights.

  One copy per original variable and shape, shared by every function rebuilt
  with this object (signatures that read one bias read one variable; a
  bias that shrinking sliced is a copy of its own).
  """

  def __init__(self):
    self._copies = {}

  @property
  def variables(self):
    return list(self._copies.values())

  def copy_of(self, original, value) -> tf.Variable:
    key = (id(original.handle), tuple(np.shape(value)))
    if key not in self._copies:
      self._copies[key] = tf.Variable(
        value,
        name=graph_ir.variable_name(original),
        trainable=bool(getattr(original, 'trainable', False)),
      )
    return self._copies[key]


def rebuild(
  stripped: StrippedFunction,
  concrete_function,
  input_signature: Sequence[Any],
  copies: VariableCopies,
):
  """A `tf.function` computing `stripped` like `concrete_function`.

  The stripped GraphDef is imported into the new function's graph: its
  folded weights become the function's constants, and the frozen value of
  every other variable is replaced by a read of its copy in `copies`. The
  outputs are packed into the original function's output structure.

  Args:
    stripped: from `strip_function(concrete_function, ...)`.
    concrete_function: the original function (for its output structure).
    input_signature: the new function's positional input signature; its
      flattened specs must match the original's flat inputs.
    copies: where the copies of the other variables are made (or found).

  Returns:
    A `tf.function` with `input_signature`.
  """
  cf = concrete_function
  input_names = stripped.input_names
  variables = _variable_reads(stripped, copies)
  graph_def, present = _importable_graph(stripped)
  flat_structure, is_output = _output_layout(cf, stripped)
  scope = f'stripped_{next(_call_ids)}'

  def call(*args):
    flat_args = tf.nest.flatten(args, expand_composites=True)
    input_map = {
      name: t
      for name, t in zip(input_names, flat_args)
      if graph_ir.node_name(name) in present
    }
    input_map.update((name, v.read_value()) for name, v in variables.items())
    results = tf.graph_util.import_graph_def(
      graph_def,
      input_map=input_map,
      return_elements=list(stripped.output_names),
      name=scope,
    )
    outputs = iter(results)
    flat = [
      next(outputs) if output else t
      for t, output in zip(flat_structure, is_output)
    ]
    return tf.nest.pack_sequence_as(
      cf.structured_outputs, flat, expand_composites=True
    )

  return tf.function(
    call, input_signature=list(input_signature), autograph=False
  )


def _variable_reads(stripped: StrippedFunction, copies: VariableCopies):
  """Tensor name of each frozen other variable -> its copy in `copies`."""
  variables = {}
  for const, original in stripped.variables.items():
    node = next(n for n in stripped.graph_def.node if n.name == const)
    variables[f'{const}:0'] = copies.copy_of(
      original, tf.make_ndarray(node.attr['value'].tensor)
    )
  return variables


def _importable_graph(stripped: StrippedFunction):
  """(The GraphDef to import, the names of the stripped graph's nodes).

  The inputs' Placeholders and the variables' Consts are left out:
  input_map feeds their consumers.
  """
  fed = {graph_ir.node_name(name) for name in stripped.input_names} | set(
    stripped.variables
  )
  graph_def = type(stripped.graph_def)()
  graph_def.CopyFrom(stripped.graph_def)
  nodes = [
    n
    for n in graph_def.node
    if not (n.op in ('Placeholder', 'Const') and n.name in fed)
  ]
  present = {n.name for n in stripped.graph_def.node}
  del graph_def.node[:]
  graph_def.node.extend(nodes)
  return graph_def, present


def _output_layout(cf, stripped: StrippedFunction):
  """(The flat output structure, whether each leaf is a function output).

  The function's outputs are its structure's tensors, in flat order (a
  loaded signature's structure holds TensorSpecs); other leaves (None,
  Python numbers) are returned as they are.
  """
  flat_structure = tf.nest.flatten(
    cf.structured_outputs, expand_composites=True
  )
  is_output = [
    isinstance(t, (tf.Tensor, tf.TensorSpec)) for t in flat_structure
  ]
  if sum(is_output) != len(stripped.output_names):
    raise errors.StripError(
      f'Cannot rebuild {cf.name}: its output structure has {sum(is_output)} '
      f'tensors but the function {len(stripped.output_names)} outputs.'
    )
  return flat_structure, is_output


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


def first_line(error) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]
