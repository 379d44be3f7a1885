"""The checks of the fold pass: what it may change, and what must be left.

`CallChecker` proves, before `fold_masks` feeds the folded value of a masked
weight to a loop, branch or call in place of the weight and its mask, that
nothing but the masked `Mul` reads those two arguments (so feeding the same
constant for both changes nothing else). `check_stripped` proves, after the
strip passes, that nothing of the pruning is left in the graph.
"""

import dataclasses
from typing import Mapping, Set

from graph_prune import errors
from graph_prune.passes import graph_ir
from graph_prune.passes import rules

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


@dataclasses.dataclass(frozen=True)
class Call:
  """A node of `body` (a `fold_masks` body) calling a function via `attr`."""

  body: object
  node: object
  attr: str


class CallChecker:
  """Checks that feeding a folded value to a call changes nothing else."""

  def __init__(self, bodies, library: graph_ir.Library):
    """Args: bodies (function name -> body), library (name -> FunctionDef)."""
    self.bodies = bodies
    self.library = library

  def check_call(self, call: Call, offset: int, a: int, b: int, where: str):
    """Raises unless arguments a and b of `call` are used only masked."""
    node = call.node
    loop = node.op in rules.WHILE_OPS
    for attr, fname in graph_ir.called_functions(node, self.library):
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

  def _check_arg_uses(self, body, a: int, b: int, where: str, loop_body: bool):
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
          if user.op in rules.IDENTITY_OPS or user.op == 'ReadVariableOp':
            # (A read: the arguments are the weight's and the mask's
            # handles, in a graph that keeps its variables.)
            frontier.append(body.output_ref(user))
          elif graph_ir.is_masked_weight(user):
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
          elif rules.arg_offset(user, self.library) is not None:
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

  def _check_nested_call(self, body, node, pair: Set[int], where: str):
    offset = rules.arg_offset(node, self.library)
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
    self.check_call(
      Call(body, node, ''),
      offset,
      positions[0] - offset,
      positions[1] - offset,
      where,
    )


def _key(kind, node):
  """A hashable form of a body's `resolve` result."""
  return (kind, node if kind == 'arg' else getattr(node, 'name', None))


def check_stripped(
  graph_def,
  pruning_consts: Mapping[str, str],
  what: str,
  frozen: bool = True,
) -> None:
  """Raises unless nothing of the pruning is left in `graph_def`.

  Checks the graph, not names alone: no node is left of a mask, threshold,
  saliency (`<weight>/gradient`, `/old_weight`, `/old_old_weight`) or step
  variable (its frozen value, or the Placeholder of its captured handle:
  every function reaches a variable only through those), no
  `masked_weight` Mul is left and, in a frozen graph, no node anywhere
  (graph or function library) reads or writes a variable.

  Args:
    graph_def: the stripped GraphDef.
    pruning_consts: top-level node name (Const or Placeholder) -> pruning
      variable name.
    what: what the graph is, for messages (e.g. "signature 'serving_default'").
    frozen: whether every variable of `graph_def` was frozen into a Const.

  Raises:
    FoldError: naming the first offending node.
  """
  bodies = [('the graph', graph_def.node)] + [
    (f'function {f.signature.name!r}', f.node_def)
    for f in graph_def.library.function
  ]
  for where, nodes in bodies:
    for node in nodes:
      if frozen and node.op in VARIABLE_OPS:
        raise errors.FoldError(
          f'The stripped {what} still has {node.op} node {node.name!r} in '
          f'{where}.'
        )
      if graph_ir.is_masked_weight(node):
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
        if any(graph_ir.node_name(t) == const for t in n.input)
      ]
      raise errors.FoldError(
        f'The stripped {what} still reads pruning variable {variable!r} '
        f'(through {", ".join(users) or const!r}); export only functions '
        'that compute the model, not its pruning state.'
      )
