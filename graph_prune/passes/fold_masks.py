"""Folding the masked weights of a frozen graph into constants.

A frozen pruned graph (every variable a Const, see
`_tf_internal.freeze_function`) still computes each masked weight at run
time. `fold_masked_weights` replaces it by one constant:

  before:  k = Const[kernel]    m = Const[mask]
           <scope>/<weight>/masked_weight = Mul(Identity(k), Identity(m))
           y = MatMul(x, <scope>/<weight>/masked_weight)
  after:   <scope>/<weight> = Const[kernel * mask]
           y = MatMul(x, <scope>/<weight>)

Pruned positions hold +0.0: `kernel * mask` is -0.0 where a negative weight
is masked, which compares equal to +0.0 (so outputs compare equal; only the
sign of an exactly-zero result can differ) but breaks gzip's runs of zero
bytes, so the export compresses worse (bench/export_size.py; measured:
BUILD_NOTES, 'Measurements behind the code').

A masked weight is recognised by its graph, checked against its name: a `Mul`
named `<weight>/masked_weight` (`graph_ir.masked_weight_name`, the name
`insert.insert_masks` gives it, after any scope Grappler's inlining adds)
one of whose operands is the frozen value of the variable `<weight>/mask`.

When the exported function calls the pruned model inside a `tf.cond` branch
or a loop body, the Mul sits in that function and takes the weight and the
mask as arguments. The call then passes the folded constant for both and the
Mul becomes an Identity of one of them (the mask's argument keeps its slot,
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
import dataclasses
from typing import Dict, Mapping, Optional, Set, Tuple

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.passes import fold_checks
from graph_prune.passes import graph_ir
from graph_prune.passes import rules

# Moved to fold_checks; importable from here as before.
VARIABLE_OPS = fold_checks.VARIABLE_OPS
check_stripped = fold_checks.check_stripped


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


class _Body:
  """The nodes of the top-level graph (`fdef` None) or of one function."""

  def __init__(self, nodes, fdef=None):
    self.nodes = nodes
    self.fdef = fdef
    self.by_name = {n.name: n for n in nodes}
    self.args = graph_ir.arg_names(fdef) if fdef is not None else []
    self._arg_index = {a: i for i, a in enumerate(self.args)}

  @property
  def name(self) -> Optional[str]:
    return None if self.fdef is None else self.fdef.signature.name

  def describe(self) -> str:
    return 'the graph' if self.fdef is None else f'function {self.name!r}'

  def arg_index(self, text: str) -> Optional[int]:
    return self._arg_index.get(text) if self.fdef is not None else None

  def node_of(self, text: str):
    return self.by_name.get(graph_ir.node_name(text))

  def output_ref(self, node, index: int = 0) -> str:
    """The name of a node's output `index` (for Identity/Const/Mul)."""
    if self.fdef is None:
      return node.name if index == 0 else f'{node.name}:{index}'
    out = 'z' if node.op == 'Mul' else 'output'
    return f'{node.name}:{out}:{index}'

  def refs_to_output(self, node, index: int) -> Set[str]:
    """Every spelling of a data reference to output `index` of `node`."""
    if self.fdef is None:
      return {f'{node.name}:{index}'} | ({node.name} if index == 0 else set())
    names = graph_ir.output_arg_names(node, {})
    name, i = names[index]
    return {f'{node.name}:{name}:{i}'}

  def resolve(self, text: str):
    """Follows Identity ops back from a data input.

    Returns:
      ('const', node), ('arg', index) or ('other', node).
    """
    while True:
      index = self.arg_index(text)
      if index is not None:
        return 'arg', index
      node = self.node_of(text)
      if node is None:
        return 'other', None
      if node.op in rules.IDENTITY_OPS:
        text = node.input[0]
        continue
      return ('const' if node.op == 'Const' else 'other'), node

  def add(self, node):
    self.by_name[node.name] = node

  def remove(self, node):
    del self.by_name[node.name]
    for i, n in enumerate(self.nodes):
      if n is node:
        del self.nodes[i]
        return

  def rename_refs(self, mapping: Mapping[str, str]):
    if self.fdef is None:
      graph_ir.rename_inputs(self.nodes, mapping)
    else:
      graph_ir.rename_refs(self.fdef, mapping)

  def data_consumers(self):
    """Maps each data reference to the [(node, input position)] reading it."""
    consumers = collections.defaultdict(list)
    for node in self.nodes:
      for position, text in enumerate(node.input):
        if not text.startswith('^'):
          consumers[text].append((node, position))
    return consumers

  def unique_name(self, base: str) -> str:
    name, i = base, 0
    while name in self.by_name or name in self._arg_index:
      i += 1
      name = f'{base}_{i}'
    return name


