"""Formats that hold weights as constants: frozen, within the proto limit.

Two steps freeze a stripped computation, each only when it is asked for:

    graph = freeze(stripped_fn, 'signature serving_default')  # --frozen_graph
    stripped = strip_frozen(cf, pruning, 'the model', shrink=True)

`freeze` turns a stripped `tf.function` (weights as variables, see
stripped_model.py) into contrib's all-constant GraphDef. `strip_frozen`
strips a pruned function by freezing it first (every variable a Const), then
folding the masks into constants (`fold_masks`), dropping what no output
needs and, for shrink, removing zero units (`shrink_units`, whose analysis
reads weights as constants); `stripped_model.rebuild` turns the result back
into a function whose other weights are variables again.

A GraphDef is a protocol buffer, limited to 2 GB serialised; the TFLite
flatbuffer has the same limit. `check_fits` refuses, before anything is
frozen or written, a model whose weights alone exceed it, with the formats
that do work (the SavedModel keeps weights in `variables/`, without limit).
"""

import dataclasses
from typing import Any, Dict, Iterable, NamedTuple, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.export import shrink_report
from graph_prune.export import stripped_function
from graph_prune.export.stripped_function import first_line
from graph_prune.passes import driver
from graph_prune.passes import drop_unused
from graph_prune.passes import fold_checks
from graph_prune.passes import fold_masks
from graph_prune.passes import graph_ir
from graph_prune.passes import shrink_units

# Protocol buffers (a GraphDef) and flatbuffers (TFLite) are limited to 2 GB.
PROTO_LIMIT_BYTES = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class FrozenGraph:
  """A computation frozen into one all-constant GraphDef.

  Attributes:
    graph_def: the GraphDef (every weight a Const; no variable op).
    input_names, output_names: tensor names of its flat inputs and outputs.
  """

  graph_def: Any
  input_names: Tuple[str, ...]
  output_names: Tuple[str, ...]


def weight_bytes(variables: Iterable[Any]) -> int:
  """Bytes of the values of `variables`, each counted once."""
  seen, total = set(), 0
  for v in variables:
    if id(v.handle) in seen:
      continue
    seen.add(id(v.handle))
    total += int(np.prod(v.shape, dtype=np.int64)) * tf.as_dtype(v.dtype).size
  return total


def check_fits(variables: Iterable[Any], fmt: str, what: str) -> None:
  """Raises unless the weights of `variables` fit a 2 GB proto format.

  Args:
    variables: the variables the format would freeze into constants.
    fmt: the format, for the message ('a frozen GraphDef', 'TFLite').
    what: what is exported, for the message.

  Raises:
    ProtoLimitError: naming the limit, the size and the formats that work.
  """
  size = weight_bytes(variables)
  if size > PROTO_LIMIT_BYTES:
    raise errors.ProtoLimitError(
      f'Cannot write {what} as {fmt}: its weights take {size / 2**30:.2f} '
      f"GiB, over the format's 2 GiB limit ({PROTO_LIMIT_BYTES} bytes); "
      'export a SavedModel (export_saved_model, or strip_masks without '
      '--frozen_graph/--tflite), which keeps weights in variables/ without '
      'a limit.'
    )


def freeze(function, what: str) -> FrozenGraph:
  """contrib's frozen GraphDef of a stripped function: all constants.

  Args:
    function: a stripped `tf.function` with an input signature (or its
      `ConcreteFunction`).
    what: what it computes, for messages.

  Raises:
    ProtoLimitError: its weights exceed the 2 GB proto limit.
    FoldError: it cannot be frozen.
  """
  cf = function
  if not isinstance(cf, tf.types.experimental.ConcreteFunction):
    cf = function.get_concrete_function()
  check_fits(cf.variables, 'a frozen GraphDef', what)
  frozen = _freeze(cf, what)
  graph_def = frozen.graph.as_graph_def()
  fold_checks.check_stripped(graph_def, {}, what)
  return FrozenGraph(
    graph_def,
    tuple(t.name for t in frozen.inputs),
    tuple(t.name for t in frozen.outputs),
  )


def _freeze(cf, what):
  try:
    return _tf_internal.freeze_function(cf)
  except (ValueError, TypeError, tf.errors.OpError) as e:
    raise errors.FoldError(
      f'Cannot freeze {what} into constants: {first_line(e)}'
    ) from e


class _Consts(NamedTuple):
  """The placeholders of a function's captures, by what they capture.

  Each maps a placeholder's node name (the Const it becomes when frozen) to:
  `masks` the name of the weight the mask multiplies, `pruning` the name of
  the pruning variable (masks, thresholds, step), `variables` the variable.
  """

  masks: Dict[str, str]
  pruning: Dict[str, str]
  variables: Dict[str, Any]


def captured(cf, pruning, captures=None) -> _Consts:
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


def strip_frozen(cf, pruning, what: str, suffix: str, shrink: bool = False):
  """Freezes a pruned computation and folds its masks into constants.

  What `stripped_model.strip_function` does for shrink (see the module
  docstring).

  Returns:
    A `StrippedFunction` (frozen=True) whose `variables`
    maps each Const of a frozen other variable to the variable.
  """
  consts = captured(cf, pruning)
  check_fits(cf.variables, 'a frozen graph (shrink)', what)
  frozen = _freeze(cf, what)
  input_names = tuple(t.name for t in frozen.inputs)
  output_names = tuple(t.name for t in frozen.outputs)
  passes = (
    driver.Pass(
      'fold_masks',
      lambda g, _: fold_masks.fold_masked_weights(g, consts.masks, suffix),
    ),
    driver.Pass(
      'drop_unused', lambda g, _: drop_unused.drop_unused(g, output_names)
    ),
  )
  if shrink:
    passes += (
      driver.Pass(
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
  graph_def, results = driver.run_passes(
    frozen.graph.as_graph_def(), passes, what
  )
  fold_checks.check_stripped(graph_def, consts.pruning, what)
  stripped_function.register_rewritten(graph_def, suffix)
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
  return stripped_function.StrippedFunction(
    graph_def,
    input_names,
    output_names,
    tuple(folded),
    parameters,
    kept,
    shrunk,
    frozen=True,
  )


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
