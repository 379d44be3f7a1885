"""What stripping one computation produces (both ways: variables or frozen).

`stripped_model.strip_function` keeps weights as variables;
`frozen_strip.strip_frozen` (for shrink) freezes them first. Both return a
`StrippedFunction`, which `stripped_model.rebuild` turns into a
`tf.function`.
"""

import dataclasses
from typing import Any, Mapping, Tuple

from graph_prune import _tf_internal


@dataclasses.dataclass(frozen=True)
class StrippedFunction:
  """One computation, stripped.

  Attributes:
    graph_def: the stripped GraphDef. With `frozen` False, each variable it
      reads is the top-level Placeholder of a captured handle; with `frozen`
      True, every weight is a Const.
    input_names: tensor names of its inputs, in flat input order.
    output_names: tensor names of its flat outputs.
    folded: the masked weights folded (`fold_masks.FoldedWeight`).
    parameters: name -> (size, non-zeros) of every weight it reads (a folded
      weight under the weight's name, others under the variable's name).
    variables: top-level node name -> what feeds it when rebuilt. Not
      frozen: each handle Placeholder -> the variable (the folded variable
      for a folded weight) or captured tensor. Frozen: each Const of a
      frozen other variable -> the variable it froze (`rebuild` copies its
      frozen value into a new variable).
    shrunk: the `shrink_units.ShrinkResult` when zero units were removed,
      else None.
    frozen: whether the graph was frozen (see `graph_def`).
    names: node name -> weight name, for the kernels `shrunk` names by node
      (a variable's stub in a graph shrunk without freezing).
  """

  graph_def: Any
  input_names: Tuple[str, ...]
  output_names: Tuple[str, ...]
  folded: Tuple[Any, ...]
  parameters: Mapping[str, Tuple[int, int]]
  variables: Mapping[str, Any]
  shrunk: Any = None
  frozen: bool = False
  names: Mapping[str, str] = dataclasses.field(default_factory=dict)


def register_rewritten(graph_def, suffix: str) -> None:
  """Registers the library functions a pass renamed with `suffix`.

  Functions the passes rewrote are new to the runtime; import_graph_def only
  tells the Python graph about them.
  """
  for fdef in graph_def.library.function:
    if fdef.signature.name.endswith('_' + suffix):
      _tf_internal.register_function_def(fdef)


def first_line(error) -> str:
  """The first line of an exception's message (or its type's name)."""
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]
