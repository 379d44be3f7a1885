"""Folding the masked weights of a pruned graph into fixed values.

A pruned graph computes each masked weight at run time.
`fold_masked_weights` replaces it by one value. In a graph that keeps its
variables (a traced function's graph: each captured variable's handle a
top-level Placeholder), that value is read from a new Placeholder, the
handle of a new variable that the caller fills with `kernel * mask`
(`stripped_model.strip_function`); no weight value enters the GraphDef:

  before:  k = Placeholder (kernel's handle)   m = Placeholder (mask's)
           <scope>/<weight>/masked_weight = Mul(Read(k), Read(m))
           y = MatMul(x, <scope>/<weight>/masked_weight)
  after:   <scope>/<weight> = Placeholder (the folded variable's handle)
           y = MatMul(x, Read(<scope>/<weight>))

Top-level reads of the weight and the mask that no data edge needs any more
go too, with the control edges on them (a traced function orders its
variable reads before its outputs). In a frozen graph (every variable a
Const, as for the frozen GraphDef and shrink) the value is one constant:

  before:  k = Const[kernel]    m = Const[mask]
           <scope>/<weight>/masked_weight = Mul(Identity(k), Identity(m))
           y = MatMul(x, <scope>/<weight>/masked_weight)
  after:   <scope>/<weight> = Const[kernel * mask]
           y = MatMul(x, <scope>/<weight>)

The new top-level nodes (the Const or the handle's Placeholder and its
read), their records and the +0.0 in pruned positions are
`folded_values`'s; this module finds the masked weights and routes the
folded values to them.

A masked weight is recognised by its graph, checked against its name: a `Mul`
named `<weight>/masked_weight` (`graph_ir.masked_weight_name`, the name
`insert.insert_masks` gives it, after any scope Grappler's inlining adds)
one of whose operands is the frozen value of the variable `<weight>/mask`.

When the exported function calls the pruned model (a call, a `tf.cond`
branch or a loop body), the Mul sits in that function and takes the weight
and the mask (or their handles) as arguments. The call then passes the
folded value (or handle) for both and the Mul becomes an Identity of one of
them (the mask's argument keeps its slot,
unused: removing it would retype the call, its functions and, for a loop, its
outputs):

  before:  If(p, x, k, m, then_branch=T)     T(x, a, b): w = Mul(a, b)
  after:   If(p, x, f, f, then_branch=T')    T'(x, a, b): w = Identity(a)
           with f = Const[kernel * mask]

`drop_unused.drop_unused` then drops what no output needs (the masks,
and the control edges on their reads), and `check_stripped` proves that
nothing of the pruning is left (`fold_checks`). `fold_masked_weights` returns
a `PassResult` with a new GraphDef; its input is not modified.
"""

import collections
from typing import Any, Dict, Mapping, Set, Tuple

from tensorflow.core.framework import graph_pb2

from graph_prune import errors
from graph_prune.passes import driver
from graph_prune.passes import fold_checks
from graph_prune.passes import folded_values
from graph_prune.passes import function_body
from graph_prune.passes import graph_ir
from graph_prune.passes import rules

# Moved to fold_checks; importable from here as before.
VARIABLE_OPS = fold_checks.VARIABLE_OPS
check_stripped = fold_checks.check_stripped
# Moved to folded_values; importable from here as before.
FoldedWeight = folded_values.FoldedWeight
FoldedHandle = folded_values.FoldedHandle
_READ = folded_values._READ


