"""Which attention heads of a traced graph belong together: heads as groups.

With `unit_groups=coupled`, each attention layer is one group of kernels
pruned head by head (`head_walk` follows the heads through the attention):
its query, key and value kernels along the heads axis and its output kernel
along axis 0, so a head's score is the L2 norm over every slice of it (the
group importance of Torch-Pruning) and a pruned head is zero in all four.
Under grouped-query attention a channel of the group is one key/value head
with the query heads that share it (pruning one query head alone would leave
the heads unequal).

    found = analyse(analysis, consumers, variables)   # a ChannelGroups

The `[heads, head_dim]` biases added to the query, key and value are the
heads' unit parameters (`ParamMask` along axis 0): `unit_params=all` masks
them with their heads.

An analysis, not a pass: it reads `cf.graph` and changes nothing. Heads the
walk loses stay with their kernels, each a group of its own.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from graph_prune.passes import channel_classes
from graph_prune.passes import channel_groups
from graph_prune.passes import graph_cones
from graph_prune.passes import head_walk
from graph_prune.passes.channel_group_types import ChannelGroups
from graph_prune.passes.channel_group_types import ParamMask
from graph_prune.passes.channel_group_types import UnitGroup


def analyse(
  analysis, consumers: Mapping[str, str], variables: Mapping[str, Any]
) -> ChannelGroups:
  """Finds the attention heads of a traced graph as coupled groups.

  Args:
    analysis: the scan's `Analysis` of the traced function.
    consumers: top-level node name -> the unit-pruned kernel it consumes.
    variables: name -> variable of every captured variable.

  Returns:
    A `ChannelGroups`: one `UnitGroup` per attention layer whose heads reach
    an output kernel (its query, key and value kernels along their heads
    axis and its output kernel along the contracted axis; a channel is a
    key/value head with its query heads), and the heads' biases.
  """
  recorder = _Groups(analysis, consumers, variables)
  walk = head_walk.Walk(recorder)
  for op in analysis.concrete_function.graph.get_operations():
    walk.visit(op)
  return recorder.found()


class _Groups(head_walk.Recorder):
  """Collects (kernel, axis, ids) where heads start and end."""

  def __init__(self, analysis, consumers, variables):
    self.ids = channel_classes.Classes()
    self.cones = graph_cones.Cones(analysis)
    self.consumers = consumers
    self.variables = variables
    self.starts: List[Tuple[str, int, np.ndarray]] = []
    self.ends: List[Tuple[str, int, np.ndarray]] = []
    self.biases: Dict[str, ParamMask] = {}
    self.conflicts = set()

  def track(self, op) -> None:
    self.cones.track(op)

  def is_param(self, t) -> bool:
    return self.cones.is_param(t)

  def kernel(self, op) -> Optional[int]:
    if op.name not in self.consumers:
      return None
    return 0 if self.cones.is_param(op.inputs[0]) else 1

  def start(self, op, position, axis, kernel=None) -> np.ndarray:
    tensor = op.inputs[position] if kernel is None else kernel
    ids = self.ids.new(tensor.shape[axis])
    self.starts.append((self.consumers[op.name], axis, ids))
    return ids

  def end(self, op, position, axis, ids, kernel=None) -> None:
    self.ends.append((self.consumers[op.name], axis, ids))

  def operand(self, op, index, axis, ids) -> None:
    """A trainable variable of the operand's trailing shape: a head bias."""
    source = next((s for s in self.starts if s[2] is ids), None)
    t = op.inputs[index]
    if source is None or t.shape.rank is None:
      return
    trailing = t.shape.as_list()[t.shape.rank + axis :]
    kernel, kernel_axis, _ = source
    for name in self.cones.variables(t):
      v = self.variables.get(name)
      if v is None or not v.trainable or v.shape.as_list() != trailing:
        continue
      mask = ParamMask(
        name,
        tuple((kernel, h) for h in range(ids.size)),
        axis=0,
        kernel_axis=kernel_axis,
      )
      if self.biases.setdefault(name, mask) != mask:
        self.conflicts.add(name)

  def found(self) -> ChannelGroups:
    groups = self.groups()
    return ChannelGroups(
      groups,
      tuple(p for n, p in self.biases.items() if n not in self.conflicts),
    )

  def groups(self) -> Tuple[UnitGroup, ...]:
    """Attention layers whose heads reached an output kernel."""
    ended = {self.ids.find(i) for _, _, ids in self.ends for i in ids.tolist()}
    entries = [
      e
      for e in self.starts + self.ends
      if any(self.ids.find(i) in ended for i in e[2].tolist())
    ]
    groups = channel_groups.group_entries(self.ids, entries, min_entries=2)
    return tuple(g for g in groups if not g.fixed)
