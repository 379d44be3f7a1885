"""What the training channel analysis (`channel_groups.analyse`) finds.

Kernels whose channels must be pruned together (`UnitGroup` of `Member`s)
and the unit parameters masked with their units (`ParamMask`).
"""

import dataclasses
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Member:
  """A kernel of a group and where its slices sit.

  Attributes:
    weight: the kernel's name.
    axis: the axis of its slices: -1 for a producer (output units), -2 for a
      depthwise kernel (its input channels).
    channels: per position along `axis`, the group channel it belongs to.
  """

  weight: str
  axis: int
  channels: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class UnitGroup:
  """Kernels whose channels must be pruned together.

  Attributes:
    members: the kernels, producers first.
    channels: how many channels the group has.
    fixed: the channels that always stay (tied to a tensor from outside any
      producer, such as the network's input).
  """

  members: Tuple[Member, ...]
  channels: int
  fixed: Tuple[int, ...] = ()

  def describe(self) -> str:
    names = ', '.join(m.weight for m in self.members)
    fixed = f', {len(self.fixed)} fixed' if self.fixed else ''
    return f'{self.channels} channels{fixed}: {names}'


@dataclasses.dataclass(frozen=True)
class ParamMask:
  """A unit parameter and the units its positions go with.

  Attributes:
    param: the variable's name.
    sources: per position along `axis`, (kernel, unit) of a producer whose
      unit the position belongs to, or None where it always stays.
    axis: the param's axis the sources run along (an attention bias
      `[heads, head_dim]`: 0); the other axes follow.
    kernel_axis: the kernels' axis their units lie along (-1: output units;
      an attention kernel's heads axis).
  """

  param: str
  sources: Tuple[Optional[Tuple[str, int]], ...]
  axis: int = -1
  kernel_axis: int = -1


@dataclasses.dataclass(frozen=True)
class ChannelGroups:
  """What `analyse` found.

  Attributes:
    groups: with `coupled`, one `UnitGroup` per set of coupled kernels that
      has more than one member; empty otherwise.
    params: one `ParamMask` per unit parameter found.
  """

  groups: Tuple[UnitGroup, ...] = ()
  params: Tuple[ParamMask, ...] = ()