class _Folder:
  """One run of `fold_masked_weights` over a copy of the graph."""

  def __init__(self, graph_def, mask_consts: Mapping[str, str]):
    self.graph_def = graph_def
    self.mask_consts = mask_consts
    self.top = function_body.Body(graph_def.node)
    self.library = {f.signature.name: f for f in graph_def.library.function}
    self.bodies = {
      name: function_body.Body(f.node_def, f)
      for name, f in self.library.items()
    }
    self.callers = collections.defaultdict(list)
    for body in [self.top, *self.bodies.values()]:
      for node in body.nodes:
        for attr, fname in graph_ir.called_functions(node, self.library):
          self.callers[fname].append(fold_checks.Call(body, node, attr))
    self.values = folded_values.FoldedValues(graph_def, self.top)
    self.changed: Set[str] = set()
    self._fed: Dict[Tuple[str, str, int, int], str] = {}
    self._checker = fold_checks.CallChecker(self.bodies, self.library)

  def run(self):
    candidates = [
      (body, node)
      for body in [self.top, *self.bodies.values()]
      for node in list(body.nodes)
      if graph_ir.is_masked_weight(node)
    ]
    for body, node in candidates:
      self._fold(body, node)
    self.values.drop_dead_reads()

  # The Mul of a masked weight.

  def _fold(self, body: function_body.Body, mul):
    data = [t for t in mul.input if not t.startswith('^')]
    if len(data) != 2:
      raise errors.FoldError(
        f'Node {mul.name!r} in {body.describe()} is a Mul with '
        f'{len(data)} data inputs; strip expects Mul(weight, mask).'
      )
    value_ref, weight = self._feed(body, data[0], data[1], mul.name)
    _check_name(mul.name, weight, body)
    base = graph_ir.weight_of_masked(mul.name)
    if body.fdef is None:
      if self.top.by_name[graph_ir.node_name(value_ref)].op == 'Placeholder':
        value_ref = self.values.read(value_ref, mul)
      old_refs = body.refs_to_output(mul, 0) | {f'^{mul.name}'}
      target = body.by_name[graph_ir.node_name(value_ref)]
      body.rename_refs(
        {
          r: (f'^{target.name}' if r.startswith('^') else value_ref)
          for r in old_refs
        }
      )
      body.remove(mul)
      return
    # In a function: argument a now carries the folded value (or its
    # variable's handle, which the operand reads).
    operand = next(t for t in data if body.resolve(t) == ('arg', value_ref))
    identity = type(mul)()
    identity.name = body.unique_name(base)
    identity.op = 'Identity'
    identity.input.append(operand)
    identity.input.extend(t for t in mul.input if t.startswith('^'))
    identity.attr['T'].CopyFrom(mul.attr['T'])
    body.nodes.append(identity)
    body.add(identity)
    body.rename_refs(
      {
        f'{mul.name}:z:0': f'{identity.name}:output:0',
        f'^{mul.name}': f'^{identity.name}',
      }
    )
    body.remove(mul)
    self.changed.add(body.name)

  def _feed(
    self, body: function_body.Body, text_a: str, text_b: str, where: str
  ) -> Tuple[Any, str]:
    """Makes a reference in `body` to the folded value of (a, b).

    Returns:
      (reference, weight name): at the top level the name of the folded
      Const or of the folded variable's handle Placeholder; in a function
      the index of the argument that now carries it.
    """
    kind_a, a = body.resolve(text_a)
    kind_b, b = body.resolve(text_b)
    if body.fdef is None:
      return self._feed_top(kind_a, a, kind_b, b, where)
    if kind_a != 'arg' or kind_b != 'arg' or a == b:
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r} in {body.describe()}: its '
        'operands are not two arguments of the function (found '
        f'{_what(kind_a, a)} and {_what(kind_b, b)}).'
      )
    return a, self._feed_callers(body, a, b, where)

  def _feed_top(self, kind_a, a, kind_b, b, where) -> Tuple[str, str]:
    """At the top level: the folded value of weight a and mask b.

    Both frozen (Consts): a new Const. Both captured variables
    (Placeholders of their handles): a new Placeholder for the handle of
    the variable that will hold the folded value.
    """
    kinds = {kind_a, kind_b}
    if kinds not in ({'const'}, {'placeholder'}):
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r}: its operands are not both '
        'frozen or both captured variables (found '
        f'{_what(kind_a, a)} and {_what(kind_b, b)}).'
      )
    if b.name in self.mask_consts:
      weight_node, mask_node = a, b
    elif a.name in self.mask_consts:
      weight_node, mask_node = b, a
    else:
      raise errors.FoldError(
        f'Cannot fold {where!r}: neither of its operands ({a.name!r}, '
        f'{b.name!r}) is a mask variable.'
      )
    weight = self.mask_consts[mask_node.name]
    if kinds == {'placeholder'}:
      return self.values.handle(weight_node, mask_node, weight, where), weight
    return self.values.const(weight_node, mask_node, weight, where), weight

  def _feed_callers(
    self, body: function_body.Body, a: int, b: int, where: str
  ) -> str:
    """Makes every caller of `body` pass the folded value as args a and b.

    Returns:
      the weight's name.
    """
    calls = self.callers.get(body.name, [])
    if not calls:
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r}: {body.describe()} is not '
        'called by any node strip can follow.'
      )
    weight = None
    for call in calls:
      offset = rules.arg_offset(call.node, self.library)
      if offset is None:
        raise errors.FoldError(
          f'Cannot fold masked weight {where!r}: {body.describe()} is '
          f'called by {call.node.op} node {call.node.name!r}, whose inputs '
          'strip cannot map to arguments.'
        )
      key = (call.body.name, call.node.name, a, b)
      if key not in self._fed:
        self._checker.check_call(call, offset, a, b, where)
        ref, weight = self._feed(
          call.body,
          call.node.input[a + offset],
          call.node.input[b + offset],
          where,
        )
        if call.body.fdef is not None:
          ref = call.body.args[ref]
          self.changed.add(call.body.name)
        call.node.input[a + offset] = ref
        call.node.input[b + offset] = ref
        self._fed[key] = self._fed[(key[0], key[1], b, a)] = weight
      weight = self._fed[key]
    return weight


