"""Finding the prunable weights of a traced graph.

A weight is prunable when it is a trainable floating `tf.Variable` of rank
>= 2 whose value reaches a weight-consuming op (`rules.WEIGHT_INPUTS`), is
never written inside the graph, and is not excluded by `do_not_prune`. The
scan follows the variable's resource handle from the capture placeholder
through `Identity`, into `While`/`If`/`Case` bodies and nested function calls
(`PartitionedCall`, `StatefulPartitionedCall`), then its read value through
`rules.VALUE_PASSTHROUGH` ops.

Weight names: the `tf.Variable`'s name without the `:0` suffix, e.g.
'sequential/dense/kernel' for Keras 3 (the same as the Keras variable's
`.path`), 'dense/kernel' for tf_keras, the given name for raw variables.
When two captured variables share a name, later ones get '_1', '_2', ... in
capture order, so names are unique and deterministic.

Consumer paths: `'::'`-joined, alternating call node and called function down
to the consuming node, e.g.
'lstm/while::lstm_while_body_169::lstm/while/lstm_cell/MatMul_1'.
"""

import dataclasses
import re
from typing import (
  Any,
  Dict,
  List,
  NamedTuple,
  Optional,
  Pattern,
  Sequence,
  Tuple,
)

import tensorflow as tf
from tensorflow.core.framework import function_pb2

from graph_prune import errors
from graph_prune.passes import graph_ir
from graph_prune.passes import rules

PATH_SEPARATOR = '::'


@dataclasses.dataclass(frozen=True)
class WeightUse:
  """A prunable weight.

  Attributes:
    variable: the `tf.Variable`.
    name: unique, stable name (see module docstring); hparam regexes are
      searched in it and masks are keyed by it.
    shape: the weight's shape, a tuple of ints.
    dtype: its `tf.DType`.
    consumers: tuple of (op type, node path) of every weight-consuming op that
      reads it, nested functions included.
  """

  variable: tf.Variable
  name: str
  shape: Tuple[int, ...]
  dtype: tf.DType
  consumers: Tuple[Tuple[str, str], ...]


class Skipped(NamedTuple):
  """A captured variable the pass does not mask, and why."""

  name: str
  reason: str


@dataclasses.dataclass(frozen=True)
class WeightScan:
  """Result of `find_weights`.

  Attributes:
    candidates: tuple of `WeightUse`, in capture order.
    skipped: tuple of `Skipped(name, reason)` (a named tuple) for every other
      captured variable.
    analysis: the `Analysis` the scan was made from, so that `insert_masks`
      reuses it (the graph it read and every variable's uses) instead of
      reading and walking the graph again.
  """

  candidates: Tuple[WeightUse, ...]
  skipped: Tuple[Skipped, ...]
  analysis: Optional['Analysis'] = dataclasses.field(
    default=None, repr=False, compare=False
  )


@dataclasses.dataclass(frozen=True)
class _Use:
  kind: str  # 'weight', 'write' (blocks masking) or 'other'
  op_type: str
  path: str


@dataclasses.dataclass(frozen=True)
class VariableInfo:
  """Everything the pass knows about one captured variable."""

  variable: tf.Variable
  name: str
  arg_index: int  # its argument in the traced FunctionDef
  uses: Tuple[_Use, ...]


@dataclasses.dataclass(frozen=True)
class Analysis:
  """What `analyse` read from one traced function, shared by the passes.

  Attributes:
    concrete_function: the traced `ConcreteFunction`.
    top: its FunctionDef, as traced.
    library: its graph's function library, as traced (copies; the passes
      never modify them), read once per `apply_pruning`.
    infos: a `VariableInfo` per captured variable, in capture order.
  """

  concrete_function: Any
  top: function_pb2.FunctionDef
  library: graph_ir.Library
  infos: Tuple[VariableInfo, ...]


def find_weights(
  traced, do_not_prune: Sequence[Pattern[str]] = ()
) -> WeightScan:
  """Finds the prunable weights of a traced computation.

  An analysis, not a pass: it reads the graph and rewrites nothing, so it
  returns a `WeightScan` rather than a `PassResult`.

  Args:
    traced: a `graph_prune.model.tracing.Traced`.
    do_not_prune: compiled regexes (or strings); a weight whose name any of
      them matches (`re.search`) is skipped.

  Returns:
    A `WeightScan`. It may have no candidates; callers that need one raise
    `NoPrunableWeightsError` (see `require_candidates`).
  """
  return scan_analysis(analyse(traced), do_not_prune)


