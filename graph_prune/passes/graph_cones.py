"""Which tensors of a traced graph vary, and which variables a constant reads.

Both training-side channel analyses (`channel_groups` for channels along the
last axis, `head_groups` for attention heads) must tell a parameter (a bias,
a scale: a tensor computed from variables alone) from an activation (a
tensor that depends on the model's input or on a random op), and name the
variables a parameter is read from. `Cones` records both as the analyses
visit the ops in creation (topological) order:

    cones = Cones(analysis)
    for op in graph.get_operations():
      cones.track(op)
      cones.is_param(op.outputs[0]), cones.variables(op.outputs[0])
"""

from typing import Dict, Optional

import tensorflow as tf

from graph_prune.passes import channel_ops


class Cones:
  """Varying tensors and the variables in each constant tensor's cone."""

  def __init__(self, analysis):
    """Args: the scan's `Analysis` of the traced function."""
    graph = analysis.concrete_function.graph
    captured = {id(internal) for _, internal in graph.captures}
    self._handles = {
      id(graph.inputs[info.arg_index]): info.name for info in analysis.infos
    }
    # Tensor name -> the variables in its cone (for tensors that depend on
    # no input).
    self._cone: Dict[str, frozenset] = {}
    self._varying = {t.name for t in graph.inputs if id(t) not in captured}

  def track(self, op) -> None:
    """Records whether `op`'s outputs vary and which variables they read."""
    inputs = list(op.inputs)
    if op.type in channel_ops.RANDOM_OPS or any(
      t.name in self._varying for t in inputs
    ):
      self._varying.update(t.name for t in op.outputs)
      return
    if op.type == 'ReadVariableOp':
      handle = self._handle(inputs[0])
      if handle is not None:
        self._cone[op.outputs[0].name] = frozenset([handle])
        return
    cone = frozenset()
    for t in inputs:
      cone |= self._cone.get(t.name, frozenset())
    if cone:
      for t in op.outputs:
        self._cone[t.name] = cone

  def is_param(self, t) -> bool:
    """Whether `t` depends on no input (variables and constants only)."""
    return t.name not in self._varying

  def varies(self, t) -> bool:
    return t.name in self._varying

  def variables(self, t) -> frozenset:
    """The names of the variables `t` is computed from (if constant)."""
    return self._cone.get(t.name, frozenset())

  def _handle(self, t) -> Optional[str]:
    while t.op.type == 'Identity' and t.dtype == tf.resource:
      t = t.op.inputs[0]
    return self._handles.get(id(t))
