"""Classes of channels that must go together: the analyses' one union-find.

Both channel analyses give every producer's output channel an id and tie
ids position by position where an op combines channels (a residual add, a
squeeze-and-excitation gate): training's coupled groups
(`channel_groups`), shrink's unit flow (`unit_flow.Units`) and shrink's
coupled layers (`unit_removal`). A class may be *fixed*: one of its
channels comes from outside any producer (the network's input), so the
class always stays. The smaller id becomes a class's root, so id 0, when a
caller reserves it for "always stays", stays a root.

    classes = Classes()
    a, b = classes.new(4), classes.new(4)
    classes.union(a, b)       # channel c of a and of b: one class
    classes.fix(a[:1])        # the class of a[0] always stays
"""

from typing import List

import numpy as np


class Classes:
  """A union-find over ids 0..n-1, each root with a fixed flag."""

  def __init__(self):
    self._parent: List[int] = []
    self._fixed: List[bool] = []

  def new(self, count: int) -> np.ndarray:
    """`count` new ids, each its own class; returns them."""
    start = len(self._parent)
    self._parent.extend(range(start, start + count))
    self._fixed.extend([False] * count)
    return np.arange(start, start + count)

  def __len__(self) -> int:
    return len(self._parent)

  def find(self, i: int) -> int:
    parent = self._parent
    root = i
    while parent[root] != root:
      root = parent[root]
    while parent[i] != root:  # path compression
      parent[i], i = root, parent[i]
    return root

  def union(self, a, b) -> None:
    """Ties a[k] to b[k] for every k (the same channel of two tensors)."""
    for x, y in zip(np.ravel(a).tolist(), np.ravel(b).tolist()):
      x, y = self.find(x), self.find(y)
      if x != y:
        root, child = min(x, y), max(x, y)
        self._parent[child] = root
        self._fixed[root] = self._fixed[root] or self._fixed[child]

  def fix(self, ids) -> None:
    """The classes of `ids` always stay."""
    for i in np.ravel(ids).tolist():
      self._fixed[self.find(i)] = True

  def is_fixed(self, i: int) -> bool:
    return self._fixed[self.find(i)]

  def roots(self) -> np.ndarray:
    """Id -> the root of its class."""
    return np.array([self.find(i) for i in range(len(self))], dtype=np.int64)