def scan_analysis(
  analysis: 'Analysis', do_not_prune: Sequence[Pattern[str]] = ()
) -> WeightScan:
  """`find_weights` on the result of `analyse`."""
  patterns = [re.compile(p) if isinstance(p, str) else p for p in do_not_prune]
  candidates, skipped = [], []
  for info in analysis.infos:
    reason = _skip_reason(info, patterns)
    if reason:
      skipped.append(Skipped(info.name, reason))
      continue
    v = info.variable
    candidates.append(
      WeightUse(
        variable=v,
        name=info.name,
        shape=tuple(v.shape.as_list()),
        dtype=v.dtype,
        consumers=tuple(
          (u.op_type, u.path) for u in info.uses if u.kind == 'weight'
        ),
      )
    )
  return WeightScan(
    candidates=tuple(candidates), skipped=tuple(skipped), analysis=analysis
  )


def require_candidates(scan: WeightScan, what: str) -> WeightScan:
  """Raises NoPrunableWeightsError listing every variable seen and why."""
  if not scan.candidates:
    seen = '; '.join(f'{n}: {r}' for n, r in scan.skipped) or 'none'
    raise errors.NoPrunableWeightsError(
      f'{what} has no prunable weight (variables seen: {seen}); a prunable '
      'weight is a trainable float variable of rank >= 2 read by MatMul, '
      'Einsum, a convolution or a gather.'
    )
  return scan


def left_dense(skipped: Skipped) -> bool:
  """Whether a skip leaves dense a weight that looks prunable.

  True for a trainable float variable of rank >= 2 that the scan could not
  follow to a weight-consuming op, or that the graph uses as a variable
  (`_skip_reason`'s last two kinds): unlike a bias or a `do_not_prune`
  match, the user asked for it to be pruned, so callers warn. A weight read
  only by elementwise ops (`rules.ELEMENTWISE`: the rank-2 biases of
  `MultiHeadAttention`) is a bias, not warned of.
  """
  reason = skipped.reason
  if reason.startswith('used by '):
    return True
  if not reason.startswith(_UNREAD_PREFIX):
    return False
  readers = set(reason[len(_UNREAD_PREFIX) :].rstrip(')').split(', '))
  return not readers <= rules.ELEMENTWISE


# How `_skip_reason` starts the reason of a weight no consumer reads.
_UNREAD_PREFIX = 'not read by a weight-consuming op (read by: '


def _skip_reason(info: VariableInfo, patterns) -> str:
  v = info.variable
  if not v.trainable:
    return 'not trainable'
  if not v.dtype.is_floating:
    return f'dtype {v.dtype.name} is not floating'
  if v.shape.rank is None or v.shape.rank < 2:
    return f'rank {v.shape.rank} < 2'
  writes = [u for u in info.uses if u.kind == 'write']
  if writes:
    return (
      f'used by {writes[0].op_type} at {writes[0].path!r}, which needs '
      'the variable itself; cannot substitute weight * mask'
    )
  if not any(u.kind == 'weight' for u in info.uses):
    others = sorted({u.op_type for u in info.uses})
    return f'{_UNREAD_PREFIX}{", ".join(others) or "nothing"})'
  for p in patterns:
    if p.search(info.name):
      return f'excluded by do_not_prune pattern {p.pattern!r}'
  return ''


def analyse(traced) -> Analysis:
  """Reads `traced`'s graph once and finds every captured variable's uses.

  An analysis: it returns an `Analysis` and rewrites nothing.
  """
  cf = traced.concrete_function
  # As traced: the walk follows a custom gradient's IdentityN by op type,
  # whatever its gradient attr (insertion's first pass drops that attr).
  top = cf.function_def
  library = library_of(cf)
  graph_inputs = list(cf.graph.inputs)
  if len(graph_inputs) != len(top.signature.input_arg):
    raise errors.GraphRewriteError(
      f'The FunctionDef of {traced.name} has {len(top.signature.input_arg)} '
      f'arguments but its graph {len(graph_inputs)} inputs; cannot match '
      'captured variables.'
    )
  position = {id(t): i for i, t in enumerate(graph_inputs)}
  arg_of_handle = {
    id(ext): position[id(internal)] for ext, internal in cf.graph.captures
  }
  walker = _Walker(library)
  infos, taken = [], {}
  for v in traced.variables:
    name = unique_name(graph_ir.variable_name(v), taken)
    arg = arg_of_handle[id(v.handle)]
    uses = walker.uses(top, arg, 'resource')
    infos.append(
      VariableInfo(variable=v, name=name, arg_index=arg, uses=tuple(uses))
    )
  return Analysis(cf, top, library, tuple(infos))


