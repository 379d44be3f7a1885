"""The frozen GraphDef format: one signature, every weight a constant.

    graph = freeze(stripped_fn, 'signature serving_default')  # --frozen_graph

`freeze` turns a stripped `tf.function` (weights as variables, see
stripped_model.py) into contrib's all-constant GraphDef (what
`strip_pruning_vars` wrote), only when this format is asked for: at its own
step, before anything is staged, within the 2 GB proto limit
(`proto_limit.check_fits`). A GraphDef holds one computation, so one
signature is written: the only one, or 'serving_default' (`signature_key`).
"""

import dataclasses
from typing import Any, Optional, Sequence, Tuple

import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.export import sizes
from graph_prune.export.formats import base
from graph_prune.export.formats import proto_limit
from graph_prune.export.stripped_function import first_line
from graph_prune.passes import fold_checks

NAME = 'frozen_graph'
# The signature a frozen graph holds when several are stripped.
DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


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


@dataclasses.dataclass(frozen=True)
class FrozenGraphReport:
  """What the frozen graph format wrote.

  Attributes:
    path: the .pb file.
    size: its `sizes.Size`.
    signature: the signature it holds (None: the model's `__call__`).
    inputs, outputs: tensor names to feed and fetch.
  """

  path: Optional[str]
  size: Optional[sizes.Size]
  signature: Optional[str]
  inputs: Tuple[str, ...]
  outputs: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Options:
  """Attributes: signature: the one to freeze (None: `signature_key`)."""

  signature: Optional[str] = None


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
  proto_limit.check_fits(cf.variables, 'a frozen GraphDef', what)
  try:
    frozen = _tf_internal.freeze_function(cf)
  except (ValueError, TypeError, tf.errors.OpError) as e:
    raise errors.FoldError(
      f'Cannot freeze {what} into constants: {first_line(e)}'
    ) from e
  graph_def = frozen.graph.as_graph_def()
  fold_checks.check_stripped(graph_def, {}, what)
  return FrozenGraph(
    graph_def,
    tuple(t.name for t in frozen.inputs),
    tuple(t.name for t in frozen.outputs),
  )


def signature_key(keys: Sequence[str]) -> str:
  """The one signature of `keys` a frozen graph holds.

  Raises:
    StripError: several keys, none of them 'serving_default'.
  """
  if len(keys) == 1:
    return keys[0]
  if DEFAULT_SIGNATURE in keys:
    return DEFAULT_SIGNATURE
  raise errors.StripError(
    f'A frozen graph holds one signature but {list(keys)} are selected and '
    f'none is {DEFAULT_SIGNATURE!r}; choose one with --signature '
    '(signature_keys).'
  )


def _prepare(source: base.Source, options: Options):
  """Freezes the chosen signature (or the model's `__call__`)."""
  functions = source.module.signature_functions
  key = options.signature
  if key is None and functions:
    key = signature_key(source.distinct_keys)
  if key is None:
    function, what = source.module.__call__, source.what
  else:
    function, what = functions[key], f'signature {key!r}'
  return key, freeze(function, what)


def _write(prepared, path: str, workspace) -> FrozenGraphReport:
  del workspace  # the graph is frozen already
  key, frozen = prepared
  with open(path, 'wb') as f:
    f.write(frozen.graph_def.SerializeToString())
  return FrozenGraphReport(
    None, None, key, frozen.input_names, frozen.output_names
  )


FORMAT = base.Format(
  name=NAME,
  is_file=True,
  label='frozen GraphDef',
  options=Options,
  check=base.no_check,
  prepare=_prepare,
  write=_write,
)