class _Folder:
  """One run of `fold_masked_weights` over a copy of the graph."""

  def __init__(self, graph_def, mask_consts: Mapping[str, str]):
    self.graph_def = graph_def
    self.mask_consts = mask_consts
    self.top = _Body(graph_def.node)
    self.library = {f.signature.name: f for f in graph_def.library.function}
    self.bodies = {
      name: _Body(f.node_def, f) for name, f in self.library.items()
    }
    self.callers = collections.defaultdict(list)
    for body in [self.top, *self.bodies.values()]:
      for node in body.nodes:
        for attr, fname in graph_ir.called_functions(node, self.library):
          self.callers[fname].append(fold_checks.Call(body, node, attr))
    self.folded: Dict[Tuple[str, str], FoldedWeight] = {}
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

  # The Mul of a masked weight.

  def _fold(self, body: _Body, mul):
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
    # In a function: the argument now carries the folded value.
    identity = type(mul)()
    identity.name = body.unique_name(base)
    identity.op = 'Identity'
    identity.input.append(value_ref)
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
    self, body: _Body, text_a: str, text_b: str, where: str
  ) -> Tuple[str, str]:
    """Makes a reference in `body` to the folded value of (a, b).

    Returns:
      (reference, weight name).
    """
    kind_a, a = body.resolve(text_a)
    kind_b, b = body.resolve(text_b)
    if body.fdef is None:
      return self._feed_consts(kind_a, a, kind_b, b, where)
    if kind_a != 'arg' or kind_b != 'arg' or a == b:
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r} in {body.describe()}: its '
        'operands are not two arguments of the function (found '
        f'{_what(kind_a, a)} and {_what(kind_b, b)}).'
      )
    return body.args[a], self._feed_callers(body, a, b, where)

  def _feed_consts(self, kind_a, a, kind_b, b, where) -> Tuple[str, str]:
    """At the top level: the folded Const of frozen weight a and mask b."""
    if kind_a != 'const' or kind_b != 'const':
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r}: its operands are not both '
        'frozen variables (found '
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
    return self._folded_const(weight_node, mask_node, weight, where), weight

  def _feed_callers(self, body: _Body, a: int, b: int, where: str) -> str:
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
        call.node.input[a + offset] = ref
        call.node.input[b + offset] = ref
        self._fed[key] = self._fed[(key[0], key[1], b, a)] = weight
        if call.body.fdef is not None:
          self.changed.add(call.body.name)
      weight = self._fed[key]
    return weight

  def _folded_const(
    self, weight_node, mask_node, weight: str, where: str
  ) -> str:
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


def _what(kind, node) -> str:
  if kind == 'arg':
    return f'argument {node}'
  if node is None:
    return 'an unknown tensor'
  return f'{node.op} node {node.name!r}'


def _check_name(name: str, weight: str, body: _Body):
  expected = graph_ir.masked_weight_name(weight)
  if name != expected and not name.endswith('/' + expected):
    raise errors.FoldError(
      f'Node {name!r} in {body.describe()} multiplies by the mask of '
      f'{weight!r} but is not named {expected!r}; the graph was not made by '
      'graph_prune.apply_pruning.'
    )


def fold_masked_weights(
  graph_def, mask_consts: Mapping[str, str], suffix: str
) -> graph_ir.PassResult:
  """Replaces every masked weight of a frozen graph by one constant.

  Args:
    graph_def: a frozen GraphDef (with its function library); not modified.
    mask_consts: maps the name of each top-level Const holding a mask's
      frozen value to the name of the weight it masks.
    suffix: appended to the names of the library functions the pass
      changes, so that they cannot collide with functions TensorFlow already
      knows under their old names.

  Returns:
    A `PassResult`: the new GraphDef, and as report the `FoldedWeight`s in
    graph order. The masks' Const nodes are left in place, unused by any
    masked weight; `drop_unused.drop_unused` drops them.

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
  folded = tuple(folder.folded.values())
  return graph_ir.PassResult(graph_def, folded, changed=bool(folded))


def _rename_function_uses(graph_def, renames: Mapping[str, str]):
  bodies = [graph_def.node] + [f.node_def for f in graph_def.library.function]
  for nodes in bodies:
    for node in nodes:
      if node.op in renames:
        node.op = renames[node.op]
      for attr, index, name in graph_ir.function_attrs(node):
        if name in renames:
          graph_ir.set_called_function(node, attr, index, renames[name])
