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
bytes (a 90%-sparse MLP gzips to 18% of the dense model with -0.0, 13% with
+0.0; see bench/export_size.py).

A masked weight is recognised by its graph, checked against its name: a `Mul`
named `<weight>/masked_weight` (the name `rewrite.insert_masks` gives it,
after any scope Grappler's inlining adds) one of whose operands is the
frozen value of the variable `<weight>/mask`.

When the exported function calls the pruned model inside a `tf.cond` branch
or a loop body, the Mul sits in that function and takes the weight and the
mask as arguments. The call then passes the folded constant for both and the
Mul becomes an Identity of one of them (the mask's argument keeps its slot,
unused: removing it would retype the call, its functions and, for a loop, its
outputs):

  before:  If(p, x, k, m, then_branch=T)     T(x, a, b): w = Mul(a, b)
  after:   If(p, x, f, f, then_branch=T')    T'(x, a, b): w = Identity(a)
           with f = Const[kernel * mask]

`unreachable.prune_unreachable` then drops what no output needs (the masks,
and the control edges on their reads), and `check_stripped` proves that
nothing of the pruning is left. `fold_masked_weights` returns a new GraphDef;
its input is not modified.
"""

import collections
import dataclasses
from typing import Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from graph_prune import errors
from graph_prune.passes import graph_ir as fdefs
from graph_prune.passes import insert

MASKED_WEIGHT_SUFFIX = insert.MASKED_WEIGHT_SUFFIX
MASK_SUFFIX = '/mask'  # pruned.PrunedModel names a mask '<weight>/mask'

# Ops that read or write variables; none may be left in a frozen stripped
# graph.
VARIABLE_OPS = frozenset(
  [
    'VarHandleOp',
    'ReadVariableOp',
    'AssignVariableOp',
    'AssignAddVariableOp',
    'AssignSubVariableOp',
    'ResourceGather',
    'ResourceGatherNd',
    'VariableV2',
    'Variable',
    'Assign',
    'AssignAdd',
    'AssignSub',
    'ResourceScatterUpdate',
    'ResourceApplyGradientDescent',
  ]
)

# How a call-like op hands its inputs to the functions it calls: the input
# position of argument 0.
_ARG_OFFSET = {
  'While': 0,
  'StatelessWhile': 0,
  'If': 1,
  'StatelessIf': 1,
  'Case': 1,
  'StatelessCase': 1,
  'PartitionedCall': 0,
  'StatefulPartitionedCall': 0,
}
_LOOP_OPS = frozenset(['While', 'StatelessWhile'])
# Ops whose output 0 is their input 0 unchanged.
_IDENTITY_OPS = frozenset(['Identity', 'Snapshot'])


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
    self.args = fdefs.arg_names(fdef) if fdef is not None else []
    self._arg_index = {a: i for i, a in enumerate(self.args)}

  @property
  def name(self) -> Optional[str]:
    return None if self.fdef is None else self.fdef.signature.name

  def describe(self) -> str:
    return 'the graph' if self.fdef is None else f'function {self.name!r}'

  def arg_index(self, text: str) -> Optional[int]:
    return self._arg_index.get(text) if self.fdef is not None else None

  def node_of(self, text: str):
    return self.by_name.get(text.lstrip('^').split(':')[0])

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
    names = fdefs.output_arg_names(node, {})
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
      if node.op in _IDENTITY_OPS:
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
    for node in self.nodes:
      for i, text in enumerate(node.input):
        if text in mapping:
          node.input[i] = mapping[text]
    if self.fdef is not None:
      for key, text in list(self.fdef.ret.items()):
        if text in mapping:
          self.fdef.ret[key] = mapping[text]

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


@dataclasses.dataclass(frozen=True)
class _Call:
  """A node of `body` calling a function through attr `attr`."""

  body: _Body
  node: object
  attr: str


def _calls(node, library) -> List[Tuple[str, str]]:
  """(attr, function name) pairs of a node, plus ('', op) for a direct call."""
  called = fdefs.called_functions(node)
  if node.op in library:
    called.append(('', node.op))
  return called


def _arg_offset(node, library) -> Optional[int]:
  if node.op in library:
    return 0
  return _ARG_OFFSET.get(node.op)


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
        for attr, fname in _calls(node, self.library):
          self.callers[fname].append(_Call(body, node, attr))
    self.folded: Dict[Tuple[str, str], FoldedWeight] = {}
    self.changed: Set[str] = set()
    self._fed: Dict[Tuple[str, str, int, int], str] = {}

  def run(self):
    candidates = [
      (body, node)
      for body in [self.top, *self.bodies.values()]
      for node in list(body.nodes)
      if node.op == 'Mul' and node.name.endswith(MASKED_WEIGHT_SUFFIX)
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
    base = mul.name[: -len(MASKED_WEIGHT_SUFFIX)]
    if body.fdef is None:
      old_refs = body.refs_to_output(mul, 0) | {f'^{mul.name}'}
      target = body.by_name[value_ref.split(':')[0]]
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
    if kind_a != 'arg' or kind_b != 'arg' or a == b:
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r} in {body.describe()}: its '
        'operands are not two arguments of the function (found '
        f'{_what(kind_a, a)} and {_what(kind_b, b)}).'
      )
    calls = self.callers.get(body.name, [])
    if not calls:
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r}: {body.describe()} is not '
        'called by any node strip can follow.'
      )
    weight = None
    for call in calls:
      offset = _arg_offset(call.node, self.library)
      if offset is None:
        raise errors.FoldError(
          f'Cannot fold masked weight {where!r}: {body.describe()} is '
          f'called by {call.node.op} node {call.node.name!r}, whose inputs '
          'strip cannot map to arguments.'
        )
      key = (call.body.name, call.node.name, a, b)
      if key not in self._fed:
        self._check_call(call, offset, a, b, where)
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
    return body.args[a], weight

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
    base = (
      where[: -len(MASKED_WEIGHT_SUFFIX)]
      if where.endswith(MASKED_WEIGHT_SUFFIX)
      else where + '/folded'
    )
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

  # Checks that feeding the folded value to a call changes nothing else.

  def _check_call(self, call: _Call, offset: int, a: int, b: int, where: str):
    node = call.node
    loop = node.op in _LOOP_OPS
    for attr, fname in _calls(node, self.library):
      callee = self.bodies.get(fname)
      if callee is None:
        continue
      self._check_arg_uses(
        callee, a, b, where, loop_body=loop and attr == 'body'
      )
    if loop:  # the loop's outputs for the two variables must be unused
      consumers = call.body.data_consumers()
      for index in (a + offset, b + offset):
        for ref in call.body.refs_to_output(node, index):
          for user, _ in consumers.get(ref, ()):
            raise errors.FoldError(
              f'Cannot fold masked weight {where!r}: {user.op} node '
              f'{user.name!r} reads output {index} of loop '
              f'{node.name!r}, which carries its mask.'
            )

  def _check_arg_uses(
    self, body: _Body, a: int, b: int, where: str, loop_body: bool
  ):
    """Every use of arguments a and b must be the masked Mul (or a pass)."""
    consumers = body.data_consumers()
    pair = {a, b}
    for k in (a, b):
      frontier, seen = [body.args[k]], set()
      while frontier:
        ref = frontier.pop()
        if ref in seen:
          continue
        seen.add(ref)
        for user, _ in consumers.get(ref, ()):
          if user.op in _IDENTITY_OPS:
            frontier.append(body.output_ref(user))
          elif user.op == 'Mul' and user.name.endswith(MASKED_WEIGHT_SUFFIX):
            operands = {
              _key(*body.resolve(t))
              for t in user.input
              if not t.startswith('^')
            }
            if operands != {('arg', a), ('arg', b)}:
              raise errors.FoldError(
                f'Cannot fold masked weight {where!r}: {user.name!r} in '
                f'{body.describe()} multiplies other values.'
              )
          elif _arg_offset(user, self.library) is not None:
            self._check_nested_call(body, user, pair, where)
          else:
            raise errors.FoldError(
              f'Cannot fold masked weight {where!r}: {user.op} node '
              f'{user.name!r} in {body.describe()} reads the weight or '
              'the mask unmasked.'
            )
        for key, text in body.fdef.ret.items():
          if text == ref:
            index = [o.name for o in body.fdef.signature.output_arg].index(key)
            if not (loop_body and index == k):
              raise errors.FoldError(
                f'Cannot fold masked weight {where!r}: {body.describe()} '
                f'returns the weight or the mask as output {index}.'
              )

  def _check_nested_call(self, body: _Body, node, pair: Set[int], where: str):
    offset = _arg_offset(node, self.library)
    positions = [
      p
      for p, t in enumerate(node.input)
      if not t.startswith('^')
      and body.resolve(t)[0] == 'arg'
      and body.resolve(t)[1] in pair
    ]
    if len(positions) != 2 or positions[0] < offset:
      raise errors.FoldError(
        f'Cannot fold masked weight {where!r}: {node.op} node '
        f'{node.name!r} in {body.describe()} does not take both the weight '
        'and the mask.'
      )
    self._check_call(
      _Call(body, node, ''),
      offset,
      positions[0] - offset,
      positions[1] - offset,
      where,
    )


def _key(kind, node):
  """A hashable form of `_Body.resolve`'s result."""
  return (kind, node if kind == 'arg' else getattr(node, 'name', None))


def _what(kind, node) -> str:
  if kind == 'arg':
    return f'argument {node}'
  if node is None:
    return 'an unknown tensor'
  return f'{node.op} node {node.name!r}'


def _check_name(name: str, weight: str, body: _Body):
  expected = weight + MASKED_WEIGHT_SUFFIX
  if name != expected and not name.endswith('/' + expected):
    raise errors.FoldError(
      f'Node {name!r} in {body.describe()} multiplies by the mask of '
      f'{weight!r} but is not named {expected!r}; the graph was not made by '
      'graph_prune.apply_pruning.'
    )


def fold_masked_weights(
  graph_def, mask_consts: Mapping[str, str], suffix: str
) -> Tuple[graph_pb2.GraphDef, Tuple[FoldedWeight, ...]]:
  """Replaces every masked weight of a frozen graph by one constant.

  Args:
    graph_def: a frozen GraphDef (with its function library); not modified.
    mask_consts: maps the name of each top-level Const holding a mask's
      frozen value to the name of the weight it masks.
    suffix: appended to the names of the library functions the pass
      changes, so that they cannot collide with functions TensorFlow already
      knows under their old names.

  Returns:
    (new GraphDef, the folded weights in graph order). The masks' Const
    nodes are left in place, unused by any masked weight;
    `unreachable.prune_unreachable` drops them.

  Raises:
    FoldError: a masked weight cannot be folded (the message names the node
      and why).
  """
  graph_def = _copy(graph_def)
  folder = _Folder(graph_def, mask_consts)
  folder.run()
  renames = {name: f'{name}_{suffix}' for name in sorted(folder.changed)}
  if renames:
    for fdef in graph_def.library.function:
      if fdef.signature.name in renames:
        fdef.signature.name = renames[fdef.signature.name]
    _rename_function_uses(graph_def, renames)
  return graph_def, tuple(folder.folded.values())


def _rename_function_uses(graph_def, renames: Mapping[str, str]):
  bodies = [graph_def.node] + [f.node_def for f in graph_def.library.function]
  for nodes in bodies:
    for node in nodes:
      if node.op in renames:
        node.op = renames[node.op]
      for value in node.attr.values():
        if value.HasField('func') and value.func.name in renames:
          value.func.name = renames[value.func.name]
        elif value.HasField('list'):
          for f in value.list.func:
            if f.name in renames:
              f.name = renames[f.name]


def check_stripped(
  graph_def, pruning_consts: Mapping[str, str], what: str
) -> None:
  """Raises unless nothing of the pruning is left in `graph_def`.

  Checks the graph, not names alone: no node anywhere (graph or function
  library) reads or writes a variable, no node is left of the frozen value
  of a mask, threshold or step variable, and no `masked_weight` Mul is left.

  Args:
    graph_def: the stripped GraphDef.
    pruning_consts: top-level Const node name -> pruning variable name.
    what: what the graph is, for messages (e.g. "signature 'serving_default'").

  Raises:
    FoldError: naming the first offending node.
  """
  bodies = [('the graph', graph_def.node)] + [
    (f'function {f.signature.name!r}', f.node_def)
    for f in graph_def.library.function
  ]
  for where, nodes in bodies:
    for node in nodes:
      if node.op in VARIABLE_OPS:
        raise errors.FoldError(
          f'The stripped {what} still has {node.op} node {node.name!r} in '
          f'{where}.'
        )
      if node.op == 'Mul' and node.name.endswith(MASKED_WEIGHT_SUFFIX):
        raise errors.FoldError(
          f'The stripped {what} still multiplies by a mask in {where} '
          f'(node {node.name!r}).'
        )
  names = {n.name for n in graph_def.node}
  for const, variable in sorted(pruning_consts.items()):
    if const in names:
      users = [
        n.name
        for n in graph_def.node
        if any(t.lstrip('^').split(':')[0] == const for t in n.input)
      ]
      raise errors.FoldError(
        f'The stripped {what} still reads pruning variable {variable!r} '
        f'(through {", ".join(users) or const!r}); export only functions '
        'that compute the model, not its pruning state.'
      )


def _copy(graph_def):
  copy = graph_pb2.GraphDef()
  copy.CopyFrom(graph_def)
  return copy
