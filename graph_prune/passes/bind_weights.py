"""Making a FunctionDef take a weight's (masked) value instead of its handle.

`bind_weights(graph, {arg: Value}, suffix)` is the pass (on a
`graph_ir.FunctionGraph`); `FunctionRewriter.rewrite(fdef, {arg: Value})`,
which it runs on the top function, returns a copy of `fdef` in
which each given resource argument carries a float tensor (the masked weight)
instead of the variable's handle. Every use of the handle is rewritten by a
rule keyed by op type (`_NODE_RULES`):

  ReadVariableOp(h)           -> Identity(v)
  Identity(h)  (resource)     -> Identity(v)          (and follow it)
  ResourceGather(h, i)        -> GatherV2(v, i, 0)
  While/If/Case(.., h, ..)    -> same op calling rewritten copies of its
                                 functions, with the T/Tin/Tout/output_shapes
                                 attrs retyped; a loop variable that passed
                                 the handle through passes the value through
                                 (a loop invariant, as TF builds for captured
                                 tensors, so TF's While gradient handles it).
  PartitionedCall(.., h, ..)  -> inlined first (see inline.py), then the
                                 callee's nodes are rewritten in place.

Every function the rewriter emits is free of calls: all PartitionedCall /
StatefulPartitionedCall nodes are inlined (imported call ops have no Python
gradient, see inline.py). Every loop/branch function reachable from the
traced function is copied under a new name even when no weight reaches it:
TF's While/If gradient rewrites an imported loop's functions under the name
'<name>_rewritten', which would clash with the gradient of the original
graph's loop ("duplicate function with name ... definitions differ"), and
the copies must be call-free too.

Rewritten functions get new names ending in the caller's unique suffix, lose
`api_implements` (so Grappler cannot swap an unmasked implementation back),
and are collected in `new_functions`, callees first. Input protos are never
modified.

Before/after for a While body reading a kernel (`h` is arg 7):
  before: r = ReadVariableOp(h);  m = MatMul(x, r:value:0);  ret h_out = h
  after:  r = Identity(h');       m = MatMul(x, r:output:0); ret h_out = h'
          with arg h' : DT_FLOAT [4, 12]
"""

import dataclasses
from typing import Dict, List, Tuple

import tensorflow as tf
from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.framework import types_pb2

from graph_prune import errors
from graph_prune.passes import driver
from graph_prune.passes import graph_ir
from graph_prune.passes import inline
from graph_prune.passes import rules

# Function attrs that tie a function to an implementation TF may swap in.
_DROPPED_FUNCTION_ATTRS = ('api_implements', 'api_preferred_device')
# Arg attrs that describe a resource handle's contents.
_HANDLE_ARG_ATTRS = ('_handle_dtypes', '_handle_shapes')


@dataclasses.dataclass(frozen=True)
class Bound:
  """What `bind_weights` did.

  Attributes:
    functions: (original name, new name) of each library function copied
      (loop bodies, branches), callees first; inlined calls are not listed.
    new_functions: the new names alone, in the same order: the functions
      the runtime must be told about before the graph is imported.
  """

  functions: Tuple[Tuple[str, str], ...]

  @property
  def new_functions(self) -> Tuple[str, ...]:
    return tuple(new for _, new in self.functions)


def bind_weights(
  graph: graph_ir.FunctionGraph, args: Dict[int, 'Value'], suffix: str
) -> driver.PassResult[graph_ir.FunctionGraph, Bound]:
  """Makes `graph.top` take each `args` weight's value instead of its handle.

  Args:
    graph: the traced function (its calls inlined, `inline.inline_top`) and
      its library; not modified.
    args: argument index of `graph.top` -> the `Value` it now receives.
    suffix: ends every new function's name (unique per call).

  Returns:
    A `PassResult`: a `FunctionGraph` whose top is the rewritten function
    (named `<top>_<suffix>`) and whose library adds the rewritten copies
    to `graph.library`, and a `Bound` report. `changed` is whether any
    argument was bound.

  Raises:
    GraphRewriteError: a weight is used in a way no rule rewrites.
  """
  rewriter = FunctionRewriter(graph.library, suffix)
  top = graph.top
  new_top, _ = rewriter.rewrite(top, args, f'{top.signature.name}_{suffix}')
  library = dict(graph.library)
  library.update((f.signature.name, f) for f in rewriter.new_functions)
  return driver.PassResult(
    graph_ir.FunctionGraph(new_top, library),
    Bound(tuple(rewriter.renamed)),
    changed=bool(args),
  )


@dataclasses.dataclass(frozen=True)
class Value:
  """The float tensor that replaces a handle: dtype enum and static shape."""

  dtype: int
  shape: Tuple[int, ...]

  def shape_proto(self):
    return tf.TensorShape(self.shape).as_proto()