def _what(kind, node) -> str:
  if kind == 'arg':
    return f'argument {node}'
  if node is None:
    return 'an unknown tensor'
  return f'{node.op} node {node.name!r}'


def _check_name(name: str, weight: str, body: function_body.Body):
  expected = graph_ir.masked_weight_name(weight)
  if name != expected and not name.endswith('/' + expected):
    raise errors.FoldError(
      f'Node {name!r} in {body.describe()} multiplies by the mask of '
      f'{weight!r} but is not named {expected!r}; the graph was not made by '
      'graph_prune.apply_pruning.'
    )


def fold_masked_weights(
  graph_def, mask_consts: Mapping[str, str], suffix: str
) -> driver.PassResult[graph_pb2.GraphDef, Tuple[Any, ...]]:
  """Replaces every masked weight by its folded value.

  In a frozen graph the folded value is a new Const; in a graph that keeps
  its variables (captured handles as top-level Placeholders) it is read
  from a new Placeholder, the handle of a variable the caller makes to hold
  `weight * mask` (see the module docstring).

  Args:
    graph_def: a GraphDef (with its function library); not modified.
    mask_consts: maps the name of each top-level Const holding a mask's
      frozen value, or of the Placeholder of a mask's captured handle, to
      the name of the weight it masks.
    suffix: appended to the names of the library functions the pass
      changes, so that they cannot collide with functions TensorFlow already
      knows under their old names.

  Returns:
    A `PassResult`: the new GraphDef, and as report the `FoldedWeight`s
    (frozen) or `FoldedHandle`s (variables) in graph order. The masks'
    nodes are left in place, unused by any masked weight;
    `drop_unused.drop_unused` drops them.

  Raises:
    FoldError: a masked weight cannot be folded (the message names the node
      and why).
  """
  graph_def = graph_ir.copy_graph_def(graph_def)
  folder = _Folder(graph_def, mask_consts)
  folder.run()
  renames = {name: f'{name}_{suffix}' for name in sorted(folder.changed)}
  if renames:
    for fdef in graph_def.library.function:
      if fdef.signature.name in renames:
        fdef.signature.name = renames[fdef.signature.name]
    _rename_function_uses(graph_def, renames)
  folded = folder.values.report()
  return driver.PassResult(graph_def, folded, changed=bool(folded))


def _rename_function_uses(graph_def, renames: Mapping[str, str]):
  bodies = [graph_def.node] + [f.node_def for f in graph_def.library.function]
  for nodes in bodies:
    for node in nodes:
      if node.op in renames:
        node.op = renames[node.op]
      for attr, index, name in graph_ir.function_attrs(node):
        if name in renames:
          graph_ir.set_called_function(node, attr, index, renames[name])
