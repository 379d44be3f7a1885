"""The stripped computation: frozen, masks folded, rebuilt as a tf.function.

    stripped = strip_function(concrete_function, pruning, 'the model')
    fn = rebuild(stripped, concrete_function, input_signature, copies)

`graph_prune.export.strip.strip` runs this for a live `PrunedModel` (its
`__call__`) and
for each signature of a SavedModel of one. `strip_function` freezes the
concrete function, every variable becoming a Const
(`_tf_internal.freeze_function`); folds each masked weight
`Mul(weight, mask)` into one Const (`folding.fold_masked_weights`); drops
everything no output needs, which takes the masks with it (the model's
function never reads thresholds or the step; `unreachable`); and checks that
the graph holds no variable op, no mask and no `masked_weight` Mul
(`folding.check_stripped`). `rebuild` makes a `tf.function` that imports the
GraphDef; a `StrippedModel` holds one per signature.

Masked weights become constants; every other weight (biases, norms, moving
statistics) stays a variable: a copy, owned by the `StrippedModel`, of its
value when `strip` ran (the stripped model does not follow later training
of the original; strip again). Why not constants too: Grappler would then
see their values when the function is instantiated and simplify with them,
so the stripped graph would not run as the dense one does. Measured: with
constant zero biases (an untrained Keras Dense), Grappler drops
`BiasAdd(x, 0)`, which stops MatMul+BiasAdd+Relu from fusing, and the
784-1000-1000-500-200-10 MLP ran 1.35-1.6x slower than dense at batch 1
(with non-zero constant biases, 0.94-0.96x); with the biases as variables,
the graph is the dense graph with constant kernels and runs as fast
(bench/export_size.py). What that means:
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
from typing import Any, Dict, Mapping, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.passes import drop_unused as unreachable
from graph_prune.passes import fold_masks as folding
from graph_prune.passes.fold_masks import FoldedWeight

# Makes names of rewritten functions and import scopes unique per process.
_call_ids = itertools.count(1)


class _Untracked:
  """Holds a value out of sight of tf.Module tracking and SavedModel."""

  __slots__ = ('value',)

  def __init__(self, value):
    self.value = value


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
      for mask in owner.masks:
        masks[id(mask.handle)] = _weight_name(mask)
      variables = list(owner.thresholds) + [owner.last_mask_update_step]
      for variable in variables:
        others[id(variable.handle)] = variable_name(variable)
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
  """

  graph_def: Any
  input_names: Tuple[str, ...]
  output_names: Tuple[str, ...]
  folded: Tuple[FoldedWeight, ...]
  parameters: Mapping[str, Tuple[int, int]]
  variables: Mapping[str, Any]


class StrippedModel(tf.Module):
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
    self._signatures = _Untracked(dict(signature_functions or {}))
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
    """Writes this model as a SavedModel (as is; strip.py stages it)."""
    signatures = {
      key: fn.get_concrete_function()
      for key, fn in self._signatures.value.items()
    }
    tf.saved_model.save(self, export_dir, signatures=signatures or None)


def strip_function(
  concrete_function, pruning: PruningVariables, what: str
) -> StrippedFunction:
  """Freezes a computation and folds its masked weights into constants.

  Args:
    concrete_function: the `ConcreteFunction` to strip; not modified.
    pruning: the pruning variables it may capture.
    what: what the function is, for messages.

  Returns:
    A `StrippedFunction`.

  Raises:
    FoldError: it cannot be frozen, a masked weight cannot be folded, or
      something of the pruning is left (e.g. a function that returns a
      threshold).
  """
  cf = concrete_function
  variables = {id(v.handle): v for v in cf.variables}
  mask_consts, pruning_consts, variable_consts = {}, {}, {}
  for external, internal in cf.graph.captures:
    key = id(external)
    placeholder = internal.op.name
    if key in pruning.masks:
      mask_consts[placeholder] = pruning.masks[key]
      pruning_consts[placeholder] = pruning.masks[key] + folding.MASK_SUFFIX
    elif key in pruning.others:
      pruning_consts[placeholder] = pruning.others[key]
    elif key in variables:
      variable_consts[placeholder] = variables[key]
  try:
    frozen = _tf_internal.freeze_function(cf)
  except (ValueError, TypeError, tf.errors.OpError) as e:
    raise errors.FoldError(
      f'Cannot freeze {what} into constants: {first_line(e)}'
    ) from e
  graph_def = frozen.graph.as_graph_def()
  input_names = tuple(t.name for t in frozen.inputs)
  output_names = tuple(t.name for t in frozen.outputs)
  suffix = f'stripped_{next(_call_ids)}'
  graph_def, folded = folding.fold_masked_weights(
    graph_def, mask_consts, suffix=suffix
  )
  graph_def = unreachable.prune_unreachable(graph_def, output_names)
  folding.check_stripped(graph_def, pruning_consts, what)
  for fdef in graph_def.library.function:
    # Functions the pass rewrote are new to the runtime; import_graph_def
    # only tells the Python graph about them.
    if fdef.signature.name.endswith('_' + suffix):
      _tf_internal.register_function_def(fdef)
  parameters, kept = {}, {}
  folded_nodes = {w.node: w for w in folded}
  for node in graph_def.node:
    if node.name in folded_nodes:
      w = folded_nodes[node.name]
      parameters[w.name] = (w.size, w.nonzeros)
    elif node.name in variable_consts:
      kept[node.name] = variable_consts[node.name]
      value = tf.make_ndarray(node.attr['value'].tensor)
      parameters[variable_name(kept[node.name])] = (
        int(value.size),
        int(np.count_nonzero(value)),
      )
  for w in folded:
    logging.info(
      'graph_prune: folded %s %s into a constant, sparsity %.4f',
      w.name,
      list(w.shape),
      w.sparsity,
    )
  return StrippedFunction(
    graph_def, input_names, output_names, folded, parameters, kept
  )


class VariableCopies:
  """New variables holding the frozen values of a model's other weights.

  One copy per original variable, shared by every function rebuilt with this
  object (signatures that read one bias read one variable).
  """

  def __init__(self):
    self._copies = {}

  @property
  def variables(self):
    return list(self._copies.values())

  def copy_of(self, original, value) -> tf.Variable:
    key = id(original.handle)
    if key not in self._copies:
      self._copies[key] = tf.Variable(
        value,
        name=variable_name(original),
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
  variables = {}
  for const, original in stripped.variables.items():
    node = next(n for n in stripped.graph_def.node if n.name == const)
    variables[f'{const}:0'] = copies.copy_of(
      original, tf.make_ndarray(node.attr['value'].tensor)
    )
  # The inputs' Placeholders and the variables' Consts are left out:
  # input_map feeds their consumers.
  fed = {name.split(':')[0] for name in input_names} | set(stripped.variables)
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
  # The function's outputs are its structure's tensors, in flat order (a
  # loaded signature's structure holds TensorSpecs); other leaves (None,
  # Python numbers) are returned as they are.
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
  scope = f'stripped_{next(_call_ids)}'

  def call(*args):
    flat_args = tf.nest.flatten(args, expand_composites=True)
    input_map = {
      name: t
      for name, t in zip(input_names, flat_args)
      if name.split(':')[0] in present
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


def _weight_name(mask) -> str:
  name = variable_name(mask)
  if name.endswith(folding.MASK_SUFFIX):
    return name[: -len(folding.MASK_SUFFIX)]
  return name


def variable_name(variable) -> str:
  name = variable.name
  return name[:-2] if name.endswith(':0') else name


def first_line(error) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]
