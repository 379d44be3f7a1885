"""Inserting `weight * mask` for every chosen weight of a traced graph.

`insert_masks(traced, masks)` returns a `PassResult` whose graph is a new
`tf.function` computing the traced computation with each masked weight
replaced by `weight * mask`:

  before:  h = <captured handle of kernel>;  y = MatMul(x, ReadVariableOp(h))
  after:   y = MatMul(x, kernel/masked_weight)   (graph_ir.masked_weight_name)
           where kernel/masked_weight = Mul(kernel.read_value(),
                                            mask.read_value())

How: the traced function and its library (a `graph_ir.FunctionGraph`) go
through four passes, run by `driver.run_passes` with a validity check before
and after each:
  1. `forward_gradients` (custom_gradients.py): custom-gradient ops lose
     their Python gradient, in every function;
  2. `inline_calls` (inline.py): the traced function's calls are inlined;
  3. `bind_weights` (bind_weights.py): the argument that received each
     masked weight's handle receives its masked value, through nested
     loops and branches (their functions copied under new names);
  4. `lower` (lower.py): the GraphDef to import, with the functions it calls.
Then (the construct step, as in TF's `convert_to_constants`) the GraphDef is
imported into a new `tf.function` with `import_graph_def(input_map=...)`:
inputs map to the new function's inputs, masked weights to `weight * mask`
computed with public variable reads (so a `GradientTape` sees them), every
other capture to the same external value. Unmasked variables are read by the
imported raw `ReadVariableOp`s, in their original order relative to any
writes; they are marked as accessed so a tape watches them as it would the
original function's variables.

Under a `tf.distribute` strategy the traced graph captured one per-device
copy of each variable; the new function, traced once per replica, captures
the calling replica's own copy of every variable instead
(`replicas.replica_local`).
"""

import dataclasses
import itertools
from typing import Any, Mapping, Tuple

import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.passes import bind_weights
from graph_prune.passes import custom_gradients
from graph_prune.passes import driver
from graph_prune.passes import graph_ir
from graph_prune.passes import inline
from graph_prune.passes import lower
from graph_prune.passes import mask_keys
from graph_prune.passes import replicas
from graph_prune.passes import scan
from graph_prune.passes import tape_ops

