"""Shrink on a stripped graph that keeps its weights as variables.

    result = shrink_stripped(graph_def, output_names, suffix, what,
                             variables, folded, copies)

`stripped_model.strip_function(..., shrink=True)` strips a flat graph
(`passes/flatten.py`: calls inlined, handles kept) and hands it here. The
unit analysis reads weights as constants, so the variables are seen through
stubs (`variable_view.const_view`: each read a Const with no values, read
from its variable when the analysis asks), zero units are removed
(`shrink_units`), and the stubs are turned back into reads
(`variable_view.thaw`). Every weight the pass sliced becomes a new variable
made by `copies`: a folded weight a fixed (non-trainable) one, another
weight (a bias, sliced or with a removed unit's constant folded in) a new
variable as trainable as its original. No weight is frozen and no GraphDef
carries a weight's value, so shrink has no 2 GB limit and costs about what
reading and writing the weights costs.
"""

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import tensorflow as tf

from graph_prune.export import folded_checkpoint
from graph_prune.passes import driver
from graph_prune.passes import drop_unused
from graph_prune.passes import graph_ir
from graph_prune.passes import shrink_units
from graph_prune.passes import variable_view
from graph_prune.passes.folded_values import FoldedWeight


class LazyFold:
  """A folded weight whose variable is made only if shrink leaves it whole.

  Shrink slices most folded weights; making each full-size folded variable
  first would hold a copy of every masked weight that is then dropped. Reads
  like a variable for the view (`shape`, `dtype`, `numpy`, `trainable`).
  """

  trainable = False

  def __init__(self, weight, mask, name: str, copies):
    self.weight, self.mask, self.copies = weight, mask, copies
    self.folded_name = name
    self.name = weight.name
    self.shape = weight.shape
    self.dtype = weight.dtype

  def _value(self):
    return folded_checkpoint.folded_value(self.weight, self.mask)

  def numpy(self):
    return self._value().numpy()

  def make(self):
    """The folded variable (`VariableCopies.folded`)."""
    return self.copies.folded(self.weight, self.mask, self.folded_name)


@dataclasses.dataclass(frozen=True)
class Shrunk:
  """What `shrink_stripped` made.

  Attributes:
    graph_def: the shrunk GraphDef (variables as handle Placeholders).
    variables: handle Placeholder -> its variable, for every handle the
      shrunk graph reads that is not in the input's `variables` any more or
      is new (sliced weights).
    folded: the folded weights with the shapes shrinking left them (their
      non-zero counts are the caller's to take from the new variables).
    result: the `shrink_units.ShrinkResult`.
    names: kernel node name in `result` -> its weight's name.
    sources: handle Placeholder of each new variable -> the model's variable
      its value was sliced from (the weight, for a folded one), for the new
      variables that come from one (`strip_keras(shrink=True)` rebuilds the
      model's layers with these shapes).
    kernels: kernel node name in `result` -> the model's variable (the
      weight, for a folded one).
  """

  graph_def: Any
  variables: Mapping[str, Any]
  folded: Tuple[FoldedWeight, ...]
  result: Any
  names: Mapping[str, str]
  sources: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  kernels: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def shrink_stripped(
  graph_def,
  output_names: Sequence[str],
  suffix: str,
  what: str,
  variables: Mapping[str, Any],
  folded: Sequence[FoldedWeight],
  copies,
) -> Shrunk:
  """Removes zero units of a stripped graph whose weights are variables.

  Args:
    graph_def: the stripped flat GraphDef; not modified.
    output_names: its outputs.
    suffix: unique per call (names of the Consts shrink adds).
    what: what it computes, for messages.
    variables: handle Placeholder -> its `tf.Variable` (folded ones too).
    folded: the folded weights (`FoldedWeight.node`: their handles).
    copies: the `stripped_model.VariableCopies` making new variables.

  Returns:
    A `Shrunk`.
  """
  folded_by_handle = {w.node: w for w in folded}
  names: Dict[str, str] = {}
  kernels: Dict[str, Any] = {}

  def shrink(g, done):
    for stub, read in done['const_view'].report.reads.items():
      weight = folded_by_handle.get(read.handle)
      names[stub] = (
        weight.name
        if weight is not None
        else graph_ir.variable_name(variables[read.handle])
      )
      kernels[stub] = getattr(read.variable, 'weight', read.variable)
    return shrink_units.shrink_units(
      g, output_names, suffix, names, done['const_view'].report.values()
    )

  passes = (
    driver.Pass(
      'const_view', lambda g, _: variable_view.const_view(g, variables)
    ),
    # Stubs are stateless: reads that only ordered the outputs go, as their
    # frozen Consts did.
    driver.Pass(
      'drop_unused', lambda g, _: drop_unused.drop_unused(g, output_names)
    ),
    driver.Pass('shrink_units', shrink),
    driver.Pass(
      'thaw', lambda g, done: variable_view.thaw(g, done['const_view'].report)
    ),
  )
  graph, results = driver.run_passes(
    graph_def, passes, what, source='stripping'
  )
  # Only the reports from here: the passes' graphs hold the sliced weights'
  # values in protos, and each new value goes as soon as its variable exists.
  result = results['shrink_units'].report
  new_values = list(results['thaw'].report)
  del results
  new_variables: Dict[str, Any] = {}
  sources: Dict[str, Any] = {}
  sliced: Dict[str, Any] = {}
  with tf.init_scope():
    while new_values:
      value = new_values.pop(0)
      source = value.source
      weight = None if source is None else folded_by_handle.get(source.handle)
      if source is None:
        name, trainable = value.handle, False
      else:
        # A sliced folded weight stays fixed; another weight (a bias) keeps
        # its variable's trainable flag.
        name = graph_ir.variable_name(source.variable)
        trainable = weight is None and bool(source.variable.trainable)
      variable = copies.fixed(
        (id(graph), value.handle), value.value, name, trainable
      )
      new_variables[value.handle] = variable
      if source is not None:
        sources[value.handle] = getattr(
          source.variable, 'weight', source.variable
        )
      if weight is not None:
        sliced[weight.node] = (value.handle, variable)
  return Shrunk(
    graph,
    new_variables,
    tuple(_shrunk_folded(folded, sliced)),
    result,
    dict(names),
    sources,
    dict(kernels),
  )


def _shrunk_folded(folded, sliced) -> List[FoldedWeight]:
  result = []
  for w in folded:
    if w.node in sliced:
      handle, variable = sliced[w.node]
      w = dataclasses.replace(w, node=handle, shape=tuple(variable.shape))
    result.append(w)
  return result