class FunctionRewriter:
  """Rewrites FunctionDefs of one library; one instance per pass call."""

  def __init__(self, library: graph_ir.Library, suffix: str):
    """Args: library (name -> FunctionDef, not modified); suffix for names."""
    self._library = library
    self.suffix = suffix
    self._memo = {}
    self._names = set(library)
    self.new_functions: List[function_pb2.FunctionDef] = []
    self.renamed: List[Tuple[str, str]] = []

  def rewrite(
    self, fdef, args: Dict[int, Value], new_name: str
  ) -> Tuple[function_pb2.FunctionDef, Dict[int, Value]]:
    """Returns (rewritten copy of fdef, {output index: Value it returns})."""
    # Every call inlined, until none is left (see inline.py); the copy is
    # then edited in place.
    inlined = inline.inline_calls(fdef, self._library)
    f = inlined.graph
    if not inlined.changed:
      f = function_pb2.FunctionDef()
      f.CopyFrom(fdef)
    where = f'function {fdef.signature.name!r}'

    affected, per_node = self._propagate(f, args)
    renames = {}
    extra_nodes = []
    for node in f.node_def:
      positions = per_node.get(node.name, {})
      if not positions and node.op not in _CONTROL_FLOW_OPS:
        continue
      rule = _NODE_RULES.get(node.op)
      if rule is None:
        raise errors.GraphRewriteError(
          f'Cannot mask a weight used by node {node.name!r} (op {node.op}) '
          f'in {where}; the pass only rewrites reads, gathers, loops, '
          'branches and calls of a weight.'
        )
      rule(self, node, positions, renames, extra_nodes, where)
    f.node_def.extend(extra_nodes)
    graph_ir.rename_refs(f, renames)

    for i, value in args.items():
      f.signature.input_arg[i].type = value.dtype
      arg_attr = f.arg_attr[i].attr
      for key in _HANDLE_ARG_ATTRS:
        if key in arg_attr:
          del arg_attr[key]
      arg_attr['_output_shapes'].list.Clear()
      arg_attr['_output_shapes'].list.shape.add().CopyFrom(value.shape_proto())
      if i in f.resource_arg_unique_id:
        del f.resource_arg_unique_id[i]
    outputs = {}
    names = set(graph_ir.arg_names(f))
    for k, out_arg in enumerate(f.signature.output_arg):
      ref = graph_ir.parse_ref(f.ret[out_arg.name], names)
      if ref in affected:
        out_arg.type = affected[ref].dtype
        outputs[k] = affected[ref]
    f.signature.name = new_name
    for key in _DROPPED_FUNCTION_ATTRS:
      if key in f.attr:
        del f.attr[key]
    return f, outputs

  def rewrite_callee(
    self, name: str, args: Dict[int, Value]
  ) -> Tuple[str, Dict[int, Value]]:
    """Rewrites library function `name` (once per arg set); returns new name."""
    key = (name, tuple(sorted(args.items())))
    if key not in self._memo:
      if name not in self._library:
        raise errors.GraphRewriteError(
          f'Function {name!r} is not in the graph library; cannot rewrite it.'
        )
      new_name = f'{name}_{self.suffix}'
      i = 1
      while new_name in self._names:
        i += 1
        new_name = f'{name}_{self.suffix}_{i}'
      self._names.add(new_name)
      f, outputs = self.rewrite(self._library[name], args, new_name)
      self.new_functions.append(f)
      self.renamed.append((name, new_name))
      self._memo[key] = (new_name, outputs)
    return self._memo[key]

  def _propagate(self, f, args):
    """Where the handles go: ({resource Ref: Value}, {node: {pos: Value}})."""
    consumers = graph_ir.Consumers(f)
    names = graph_ir.arg_names(f)
    affected = {}
    per_node = {}
    work = [(graph_ir.Ref(names[i]), v) for i, v in sorted(args.items())]
    while work:
      ref, value = work.pop()
      if ref in affected:
        continue
      affected[ref] = value
      for node, position in consumers.of(ref):
        per_node.setdefault(node.name, {})[position] = value
        for out in self._passed_outputs(node, position):
          work.append((graph_ir.output_ref(node, out, self._library), value))
    return affected, per_node

  def _passed_outputs(self, node, position):
    """Outputs of `node` that carry its resource input `position` onwards."""
    if node.op == rules.RESOURCE_IDENTITY:
      return [0]
    if node.op in rules.WHILE_OPS:
      return [position]
    flow = rules.callees(node, position, self._library)
    if not flow or not flow[0]:
      return []
    targets, arg = flow
    outs = set()
    for _, _, fname in targets:
      outs.update(graph_ir.returned_args(self._library[fname]).get(arg, ()))
    return sorted(outs)


