"""The graph IR of the passes: the naming contract, tensor names, calls.

Naming contract. Every name graph_prune gives a variable or node, and every
name a later pass or tool matches, is built here and matched exactly (an
anchored suffix, never a substring):
  * `<weight>/mask`, `<weight>/threshold`: the variables next to a weight;
  * `<weight>/gradient`, `<weight>/old_weight`, `<weight>/old_old_weight`:
    the saliency state next to a weight under a gradient `prune_option`
    (`masks/saliency.py`);
  * `<prefix>/last_mask_update_step`: the step of the last mask update;
  * `<weight>/masked_weight`: the `Mul(weight, mask)` node the mask pass
    inserts and the fold pass replaces by a constant.

FunctionDefs and GraphDefs: reading and editing tensor names, outputs,
consumers and the functions a node calls; `FunctionGraph`, a function with
its library. (What a pass returns is `driver.PassResult`; whether a graph is
well formed, `validity.py`.)

The pass works on FunctionDefs only (the traced function's own
`ConcreteFunction.function_def` and its library), so there is one tensor
naming convention to handle. In a FunctionDef a tensor is named
  * `arg`                     an input argument of the function,
  * `node:output_arg:index`   the index-th tensor of output arg
                              `output_arg` of `node`,
  * `^node`                   a control dependency.
(See tensorflow/core/framework/function.proto.)
"""

import collections
import dataclasses
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import graph_pb2

from graph_prune import _tf_internal
from graph_prune import errors

Library = Dict[str, function_pb2.FunctionDef]

MASK_SUFFIX = '/mask'
THRESHOLD_SUFFIX = '/threshold'
MASKED_WEIGHT_SUFFIX = '/masked_weight'
GRADIENT_SUFFIX = '/gradient'
OLD_WEIGHT_SUFFIX = '/old_weight'
OLD_OLD_WEIGHT_SUFFIX = '/old_old_weight'
LAST_UPDATE_STEP = 'last_mask_update_step'


def mask_name(weight: str) -> str:
  """The name of `weight`'s mask variable."""
  return weight + MASK_SUFFIX


def threshold_name(weight: str) -> str:
  """The name of `weight`'s threshold variable."""
  return weight + THRESHOLD_SUFFIX


def gradient_name(weight: str) -> str:
  """The name of `weight`'s saliency variable g."""
  return weight + GRADIENT_SUFFIX


def old_weight_name(weight: str) -> str:
  """The name of the variable holding `weight` as of the previous call."""
  return weight + OLD_WEIGHT_SUFFIX


def old_old_weight_name(weight: str) -> str:
  """The name of the variable holding `weight` as of two calls before."""
  return weight + OLD_OLD_WEIGHT_SUFFIX


def step_name(prefix: str) -> str:
  """The name of the last-update step variable of a pruned model."""
  return f'{prefix}/{LAST_UPDATE_STEP}'


def masked_weight_name(weight: str) -> str:
  """The name of the `weight * mask` node the mask pass inserts."""
  return weight + MASKED_WEIGHT_SUFFIX


def weight_of_mask(name: str) -> Optional[str]:
  """The weight a mask variable name belongs to, or None for another name."""
  name = name[:-2] if name.endswith(':0') else name
  return name[: -len(MASK_SUFFIX)] if name.endswith(MASK_SUFFIX) else None


def is_masked_weight(node) -> bool:
  """Whether `node` is a `Mul` named `[<scope>/]<weight>/masked_weight`."""
  return node.op == 'Mul' and node.name.endswith(MASKED_WEIGHT_SUFFIX)


def weight_of_masked(name: str) -> Optional[str]:
  """`[<scope>/]<weight>` of a masked weight node's name, or None."""
  if not name.endswith(MASKED_WEIGHT_SUFFIX):
    return None
  return name[: -len(MASKED_WEIGHT_SUFFIX)]


def node_name(text: str) -> str:
  """The node (or argument) a tensor or input name refers to.

  'n', 'n:0', 'n:output:0' and '^n' all refer to node 'n'.
  """
  return text.lstrip('^').split(':')[0]


def variable_name(variable) -> str:
  """A variable's name without its output suffix, e.g. 'dense/kernel'."""
  return node_name(variable.name)


class FunctionGraph(NamedTuple):
  """A function and the library it calls into: the graph kind of insertion.

  Passes on it (`custom_gradients.forward_function_graph`,
  `inline.inline_top`, `bind_weights.bind_weights`) return a new one and
  share the FunctionDefs they leave unchanged; `lower.lower` turns it into
  the GraphDef that is imported.

  Attributes:
    top: the function (the traced function's own FunctionDef, or its
      rewrite).
    library: function name -> FunctionDef of every function it may call.
  """

  top: function_pb2.FunctionDef
  library: Library


