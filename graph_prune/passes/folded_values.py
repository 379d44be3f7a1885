"""The top-level nodes that hold the folded values of masked weights.

`fold_masks` finds each masked weight and routes one value to it, through
calls into function arguments if need be; this module makes that value at
the top level of the graph and records it for the pass's report:

  * in a frozen graph, a new Const of `kernel * mask` (a `FoldedWeight`,
    which export's report and shrink read);
  * in a graph that keeps its variables, a new Placeholder for the handle
    of a variable the caller fills with `kernel * mask` (a `FoldedHandle`),
    one read of it, and, once every masked weight is folded, the removal of
    the reads of the weight and the mask that nothing needs any more.

It is separate from `fold_masks` because what a folded value is (its node,
its numbers, its record) does not depend on how the pass finds masked
weights and rewires the functions that use them.

Pruned positions hold +0.0: `kernel * mask` is -0.0 where a negative weight
is masked, which compares equal to +0.0 (so outputs compare equal; only the
sign of an exactly-zero result can differ) but breaks gzip's runs of zero
bytes, so the export compresses worse (bench/export_size.py; measured:
BUILD_NOTES, 'Measurements behind the code').
"""

import dataclasses
from typing import Dict, Tuple, Union

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from graph_prune import errors
from graph_prune.passes import function_body
from graph_prune.passes import graph_ir
from graph_prune.passes import rules

# A variable read, which `function_body.Body.resolve` follows to its handle.
_READ = function_body.READ


@dataclasses.dataclass(frozen=True)
class FoldedWeight:
  """A masked weight folded into a constant.

  Attributes:
    name: the weight's name (its mask variable's name without '/mask').
    node: the top-level Const node holding `weight * mask`.
    shape: its shape.
    dtype: its dtype name.
    nonzeros: how many of its values are not zero.
  """

  name: str
  node: str
  shape: Tuple[int, ...]
  dtype: str
  nonzeros: int

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def sparsity(self) -> float:
    return 1.0 - self.nonzeros / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class FoldedHandle:
  """A masked weight whose folded value a new variable will hold.

  Attributes:
    name: the weight's name.
    node: the new top-level Placeholder for that variable's handle.
    weight_node, mask_node: the Placeholders of the captured handles of the
      weight and its mask (the variables whose product it holds).
  """

  name: str
  node: str
  weight_node: str
  mask_node: str


class FoldedValues:
  """The folded values made at the top level of one graph, one per pair.

  A (weight, mask) pair reached from several masked weights (a function
  called twice, or both operand orders) gets one node.

  Attributes:
    folded: (weight node, mask node) names -> `FoldedWeight` (frozen).
    handles: (weight node, mask node) names -> `FoldedHandle` (variables).
  """

  def __init__(self, graph_def, top: function_body.Body):
    """Makes values in `graph_def`, the copy the pass edits.

    Args:
      graph_def: the GraphDef new top-level nodes are added to.
      top: its top-level `Body`, which indexes them.
    """
    self.graph_def = graph_def
    self.top = top
    self.folded: Dict[Tuple[str, str], FoldedWeight] = {}
    self.handles: Dict[Tuple[str, str], FoldedHandle] = {}
    self._reads: Dict[str, str] = {}

  def report(self) -> Tuple[Union[FoldedWeight, FoldedHandle], ...]:
    """Every value made, frozen ones first, each in the order it was made."""
    return tuple(self.folded.values()) + tuple(self.handles.values())

  def handle(self, weight_node, mask_node, weight: str, where: str):
    """A new top-level Placeholder for the folded variable's handle."""
    key = (weight_node.name, mask_node.name)
    if key in self.handles:
      return self.handles[key].node
    node = self.graph_def.node.add()
    base = graph_ir.weight_of_masked(where) or where + '/folded'
    node.name = self.top.unique_name(base)
    node.op = 'Placeholder'
    node.attr['dtype'].type = types_pb2.DT_RESOURCE
    node.attr['shape'].shape.SetInParent()
    self.top.add(node)
    self.handles[key] = FoldedHandle(
      weight, node.name, weight_node.name, mask_node.name
    )
    return node.name

  def read(self, handle: str, mul) -> str:
    """A top-level read of the folded variable's handle (one per handle)."""
    if handle not in self._reads:
      node = self.graph_def.node.add()
      node.name = self.top.unique_name(f'{handle}/read')
      node.op = _READ
      node.input.append(handle)
      node.attr['dtype'].type = mul.attr['T'].type
      self.top.add(node)
      self._reads[handle] = node.name
    return self._reads[handle]

  def drop_dead_reads(self):
    """Removes the top-level reads of folded weights and their masks.

    A captured variable's read keeps control edges (from the function's
    NoOp, for example) after the Mul that used it is gone; left in place
    they would keep the mask and the unmasked weight in the graph. Reads
    (and Identities of them) no data edge needs any more are removed with
    the control edges on them; a read that still feeds something else
    (the weight read unmasked elsewhere) stays.
    """
    folded = {h.weight_node for h in self.handles.values()} | {
      h.mask_node for h in self.handles.values()
    }
    while True:
      consumers = self.top.data_consumers()
      dead = set()
      for node in self.top.nodes:
        if node.op not in rules.IDENTITY_OPS and node.op != _READ:
          continue
        kind, leaf = self.top.resolve(node.name)
        if kind != 'placeholder' or leaf.name not in folded:
          continue
        refs = self.top.refs_to_output(node, 0)
        if not any(consumers.get(r) for r in refs):
          dead.add(node.name)
      if not dead:
        return
      for node in list(self.top.nodes):
        if node.name in dead:
          self.top.remove(node)
        else:
          kept = [t for t in node.input if t[1:] not in dead]
          if len(kept) != len(node.input):
            del node.input[:]
            node.input.extend(kept)

  def const(self, weight_node, mask_node, weight: str, where: str) -> str:
    """A new top-level Const of `weight * mask`, +0.0 where pruned."""
    key = (weight_node.name, mask_node.name)
    if key in self.folded:
      return self.folded[key].node
    value = tf.make_ndarray(weight_node.attr['value'].tensor)
    mask = tf.make_ndarray(mask_node.attr['value'].tensor)
    if value.shape != mask.shape or value.dtype != mask.dtype:
      raise errors.FoldError(
        f'Cannot fold {where!r}: the weight is {value.dtype}{value.shape} '
        f'but the mask is {mask.dtype}{mask.shape}.'
      )
    folded = value * mask
    # +0.0 where pruned: see the module docstring.
    folded = np.where(folded == 0, np.zeros_like(folded), folded)
    node = self.graph_def.node.add()
    base = graph_ir.weight_of_masked(where)
    if base is None:
      base = where + '/folded'
    node.name = self.top.unique_name(base)
    node.op = 'Const'
    node.attr['dtype'].CopyFrom(weight_node.attr['dtype'])
    node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(folded))
    self.top.add(node)
    self.folded[key] = FoldedWeight(
      name=weight,
      node=node.name,
      shape=tuple(folded.shape),
      dtype=tf.as_dtype(folded.dtype).name,
      nonzeros=int(np.count_nonzero(folded)),
    )
    return node.name
