"""What stripping one computation produces.

`stripped_model.strip_function` returns a `StrippedFunction` (weights kept
as variables), which `rebuild.rebuild` turns into a `tf.function`.
"""

import dataclasses
from typing import Any, Mapping, Tuple

from graph_prune import _tf_internal


@dataclasses.dataclass(frozen=True)
class StrippedFunction:
  """One computation, stripped.

  Attributes:
    graph_def: the stripped GraphDef; each variable it reads is a top-level
      Placeholder of a captured handle.
    input_names: tensor names of its inputs, in flat input order.
    output_names: tensor names of its flat outputs.
    folded: the masked weights folded (`fold_masks.FoldedWeight`).
    parameters: name -> (size, non-zeros) of every weight it reads (a folded
      weight under the weight's name, others under the variable's name).
    variables: each handle Placeholder -> the variable (the folded variable
      for a folded weight) or captured tensor that feeds it when rebuilt.
    shrunk: the `shrink_units.ShrinkResult` when zero units were removed,
      else None.
    names: node name -> weight name, for the kernels `shrunk` names by node
      (a variable's stub in the shrunk graph).
    originals: each handle Placeholder -> the model's variable it stands for
      (the weight of a folded one, the variable a shrunk one was sliced
      from, the variable a copy copies); handles of captured tensors that
      are no variable are left out.
    kernels: for a shrunk function, each kernel node `shrunk` names -> the
      model's variable (the weight of a folded one).
  """

  graph_def: Any
  input_names: Tuple[str, ...]
  output_names: Tuple[str, ...]
  folded: Tuple[Any, ...]
  parameters: Mapping[str, Tuple[int, int]]
  variables: Mapping[str, Any]
  shrunk: Any = None
  names: Mapping[str, str] = dataclasses.field(default_factory=dict)
  originals: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  kernels: Mapping[str, Any] = dataclasses.field(default_factory=dict)


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