# Node rules: (rewriter, node, {position: Value}, renames, extra_nodes, where).


def _read_to_identity(rw, node, positions, renames, extra_nodes, where):
  del rw, extra_nodes, where
  value = positions[0]
  node.op = 'Identity'
  del node.attr['dtype']
  node.attr['T'].type = value.dtype
  renames[f'{node.name}:value:0'] = f'{node.name}:output:0'


def _retype_identity(rw, node, positions, renames, extra_nodes, where):
  del rw, renames, extra_nodes, where
  node.attr['T'].type = positions[0].dtype


def _gather(rw, node, positions, renames, extra_nodes, where):
  del rw, renames
  if 0 not in positions:
    raise errors.GraphRewriteError(
      f'Node {node.name!r} in {where} uses a weight handle as gather '
      'indices; cannot rewrite it.'
    )
  value = positions[0]
  axis = node_def_pb2.NodeDef(name=f'{node.name}/axis', op='Const')
  axis.attr['dtype'].type = types_pb2.DT_INT32
  axis.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(0, tf.int32))
  extra_nodes.append(axis)
  data = [t for t in node.input if not t.startswith('^')]
  control = [t for t in node.input if t.startswith('^')]
  batch_dims = node.attr['batch_dims'].i if 'batch_dims' in node.attr else 0
  t_indices = node.attr['Tindices'].type
  node.op = 'GatherV2'
  for key in list(node.attr):
    if not key.startswith('_'):
      del node.attr[key]
  node.attr['Tparams'].type = value.dtype
  node.attr['Tindices'].type = t_indices
  node.attr['Taxis'].type = types_pb2.DT_INT32
  node.attr['batch_dims'].i = batch_dims
  del node.input[:]
  node.input.extend(data[:2] + [f'{axis.name}:output:0'] + control)


def _remove_read_only(node, positions):
  attr = node.attr.get('_read_only_resource_inputs')
  if attr is not None:
    kept = [i for i in attr.list.i if i not in positions]
    attr.list.ClearField('i')
    attr.list.i.extend(kept)


def _while(rw, node, positions, renames, extra_nodes, where):
  del renames, extra_nodes
  for attr, index, fname in graph_ir.function_attrs(node, ('cond', 'body')):
    new_name, outputs = rw.rewrite_callee(fname, positions)
    if attr == 'body' and outputs != positions:
      raise errors.GraphRewriteError(
        f'While loop {node.name!r} in {where} does not pass the weight '
        'handle through unchanged; cannot rewrite it.'
      )
    graph_ir.set_called_function(node, attr, index, new_name)
  for i, value in positions.items():
    node.attr['T'].list.type[i] = value.dtype
    if 'output_shapes' in node.attr and node.attr['output_shapes'].list.shape:
      node.attr['output_shapes'].list.shape[i].CopyFrom(value.shape_proto())
  _remove_read_only(node, positions)


def _branches(rw, node, positions, renames, extra_nodes, where):
  del renames, extra_nodes
  if 0 in positions:
    raise errors.GraphRewriteError(
      f'Node {node.name!r} in {where} branches on a weight handle; cannot '
      'rewrite it.'
    )
  args = {p - 1: v for p, v in positions.items()}
  targets, _ = rules.callees(node, 1, rw._library)  # pylint: disable=protected-access
  outputs = None
  for attr, index, fname in targets:
    new_name, outs = rw.rewrite_callee(fname, args)
    if outputs is not None and outs != outputs:
      raise errors.GraphRewriteError(
        f'The branches of {node.name!r} in {where} return the weight handle '
        'at different outputs; cannot rewrite it.'
      )
    outputs = outs
    graph_ir.set_called_function(node, attr, index, new_name)
  for i, value in args.items():
    node.attr['Tin'].list.type[i] = value.dtype
  for k, value in (outputs or {}).items():
    node.attr['Tout'].list.type[k] = value.dtype
    if 'output_shapes' in node.attr and node.attr['output_shapes'].list.shape:
      node.attr['output_shapes'].list.shape[k].CopyFrom(value.shape_proto())
  _remove_read_only(node, positions)


_CONTROL_FLOW_OPS = rules.WHILE_OPS | rules.IF_OPS | rules.CASE_OPS

_NODE_RULES = {
  rules.RESOURCE_READ: _read_to_identity,
  rules.RESOURCE_IDENTITY: _retype_identity,
  'ResourceGather': _gather,
  **dict.fromkeys(rules.WHILE_OPS, _while),
  **dict.fromkeys(rules.IF_OPS | rules.CASE_OPS, _branches),
}
