"""Which units shrinking removes, given the unit flow.

A class of elements (`unit_flow.Units`: units tied by residual adds, gates,
joins) goes only when every element in it is a zero unit and no rule kept
it (`Flow.stops`: a model output, the network input, an unknown op, a
zero-padded conv after a non-zero constant); and every layer keeps at least
one unit, so that it still has an output. Producers that share a class form
a *coupled group* (Torch-Pruning's dependency group): the layers whose
channels are removed together, reported with their channel counts and why
zero channels stayed.

    decision = decide(unit_traversal.analyze(graph_def, outputs, RULES))
    decision.removed[group.ids]   # the group's units that go
"""

import collections
import dataclasses
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from graph_prune.passes import channel_classes
from graph_prune.passes import unit_flow

ONE_STAYS = 'one unit stays, so that the layer keeps an output'


@dataclasses.dataclass(frozen=True)
class CoupledGroup:
  """Layers whose output channels must be removed together.

  Attributes:
    members: the kernel Const nodes of its producers, in graph order.
    channels_before: distinct channels (classes) of the group.
    zero_channels: channels whose every member unit is zero.
    channels_after: channels left after shrinking.
    kept: why zero channels stayed, one sentence each.
  """

  members: Tuple[str, ...]
  channels_before: int
  zero_channels: int
  channels_after: int
  kept: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Decision:
  """What goes.

  Attributes:
    removed: element -> it is removed (index with `Group.ids`).
    layer_reasons: producer node -> why its zero units that stay stay.
    coupled: the coupled groups of two or more producers.
  """

  removed: np.ndarray
  layer_reasons: Dict[str, Tuple[str, ...]]
  coupled: Tuple[CoupledGroup, ...]


def decide(
  flow: unit_flow.Flow, weight_names: Optional[Mapping[str, str]] = None
) -> Decision:
  """Removes every class that is all zero and kept by no rule.

  Args:
    flow: the result of `unit_traversal.analyze`.
    weight_names: kernel Const node -> the name of the weight it holds
      (e.g. 'dense_1/kernel'), for the reasons, which name the layers a
      unit is coupled with: a user knows the weight, not the node its value
      was frozen into. A kernel not in it is named by its node.

  Returns:
    A `Decision`.
  """
  names = dict(weight_names or {})
  classes = flow.units.classes()
  zero = flow.units.zero
  all_zero = np.ones(len(classes), dtype=bool)  # indexed by class root
  np.logical_and.at(all_zero, classes, zero)
  reasons = collections.defaultdict(list)
  for reason, elements in flow.stops:
    for c in np.unique(classes[elements]):
      if all_zero[c] and reason not in reasons[c]:
        reasons[c].append(reason)
  go = all_zero.copy()
  go[list(reasons)] = False
  for group in flow.groups:
    if group.ids.size and go[classes[group.ids]].all():
      first = classes[group.ids[0]]
      go[first] = False
      reasons[first].append(ONE_STAYS)
  removed = go[classes]
  members = _class_members(flow, classes)
  layer_reasons = {
    g.producer: _layer_reasons(
      g, classes, removed, reasons, members, zero, names
    )
    for g in flow.groups
  }
  coupled = _coupled(flow, classes, all_zero, go, reasons, members)
  return Decision(removed, layer_reasons, coupled)


def _class_members(flow, classes) -> Dict[int, List[unit_flow.Group]]:
  """Class root -> the groups that own an element of it."""
  owner = {}
  for group in flow.groups:
    for element in group.ids.tolist():
      owner[element] = group
  members = collections.defaultdict(dict)
  for element, c in enumerate(classes.tolist()):
    group = owner.get(element)
    if group is not None:
      members[c][group.producer] = group
  return {c: list(groups.values()) for c, groups in members.items()}


def _layer_reasons(group, classes, removed, reasons, members, zero, names):
  stayed = group.zero & ~removed[group.ids]
  found = []
  for c in np.unique(classes[group.ids[stayed]]).tolist():
    why = list(reasons.get(c, ()))
    if not why:
      others = [
        names.get(g.kernel, g.kernel)
        for g in members.get(c, ())
        if g is not group and not zero[g.ids[classes[g.ids] == c]].all()
      ]
      why = [
        'the units are coupled with non-zero units of '
        + ', '.join(repr(k) for k in others[:3])
        + (' and others' if len(others) > 3 else '')
      ]
    found += [w for w in why if w not in found]
  return tuple(found)


def _coupled(flow, classes, all_zero, go, reasons, members):
  """The connected components of producers that share a class."""
  index = {g.producer: i for i, g in enumerate(flow.groups)}
  producers = channel_classes.Classes()
  producers.new(len(flow.groups))
  for groups in members.values():
    for other in groups[1:]:
      producers.union(index[groups[0].producer], index[other.producer])
  components = collections.defaultdict(list)
  for i, group in enumerate(flow.groups):
    components[producers.find(i)].append(group)
  result = []
  for groups in components.values():
    if len(groups) < 2:
      continue
    own = np.unique(np.concatenate([classes[g.ids] for g in groups]))
    kept = []
    for c in own.tolist():
      kept += [r for r in reasons.get(c, ()) if r not in kept]
    result.append(
      CoupledGroup(
        members=tuple(g.kernel for g in groups),
        channels_before=int(own.size),
        zero_channels=int(all_zero[own].sum()),
        channels_after=int((~go[own]).sum()),
        kept=tuple(kept),
      )
    )
  return tuple(result)