@dataclasses.dataclass(frozen=True)
class Ref:
  """A data tensor of a function: an argument or a node output."""

  node: str  # node name, or argument name
  arg: Optional[str] = None  # output arg name; None for an argument
  index: int = 0

  def __str__(self):
    return (
      self.node
      if self.arg is None
      else (f'{self.node}:{self.arg}:{self.index}')
    )


def parse_ref(text: str, arg_names) -> Optional[Ref]:
  """Parses a data input name; returns None for control inputs."""
  if text.startswith('^'):
    return None
  parts = text.split(':')
  if len(parts) == 3:
    return Ref(parts[0], parts[1], int(parts[2]))
  if parts[0] in arg_names and (len(parts) == 1 or parts[1] == '0'):
    return Ref(parts[0])
  raise errors.GraphRewriteError(
    f'Unexpected tensor name {text!r} in a FunctionDef; cannot rewrite it.'
  )


def arg_names(fdef) -> List[str]:
  return [a.name for a in fdef.signature.input_arg]


def output_arg_names(node, library: Library) -> List[Tuple[str, int]]:
  """The (output_arg, index) pairs of `node`'s outputs, in flat order."""
  if node.op in library:
    return [(a.name, 0) for a in library[node.op].signature.output_arg]
  op_def = _tf_internal.op_def(node.op)
  if op_def is None:
    raise errors.GraphRewriteError(
      f'Op type {node.op!r} of node {node.name!r} is not registered; '
      'cannot rewrite the graph.'
    )
  names = []
  for arg in op_def.output_arg:
    if arg.number_attr:
      count = node.attr[arg.number_attr].i
    elif arg.type_list_attr:
      count = len(node.attr[arg.type_list_attr].list.type)
    else:
      count = 1
    names.extend((arg.name, i) for i in range(count))
  return names


def output_ref(node, flat_index: int, library: Library) -> Ref:
  name, index = output_arg_names(node, library)[flat_index]
  return Ref(node.name, name, index)


class Consumers:
  """Index from a data tensor to the (node, data input position) reading it."""

  def __init__(self, fdef):
    self._names = set(arg_names(fdef))
    self._by_ref = collections.defaultdict(list)
    for node in fdef.node_def:
      for position, text in enumerate(node.input):
        ref = parse_ref(text, self._names)
        if ref is not None:
          self._by_ref[ref].append((node, position))
    self.returns = collections.defaultdict(list)  # ref -> output indices
    out_index = {a.name: i for i, a in enumerate(fdef.signature.output_arg)}
    for out_name, text in fdef.ret.items():
      self.returns[parse_ref(text, self._names)].append(out_index[out_name])

  def of(self, ref: Ref):
    return self._by_ref.get(ref, ())


def returned_args(fdef) -> Dict[int, List[int]]:
  """Maps an argument index to the outputs that return it (through Identity)."""
  names = arg_names(fdef)
  nodes = {n.name: n for n in fdef.node_def}
  result = collections.defaultdict(list)
  for out_index, out_arg in enumerate(fdef.signature.output_arg):
    ref = parse_ref(fdef.ret[out_arg.name], set(names))
    while ref.arg is not None and nodes[ref.node].op == 'Identity':
      ref = parse_ref(nodes[ref.node].input[0], set(names))
    if ref.arg is None:
      result[names.index(ref.node)].append(out_index)
  return result


def rename_inputs(nodes, mapping: Mapping[str, str]):
  """Replaces data/control input names of `nodes` per `mapping`, in place."""
  for node in nodes:
    for i, text in enumerate(node.input):
      if text in mapping:
        node.input[i] = mapping[text]


def rename_refs(fdef, mapping: Mapping[str, str]):
  """Replaces data/control input names and returns per `mapping`, in place."""
  if not mapping:
    return
  rename_inputs(fdef.node_def, mapping)
  for key, text in list(fdef.ret.items()):
    if text in mapping:
      fdef.ret[key] = mapping[text]


def function_attrs(node, attrs=None) -> List[Tuple[str, int, str]]:
  """The functions `node` calls through func attrs.

  Args:
    node: a NodeDef.
    attrs: the attr names to read, in this order; None reads every attr.

  Returns:
    `(attr, list_index, function name)` triples; `list_index` is -1 for a
    single func attr, the position in the list for a list of funcs (Case).
  """
  keys = node.attr.keys() if attrs is None else attrs
  called = []
  for key in keys:
    value = node.attr.get(key)
    if value is None:
      continue
    if value.HasField('func') and value.func.name:
      called.append((key, -1, value.func.name))
    elif value.HasField('list') and value.list.func:
      called.extend((key, i, f.name) for i, f in enumerate(value.list.func))
  return called