def library_of(cf) -> graph_ir.Library:
  """The function library of a ConcreteFunction's graph, by name (copies)."""
  return {f.signature.name: f for f in cf.graph.as_graph_def().library.function}


def unique_name(name: str, taken: Dict[str, int]) -> str:
  if name not in taken:
    taken[name] = 0
    return name
  while True:
    taken[name] += 1
    candidate = f'{name}_{taken[name]}'
    if candidate not in taken:
      taken[candidate] = 0
      return candidate


class _Walker:
  """Follows a resource handle or value through a function and its callees."""

  def __init__(self, library: graph_ir.Library):
    self._library = library
    self._memo = {}
    self._consumers_memo = {}

  def uses(self, fdef, arg: int, kind: str) -> List[_Use]:
    key = (fdef.signature.name, arg, kind)
    if key in self._memo:
      return self._memo[key]
    self._memo[key] = []  # recursion guard
    result = self._walk(fdef, arg, kind)
    self._memo[key] = result
    return result

  def _consumers(self, fdef):
    name = fdef.signature.name
    if name not in self._consumers_memo:
      self._consumers_memo[name] = graph_ir.Consumers(fdef)
    return self._consumers_memo[name]

  def _walk(self, fdef, arg: int, kind: str) -> List[_Use]:
    consumers = self._consumers(fdef)
    start = graph_ir.Ref(graph_ir.arg_names(fdef)[arg])
    work, seen, uses = [(start, kind)], set(), []
    while work:
      ref, k = work.pop()
      if (ref, k) in seen:
        continue
      seen.add((ref, k))
      for node, position in consumers.of(ref):
        self._visit(node, position, k, work, uses)
    return uses

  def _visit(self, node, position, kind, work, uses):
    library = self._library
    flow = rules.callees(node, position, library)
    if flow is not None:
      targets, arg = flow
      if not targets:
        uses.append(_Use('other', node.op, node.name))
        return
      outputs = set()
      for _, _, fname in targets:
        callee = library[fname]
        for u in self.uses(callee, arg, kind):
          uses.append(
            dataclasses.replace(
              u, path=PATH_SEPARATOR.join([node.name, fname, u.path])
            )
          )
        outputs.update(graph_ir.returned_args(callee).get(arg, ()))
      if node.op in rules.WHILE_OPS:
        outputs = {position}
      for o in sorted(outputs):
        work.append((graph_ir.output_ref(node, o, library), kind))
      return
    op = node.op
    if kind == 'resource':
      if op == rules.RESOURCE_READ:
        work.append((graph_ir.output_ref(node, 0, library), 'value'))
      elif op == rules.RESOURCE_IDENTITY:
        work.append((graph_ir.output_ref(node, 0, library), 'resource'))
      elif position in rules.RESOURCE_WEIGHT_INPUTS.get(op, ()):
        uses.append(_Use('weight', op, node.name))
      else:
        uses.append(_Use('write', op, node.name))
      return
    slots = rules.WEIGHT_INPUTS.get(op, ())
    if op in rules.WEIGHT_INPUTS and (slots is rules.ANY or position in slots):
      uses.append(_Use('weight', op, node.name))
    elif op in rules.VALUE_PASSTHROUGH and position == 0:
      work.append((graph_ir.output_ref(node, 0, library), 'value'))
    elif rules.VALUE_SPLITS.get(op) == position:
      for o in range(len(graph_ir.output_arg_names(node, library))):
        work.append((graph_ir.output_ref(node, o, library), 'value'))
    elif op == 'IdentityN':
      work.append((graph_ir.output_ref(node, position, library), 'value'))
    else:
      uses.append(_Use('other', op, node.name))
