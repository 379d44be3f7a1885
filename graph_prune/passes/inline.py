"""Inlining a function call node into the FunctionDef that contains it.

Why inline: a `PartitionedCall`/`StatefulPartitionedCall` whose callee is
rewritten gets its Python gradient from the `_gradient_op_type` the original
trace registered, which differentiates the *original* callee; without it TF
falls back to `SymbolicGradient`, which cannot differentiate resource reads,
loops or the tf_keras RNN functions tagged `api_implements` (a copy tagged so
could also be swapped back for the unmasked cuDNN/standard version by
Grappler). Inlining the callee removes the call and with it both problems,
and is what Grappler does before running the function anyway.

Before/after (`y = call(x)`, the callee computes `r = Relu(a)`):
  caller:  c = StatefulPartitionedCall(x, f=callee);  y = Neg(c:output:0)
  after:   c/r = Relu(x);  y = Neg(c/r:activations:0)

Every function here returns a new FunctionDef (or `graph_ir.FunctionGraph`)
and leaves its input as it was.
"""

import dataclasses
from typing import Tuple

from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import node_def_pb2

from graph_prune import errors
from graph_prune.passes import driver
from graph_prune.passes import graph_ir
from graph_prune.passes import rules


@dataclasses.dataclass(frozen=True)
class Inlined:
  """What an inlining pass did.

  Attributes:
    calls: `(call node name, callee name)` of each call inlined, in the
      order inlined (a call inlined from a callee's body is named as it was
      in the caller, under the prefix of the call that brought it in).
  """

  calls: Tuple[Tuple[str, str], ...] = ()


def inline_call(
  fdef, call_name: str, library: graph_ir.Library
) -> driver.PassResult[function_pb2.FunctionDef, Inlined]:
  """Replaces node `call_name` of `fdef` by the body of its callee.

  Args:
    fdef: the caller FunctionDef; not modified.
    call_name: name of a PartitionedCall/StatefulPartitionedCall (or a node
      whose op type is a library function) in `fdef`.
    library: function name -> FunctionDef; not modified.

  Returns:
    A `PassResult`: a new FunctionDef and an `Inlined` naming the call.

  Raises:
    GraphRewriteError: the callee is missing from the library, or the call
      passes it the wrong number of inputs.
  """
  new = _copy(fdef)
  callee = _inline_into(new, call_name, library)
  return driver.PassResult(new, Inlined(((call_name, callee),)), changed=True)


def inline_calls(
  fdef, library: graph_ir.Library
) -> driver.PassResult[function_pb2.FunctionDef, Inlined]:
  """Inlines every call of `fdef`, and the calls that brings in, until none.

  Loops and branches (`While`, `If`, `Case`) stay; calls inside their
  bodies are not inlined (their functions keep their names).

  Args:
    fdef: the caller FunctionDef; not modified.
    library: function name -> FunctionDef; not modified.

  Returns:
    A `PassResult`: the call-free FunctionDef (`fdef` itself when it has no
    call) and an `Inlined` listing each call.

  Raises:
    GraphRewriteError: see `inline_call`.
  """
  new, done = None, []
  while True:
    body = fdef if new is None else new
    calls = [n.name for n in body.node_def if rules.is_call(n, library)]
    if not calls:
      break
    if new is None:
      new = _copy(fdef)  # one copy, edited in place call after call
    for name in calls:
      done.append((name, _inline_into(new, name, library)))
  if new is None:
    return driver.PassResult(fdef, Inlined(), changed=False)
  return driver.PassResult(new, Inlined(tuple(done)), changed=True)


def inline_top(
  graph: graph_ir.FunctionGraph,
) -> driver.PassResult[graph_ir.FunctionGraph, Inlined]:
  """`inline_calls` on `graph.top`; the library is shared, unchanged.

  Functions of the library are not edited: one edited under its own name
  would clash with the original TensorFlow already knows (loop and branch
  functions are inlined into when they are copied under new names, see
  bind_weights.py).
  """
  result = inline_calls(graph.top, graph.library)
  return driver.PassResult(
    graph_ir.FunctionGraph(result.graph, graph.library),
    result.report,
    result.changed,
  )


def _copy(fdef) -> function_pb2.FunctionDef:
  new = function_pb2.FunctionDef()
  new.CopyFrom(fdef)
  return new


