"""Variable reads seen as constants by an analysis, and turned back after.

Shrink's unit analysis (`shrink_units`) reads weights as `Const` nodes and
rewrites them by slicing. A stripped graph keeps its weights as variables:
each is a top-level `ReadVariableOp` of a captured handle (a Placeholder).
`const_view` replaces each such read by a Const *stub* of the same name,
dtype and shape but no values (no weight enters the GraphDef), and hands
the analysis a `values` lookup that reads the variable when it is asked
for; `thaw` turns every stub back into the read it was, unless the pass
wrote a new value into it (a sliced kernel), which then becomes a read of a
new handle Placeholder, its value returned for the caller to put in a new
variable. Float Consts the pass added above `LARGEST_CONST` elements
(copies of a sliced weight for one edge) become variables the same way.

  view:  k = ReadVariableOp(h)              ->  k = Const[stub f32[64,8]]
  thaw:  k = Const[stub]  (untouched)       ->  k = ReadVariableOp(h)
         k = Const[f32[64,5] values]        ->  k = ReadVariableOp(k/handle)
                                                 (value returned)
"""

import dataclasses
from typing import Any, Callable, Dict, Mapping, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2

from graph_prune.passes import driver
from graph_prune.passes import graph_ir

# A frozen or written float Const of more elements than this is a weight
# (a few KB: shapes, scalars and small vectors stay constants).
LARGEST_CONST = 1024


@dataclasses.dataclass(frozen=True)
class Read:
  """A variable read the view replaced by a stub.

  Attributes:
    node: the read node (its name is the stub's).
    handle: the handle Placeholder it read.
    variable: the variable behind the handle.
    stub: the stub's TensorProto (no values).
  """

  node: Any
  handle: str
  variable: Any
  stub: Any


@dataclasses.dataclass(frozen=True)
class View:
  """What `const_view` did.

  Attributes:
    reads: stub name -> `Read`.
    handles: the handle Placeholder nodes the reads used, by name.
  """

  reads: Mapping[str, Read]
  handles: Mapping[str, Any]

  def values(self) -> Dict[str, Callable[[], np.ndarray]]:
    """Stub name -> a function reading its variable's value."""
    return {name: r.variable.numpy for name, r in self.reads.items()}


@dataclasses.dataclass(frozen=True)
class NewValue:
  """A value the thawed graph reads from a new variable.

  Attributes:
    handle: the new handle Placeholder.
    value: the value (a NumPy array).
    source: the `Read` whose stub the pass wrote it into, or None for a
      Const the pass added.
  """

  handle: str
  value: np.ndarray
  source: Any


def const_view(
  graph_def, variables: Mapping[str, Any]
) -> driver.PassResult[graph_pb2.GraphDef, 'View']:
  """Replaces each top-level read of a variable in `variables` by a stub.

  Args:
    graph_def: a GraphDef whose variables are handle Placeholders; not
      modified.
    variables: handle Placeholder name -> its `tf.Variable`.

  Returns:
    A `PassResult` with the new GraphDef and a `View`.
  """
  new = graph_ir.copy_graph_def(graph_def)
  reads, handles = {}, {}
  by_name = {n.name: n for n in new.node}
  for node in new.node:
    if node.op != 'ReadVariableOp':
      continue
    handle = graph_ir.node_name(node.input[0])
    variable = variables.get(handle)
    if variable is None or by_name[handle].op != 'Placeholder':
      continue
    original = node_def_pb2.NodeDef()
    original.CopyFrom(node)
    stub = tensor_pb2.TensorProto(dtype=node.attr['dtype'].type)
    stub.tensor_shape.CopyFrom(tf.TensorShape(variable.shape).as_proto())
    control = [t for t in node.input if t.startswith('^')]
    node.op = 'Const'
    del node.input[:]
    node.input.extend(control)
    node.attr.clear()
    node.attr['dtype'].type = stub.dtype
    node.attr['value'].tensor.CopyFrom(stub)
    reads[node.name] = Read(original, handle, variable, stub)
    handles[handle] = by_name[handle]
  return driver.PassResult(new, View(reads, handles), changed=bool(reads))


def thaw(
  graph_def, view: View
) -> driver.PassResult[graph_pb2.GraphDef, Tuple['NewValue', ...]]:
  """Turns `view`'s stubs (and weight-sized new Consts) back into reads.

  Args:
    graph_def: the GraphDef a pass made from `const_view`'s; not modified.
    view: `const_view`'s report.

  Returns:
    A `PassResult` with the new GraphDef and a tuple of `NewValue`s (one
    per new handle Placeholder).
  """
  new = graph_ir.copy_graph_def(graph_def)
  present = {n.name for n in new.node}
  added_nodes, new_values = [], []
  for node in new.node:
    if node.op != 'Const':
      continue
    read = view.reads.get(node.name)
    tensor = node.attr['value'].tensor
    if read is not None and tensor == read.stub:
      node.CopyFrom(_with_control(read.node, node))
      if read.handle not in present:
        added_nodes.append(view.handles[read.handle])
        present.add(read.handle)
      continue
    if read is None and not _is_weight(node):
      continue
    value = tf.make_ndarray(tensor)
    handle = _unique(f'{node.name}/handle', present)
    present.add(handle)
    placeholder = node_def_pb2.NodeDef(name=handle, op='Placeholder')
    placeholder.attr['dtype'].type = types_pb2.DT_RESOURCE
    placeholder.attr['shape'].shape.SetInParent()
    added_nodes.append(placeholder)
    control = [t for t in node.input if t.startswith('^')]
    dtype = node.attr['dtype'].type
    node.op = 'ReadVariableOp'
    del node.input[:]
    node.input.extend([handle] + control)
    node.attr.clear()
    node.attr['dtype'].type = dtype
    new_values.append(NewValue(handle, value, read))
  new.node.extend(added_nodes)
  return driver.PassResult(new, tuple(new_values), changed=bool(new_values))


def _with_control(read_node, const_node):
  """The original read, with the control inputs the stub has now."""
  node = node_def_pb2.NodeDef()
  node.CopyFrom(read_node)
  control = [t for t in const_node.input if t.startswith('^')]
  data = [t for t in node.input if not t.startswith('^')]
  del node.input[:]
  node.input.extend(data + control)
  return node


def _is_weight(node) -> bool:
  shape = node.attr['value'].tensor.tensor_shape
  size = int(np.prod([d.size for d in shape.dim], dtype=np.int64))
  floating = tf.as_dtype(node.attr['dtype'].type).is_floating
  return floating and size > LARGEST_CONST


def _unique(base: str, taken) -> str:
  name, i = base, 0
  while name in taken:
    i += 1
    name = f'{base}_{i}'
  return name