def called_functions(node, library=()) -> List[Tuple[str, str]]:
  """The (attr name, function name) pairs of the functions a node calls.

  A node whose op type is a function of `library` calls it directly; it is
  listed last, as ('', op).
  """
  called = [(key, name) for key, _, name in function_attrs(node)]
  if node.op in library:
    called.append(('', node.op))
  return called


def set_called_function(node, attr: str, list_index: int, name: str):
  """Makes `node` call function `name` where it called one (see above)."""
  if not attr:
    node.op = name
  elif list_index < 0:
    node.attr[attr].func.name = name
  else:
    node.attr[attr].list.func[list_index].name = name


def call_target(node, library: Library) -> str:
  """The function a call node (PartitionedCall or direct call) calls."""
  return node.op if node.op in library else node.attr['f'].func.name


def reachable(names: Iterable[str], library: Library) -> List[str]:
  """Names of the library functions reachable from `names`, callees first."""
  order, seen = [], set()

  def visit(name):
    if name in seen or name not in library:
      return
    seen.add(name)
    for node in library[name].node_def:
      for _, callee in called_functions(node, library):
        visit(callee)
    order.append(name)

  for name in names:
    visit(name)
  return order


def copy_graph_def(graph_def) -> graph_pb2.GraphDef:
  """A copy of `graph_def`, for a pass that must not modify its input."""
  copy = graph_pb2.GraphDef()
  copy.CopyFrom(graph_def)
  return copy


def to_graph_def(fdef, library: Library, input_shapes=None):
  """Converts a FunctionDef body to a GraphDef (args become Placeholders).

  Returns:
    (graph_def, flat) where `flat(text)` maps a FunctionDef tensor name to
    the GraphDef one (`node:flat_index`).
  """
  graph_def = graph_pb2.GraphDef()
  flat_names = {}
  names = arg_names(fdef)
  for i, arg in enumerate(fdef.signature.input_arg):
    node = graph_def.node.add(name=arg.name, op='Placeholder')
    node.attr['dtype'].type = arg.type
    shapes = (
      fdef.arg_attr[i].attr.get('_output_shapes')
      if (i in fdef.arg_attr)
      else None
    )
    if input_shapes is not None and input_shapes[i] is not None:
      node.attr['shape'].shape.CopyFrom(input_shapes[i])
    elif shapes is not None and shapes.list.shape:
      node.attr['shape'].shape.CopyFrom(shapes.list.shape[0])
    flat_names[arg.name] = f'{arg.name}:0'
  for node in fdef.node_def:
    for flat_index, (out_arg, index) in enumerate(
      output_arg_names(node, library)
    ):
      flat_names[f'{node.name}:{out_arg}:{index}'] = f'{node.name}:{flat_index}'
  known = {n.name for n in graph_def.node} | {n.name for n in fdef.node_def}
  for node in fdef.node_def:
    new = graph_def.node.add()
    new.CopyFrom(node)
    _drop_unknown_colocation(new, known)
    for i, text in enumerate(new.input):
      if not text.startswith('^'):
        ref = parse_ref(text, names)
        new.input[i] = flat_names[str(ref)]
  return graph_def, lambda text: flat_names[text]


def _drop_unknown_colocation(node, known):
  """Drops `_class: loc:@x` entries naming nodes absent from the graph.

  A read of a captured variable is colocated with the variable's handle by
  its graph name, which the FunctionDef's argument does not keep (and a
  masked weight has no handle any more); import_graph_def rejects those.
  """
  if '_class' not in node.attr:
    return
  entries = [
    e
    for e in node.attr['_class'].list.s
    if not e.startswith(b'loc:@') or e[5:].decode() in known
  ]
  if entries:
    node.attr['_class'].list.ClearField('s')
    node.attr['_class'].list.s.extend(entries)
  else:
    del node.attr['_class']


def topological_order(graph_def) -> list:
  """The nodes of `graph_def`, each after every node it reads.

  Nodes on a cycle (none in a valid GraphDef) are left out.
  """
  waiting = {
    n.name: len({node_name(t) for t in n.input}) for n in graph_def.node
  }
  readers = collections.defaultdict(list)
  for node in graph_def.node:
    for name in {node_name(t) for t in node.input}:
      readers[name].append(node)
  ready = [n for n in graph_def.node if not waiting[n.name]]
  order = []
  while ready:
    node = ready.pop()
    order.append(node)
    for reader in readers[node.name]:
      waiting[reader.name] -= 1
      if not waiting[reader.name]:
        ready.append(reader)
  return order


def without_nodes(graph_def, names):
  """A copy of `graph_def` without the nodes `names` (inputs fed by an
  `import_graph_def` input_map)."""
  new = type(graph_def)()
  new.CopyFrom(graph_def)
  kept = [n for n in new.node if n.name not in names]
  del new.node[:]
  new.node.extend(kept)
  return new