def _inline_into(fdef, call_name: str, library: graph_ir.Library) -> str:
  """Inlines node `call_name` into `fdef`, a copy this module owns, in place.

  Returns:
    The callee's name.
  """
  nodes = list(fdef.node_def)
  call = next((n for n in nodes if n.name == call_name), None)
  if call is None:
    raise errors.GraphRewriteError(
      f'Node {call_name!r} is not in function {fdef.signature.name!r}; '
      'cannot inline it.'
    )
  callee_name = graph_ir.call_target(call, library)
  if callee_name not in library:
    raise errors.GraphRewriteError(
      f'Function {callee_name!r} called by node {call_name!r} is not in the '
      'graph library; cannot inline it.'
    )
  callee = library[callee_name]
  names_in_caller = {n.name for n in nodes} | set(graph_ir.arg_names(fdef))
  prefix = _unique_prefix(call_name, names_in_caller)
  data_inputs = [t for t in call.input if not t.startswith('^')]
  control_inputs = [t for t in call.input if t.startswith('^')]
  callee_args = graph_ir.arg_names(callee)
  if len(data_inputs) != len(callee_args):
    raise errors.GraphRewriteError(
      f'Node {call_name!r} passes {len(data_inputs)} inputs to '
      f'{callee_name!r}, which takes {len(callee_args)}; cannot inline it.'
    )
  mapped = _input_mapper(dict(zip(callee_args, data_inputs)), prefix)
  new_nodes = _copied_body(callee, prefix, mapped, control_inputs)
  done = _done_node(callee, prefix)
  new_nodes.append(done)
  renames = {'^' + call_name: '^' + done.name}
  out_names = [a.name for a in callee.signature.output_arg]
  for k, out_name in enumerate(out_names):
    target = mapped(callee.ret[out_name])
    if call.op in library:
      renames[f'{call_name}:{out_name}:0'] = target
    else:
      renames[f'{call_name}:output:{k}'] = target

  kept = [n for n in nodes if n.name != call_name]
  del fdef.node_def[:]
  fdef.node_def.extend(kept + new_nodes)
  graph_ir.rename_refs(fdef, renames)
  for key, value in list(fdef.control_ret.items()):
    if value == call_name:
      fdef.control_ret[key] = done.name
  return callee_name


def _input_mapper(arg_value, prefix):
  """Maps a callee input name to the caller's name for the same tensor."""

  def mapped(text):
    if text.startswith('^'):
      source = text[1:]
      if source in arg_value:
        return '^' + graph_ir.node_name(arg_value[source])
      return '^' + prefix + source
    ref = graph_ir.parse_ref(text, arg_value)
    if ref.arg is None:
      return arg_value[ref.node]
    return f'{prefix}{ref.node}:{ref.arg}:{ref.index}'

  return mapped


def _copied_body(callee, prefix, mapped, control_inputs):
  """The callee's nodes, renamed under `prefix`, reading the caller's tensors.

  They wait for the call's control inputs through one NoOp gate.
  """
  new_nodes = []
  gate = None
  if control_inputs:
    gate = node_def_pb2.NodeDef(name=prefix + '_inlined_inputs', op='NoOp')
    gate.input.extend(control_inputs)
    new_nodes.append(gate)
  for node in callee.node_def:
    new = node_def_pb2.NodeDef()
    new.CopyFrom(node)
    new.name = prefix + node.name
    del new.input[:]
    data = [mapped(t) for t in node.input if not t.startswith('^')]
    control = [mapped(t) for t in node.input if t.startswith('^')]
    if gate is not None:
      control.append('^' + gate.name)
    new.input.extend(data + list(dict.fromkeys(control)))
    new_nodes.append(new)
  return new_nodes


def _done_node(callee, prefix):
  """A NoOp after the callee's side effects and outputs.

  Everything that waited on the call waits on it instead.
  """
  done = node_def_pb2.NodeDef(name=prefix + '_inlined_outputs', op='NoOp')
  waits = [prefix + n for n in callee.control_ret.values()]
  for text in callee.ret.values():
    ref = graph_ir.parse_ref(text, graph_ir.arg_names(callee))
    if ref.arg is not None:
      waits.append(prefix + ref.node)
  done.input.extend('^' + w for w in dict.fromkeys(waits))
  return done


def _unique_prefix(call_name, taken):
  prefix = call_name + '/'
  i = 0
  while any(t.startswith(prefix) for t in taken):
    i += 1
    prefix = f'{call_name}_inlined_{i}/'
  return prefix