_IMPORT_SCOPE = 'pruned'
# The attribute of a rewritten function's Python function that imports its
# graph in place (see `call`).
_IN_PLACE = '_graph_prune_in_place'
# Makes names of rewritten functions unique per call within a process.
_call_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class MaskedWeight:
  """A weight the pass replaced by `weight * mask`.

  Attributes:
    name: the weight's name (see scan.py).
    shape: its shape.
    consumers: (op type, node path) of the weight-consuming ops reading it.
  """

  name: str
  shape: Tuple[int, ...]
  consumers: Tuple[Tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class RewriteReport:
  """What `insert_masks` did.

  Attributes:
    masked: tuple of `MaskedWeight`, in capture order.
    skipped: tuple of `Skipped(name, reason)` for every captured variable
      not masked.
    functions: tuple of (original name, new name) of rewritten nested
      functions (loop bodies, branches); inlined calls are not listed.
    unit_params: names of the unit parameters masked with their units
      (`unit_params=all`).
    unit_groups: the coupled channel groups (`unit_groups=coupled`), one
      line each (`channel_groups.UnitGroup.describe`).
    oneshot: after `prune_oneshot`, one result per weight (its sparsity and
      its relative reconstruction error on the calibration data,
      `oneshot.layers.LayerResult`); empty otherwise.
  """

  masked: Tuple[MaskedWeight, ...]
  skipped: Tuple[Tuple[str, str], ...]
  functions: Tuple[Tuple[str, str], ...]
  unit_params: Tuple[str, ...] = ()
  unit_groups: Tuple[str, ...] = ()
  oneshot: Tuple[Any, ...] = ()

  @property
  def warnings(self) -> Tuple[Tuple[str, str], ...]:
    """The skipped weights that stay dense although they look prunable.

    Trainable float weights of rank >= 2 the pass could not follow to a
    weight-consuming op or that the graph uses as variables
    (`scan.left_dense`); `apply_pruning` logs a warning for each.
    """
    return tuple(s for s in self.skipped if scan.left_dense(scan.Skipped(*s)))


def insert_masks(
  traced,
  masks: Mapping[Any, Any],
  scan_result=None,
  param_masks: Mapping[Any, Any] = (),
) -> driver.PassResult[Any, RewriteReport]:
  """Returns a `tf.function` computing `traced` with weights * masks.

  Args:
    traced: a `graph_prune.model.tracing.Traced`; not modified.
    masks: maps each weight to mask -> its mask `tf.Variable` of the same
      shape and dtype, created by the caller (named
      `graph_ir.mask_name(weight)`). A key is the weight's name
      (`WeightUse.name`) or `variable.ref()` of its `tf.Variable` (or of the
      Keras variable).
    scan_result: the `WeightScan` from `find_weights(traced, ...)`, if the
      caller has one: the pass reuses the graph it read and the uses it
      found instead of scanning again, and keeps its skip reasons (e.g.
      `do_not_prune`) in the report.

  Returns:
    A `PassResult`: `graph` is a `tf.function` with
    `traced.input_signature`, `report` a `RewriteReport`, `changed` whether
    any weight was masked. The function captures the original variables and
    the masks; an object saving it (SavedModel/Checkpoint) must track both.

  Raises:
    MaskError: a key of `masks` is not a prunable weight of `traced`, or a
      mask's shape or dtype differs from its weight's.
    GraphRewriteError: the graph uses a weight in a way the pass cannot
      rewrite.
  """
  analysis = _analysis_of(traced, scan_result)
  prunable = scan.scan_analysis(analysis)
  masks = mask_keys.by_name(masks, analysis.infos, traced.name)
  mask_keys.check(masks, {w.name: w for w in prunable.candidates}, traced.name)
  params = mask_keys.by_name(dict(param_masks), analysis.infos, traced.name)
  mask_keys.check(
    params, mask_keys.readonly(analysis.infos, masks), traced.name
  )
  masks = {**masks, **params}
  call_id = next(_call_ids)
  new_top, graph_def, flat_name, bound = _rewrite(
    analysis, masks, f'graph_prune_{call_id}', traced.name
  )
  fn = _build_function(
    traced,
    analysis.infos,
    masks,
    new_top,
    graph_def,
    flat_name,
    f'{_IMPORT_SCOPE}_{call_id}',
  )
  report = _report(prunable, scan_result or prunable, masks, bound)
  report = dataclasses.replace(report, unit_params=tuple(sorted(params)))
  return driver.PassResult(fn, report, changed=bool(report.masked))


def call(function, *args):
  """Calls `function`, a rewritten function `insert_masks` returned.

  Inside a `tf.function` being traced while a gradient tape records (a
  user's training step), the pruned graph is imported in place, its ops
  recorded on the tapes (`tape_ops`), instead of being called as a
  function: TensorFlow then differentiates it op by op, as it does the
  dense model, rather than
  building the gradient of a function call (a forward function exporting
  every intermediate, a backward function capturing them), which made most
  of a pruned model's extra first-step cost. Otherwise it is the plain
  call: eagerly; without a tape (a serving or export trace, where the call
  is what `strip` folds the masks in, also inside branches and loops); for
  a graph with a function call node; for inputs that do not match the
  signature (the call raises TensorFlow's usual error).

  Args:
    function: a `tf.function` from `insert_masks`.
    *args: its inputs.

  Returns:
    The function's outputs.
  """
  in_place = getattr(function.python_function, _IN_PLACE, None)
  if (
    in_place is None
    or not tf.inside_function()
    or not _tf_internal.tapes_active()
  ):
    return function(*args)
  inputs = _matching_inputs(function.input_signature, args)
  if inputs is None:
    return function(*args)
  return in_place(inputs)


def _matching_inputs(signature, args):
  """`args` as tensors of `signature`, or None if they do not match it.

  What the function's own call would accept, without its conversions: a
  mismatch goes to the function, which raises TensorFlow's usual error.
  """
  signature, args = tuple(signature), tuple(args)
  try:
    tf.nest.assert_same_structure(signature, args, check_types=False)
  except (TypeError, ValueError):
    return None
  inputs = []
  for spec, arg in zip(tf.nest.flatten(signature), tf.nest.flatten(args)):
    if isinstance(spec, tf.TensorSpec) and not isinstance(arg, tf.Tensor):
      try:
        arg = tf.convert_to_tensor(arg, dtype=spec.dtype)
      except (TypeError, ValueError):
        return None
    if not spec.is_compatible_with(arg):
      return None
    inputs.append(arg)
  return tf.nest.pack_sequence_as(args, inputs)


def _in_graph(graph, tensor):
  """`tensor`, captured into `graph` if it is eager or from an outer graph.

  In place (`call`), an input may be a tensor the user's function closes
  over; `import_graph_def` maps inputs only to tensors of its own graph.
  """
  if tf.is_symbolic_tensor(tensor) and tensor.graph is graph:
    return tensor
  return _tf_internal.capture(graph, tensor)


def _analysis_of(traced, scan_result) -> scan.Analysis:
  """The scan's analysis of `traced` if it has one, else a new one."""
  analysis = getattr(scan_result, 'analysis', None)
  if analysis is not None and (
    analysis.concrete_function is traced.concrete_function
  ):
    return analysis
  return scan.analyse(traced)


def _rewrite(analysis, masks, suffix, what):
  """Runs insertion's passes on the traced function (see `insert_masks`).

  Returns:
    (the rewritten FunctionDef, the GraphDef to import, `flat_name` mapping
    a FunctionDef tensor name to the GraphDef's, the `bind_weights.Bound`
    report).
  """
  masked_args = {}
  for info in analysis.infos:
    if info.name in masks:
      v = info.variable
      masked_args[info.arg_index] = bind_weights.Value(
        v.dtype.as_datatype_enum, tuple(v.shape.as_list())
      )
  passes = (
    # Custom gradients are closures over the original trace's tensors; the
    # rebuilt graph uses TF's own gradients of their forward computation.
    driver.Pass(
      'forward_gradients',
      lambda g, _: custom_gradients.forward_function_graph(g),
    ),
    driver.Pass('inline_calls', lambda g, _: inline.inline_top(g)),
    driver.Pass(
      'bind_weights',
      lambda g, _: bind_weights.bind_weights(g, masked_args, suffix),
    ),
    driver.Pass('lower', lambda g, _: lower.lower(g)),
  )
  source = graph_ir.FunctionGraph(analysis.top, analysis.library)
  graph_def, results = driver.run_passes(source, passes, what, 'tracing')
  bound = results['bind_weights']
  for name in bound.report.new_functions:
    _tf_internal.register_function_def(bound.graph.library[name])
  return (
    bound.graph.top,
    graph_def,
    results['lower'].report.flat_name,
    bound.report,
  )


def _report(prunable, weights, masks, bound) -> RewriteReport:
  return RewriteReport(
    masked=tuple(
      MaskedWeight(name=w.name, shape=w.shape, consumers=w.consumers)
      for w in prunable.candidates
      if w.name in masks
    ),
    skipped=tuple(s for s in weights.skipped if s.name not in masks)
    + tuple(
      scan.Skipped(w.name, 'no mask given')
      for w in weights.candidates
      if w.name not in masks
    ),
    functions=bound.functions,
  )


def _build_function(traced, infos, masks, new_top, graph_def, flat_name, scope):
  """The `tf.function` that imports the rewritten graph."""
  cf = traced.concrete_function
  arg_names = graph_ir.arg_names(new_top)
  position = {id(t): i for i, t in enumerate(cf.graph.inputs)}
  info_by_arg = {info.arg_index: info for info in infos}
  captures = [
    (external, position[id(internal)])
    for external, internal in cf.graph.captures
  ]
  n_inputs = len(arg_names) - len(captures)
  ret_names = [
    flat_name(new_top.ret[a.name]) for a in new_top.signature.output_arg
  ]
  flat_outputs = tf.nest.flatten(cf.structured_outputs, expand_composites=True)
  output_index = {id(t): i for i, t in enumerate(cf.graph.outputs)}

  def imported(args, in_place):
    graph = tf.compat.v1.get_default_graph()
    flat_args = tf.nest.flatten(args, expand_composites=True)
    if len(flat_args) != n_inputs:
      raise errors.GraphRewriteError(
        f'The pruned {traced.name} takes {n_inputs} input tensors, got '
        f'{len(flat_args)}.'
      )
    input_map = {
      f'{arg_names[i]}:0': _in_graph(graph, t) for i, t in enumerate(flat_args)
    }
    shapes = {}  # captured variable handle -> the variable's shape
    for external, i in captures:
      info = info_by_arg.get(i)
      # Under a tf.distribute strategy the traced graph captured the first
      # replica's copy of each variable; each replica reads its own.
      variable = None if info is None else replicas.replica_local(info.variable)
      if info is not None and info.name in masks:
        masked = tf.multiply(
          variable.read_value(),
          masks[info.name].read_value(),
          name=graph_ir.masked_weight_name(info.name),
        )
        input_map[f'{arg_names[i]}:0'] = masked
        continue
      if variable is not None:
        external = variable.handle
        # Before the capture: a tape then links the captured handle to the
        # variable it watches.
        _tf_internal.mark_variable_accessed(variable)
      input_map[f'{arg_names[i]}:0'] = _tf_internal.capture(graph, external)
      if variable is not None:
        shapes[input_map[f'{arg_names[i]}:0'].ref()] = variable.shape
    first_new_op = len(graph.get_operations()) if in_place else None
    results = tf.graph_util.import_graph_def(
      graph_def, input_map=input_map, return_elements=ret_names, name=scope
    )
    if in_place:
      tape_ops.record(graph.get_operations()[first_new_op:], shapes)
    flat = []
    for t in flat_outputs:
      index = output_index.get(id(t)) if isinstance(t, tf.Tensor) else None
      flat.append(t if index is None else results[index])
    return tf.nest.pack_sequence_as(
      cf.structured_outputs, flat, expand_composites=True
    )

  def masked_call(*args):
    return imported(args, in_place=False)

  if tape_ops.recordable(graph_def):
    setattr(masked_call, _IN_PLACE, lambda args: imported(args, in_place=True))

  return tf.function(
    masked_call, input_signature=list(traced.input_signature), autograph=False
  )
