"""The top-level graph or one library function, as `fold_masks` edits it.

A `Body` indexes the nodes of the graph (`fdef` None) or of one FunctionDef
by name, spells references to node outputs in that body's convention
(`node:index` in a GraphDef, `node:output_arg:index` in a FunctionDef),
follows a data input back through identities and variable reads to what
it comes from (`resolve`), and edits the nodes in place (the fold pass owns
the copy it edits).
"""

import collections
from typing import Mapping, Optional, Set

from graph_prune.passes import graph_ir
from graph_prune.passes import rules

READ = 'ReadVariableOp'
# A function's node output names (FunctionDef references) by op type.
_OUTPUT_ARGS = {'Mul': 'z', READ: 'value'}
# Top-level leaves a masked weight's operands resolve to, by op type.
_LEAF_KINDS = {'Const': 'const', 'Placeholder': 'placeholder'}


class Body:
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
    """The name of a node's output `index` (Identity, Const, Mul, reads)."""
    if self.fdef is None:
      return node.name if index == 0 else f'{node.name}:{index}'
    out = _OUTPUT_ARGS.get(node.op, 'output')
    return f'{node.name}:{out}:{index}'

  def refs_to_output(self, node, index: int) -> Set[str]:
    """Every spelling of a data reference to output `index` of `node`."""
    if self.fdef is None:
      return {f'{node.name}:{index}'} | ({node.name} if index == 0 else set())
    names = graph_ir.output_arg_names(node, {})
    name, i = names[index]
    return {f'{node.name}:{name}:{i}'}

  def resolve(self, text: str):
    """Follows Identity ops and variable reads back from a data input.

    A read is followed to its handle: in a graph that keeps its variables,
    a masked weight is `Mul(read(weight), read(mask))`.

    Returns:
      ('const', node), ('placeholder', node) (a top-level Placeholder: a
      captured variable's handle), ('arg', index) or ('other', node).
    """
    while True:
      index = self.arg_index(text)
      if index is not None:
        return 'arg', index
      node = self.node_of(text)
      if node is None:
        return 'other', None
      if node.op in rules.IDENTITY_OPS or node.op == READ:
        text = node.input[0]
        continue
      return _LEAF_KINDS.get(node.op, 'other'), node

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
