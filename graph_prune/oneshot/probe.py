"""The inputs of each masked weight's layer, read from the pruned model.

One-shot pruning needs, per masked weight, the tensor its layer multiplies
the weight with (a Dense layer's input rows, a conv's input feature map),
computed by the *pruned* model as it is now: SparseGPT and Wanda prune
layers in order, each from the outputs of the layers already pruned before
it. The pruned model's inference function is flattened (calls inlined,
variables kept as handles, `passes.flatten`); each masked weight's
`weight * mask` node is followed through reshapes to the op that consumes
it; and a function importing that graph returns the consumers' inputs. It
reads the variables live, so after a layer's weight and mask are assigned
the next run sees them.

    probe = Probe.of(pruned)
    layers = probe.layers                  # one `Layer` per masked weight
    inputs = probe.run(batch, [layer.name for layer in layers[:2]])
"""

import collections
import dataclasses
import itertools
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.model import tracing
from graph_prune.oneshot import op_rules
from graph_prune.passes import flatten
from graph_prune.passes import graph_ir

# Ops between `weight * mask` and the op that consumes the weight: they only
# reshape it (Conv1D's ExpandDims) or pass it on.
_ON_THE_WAY = frozenset(['Identity', 'Snapshot', 'ExpandDims', 'Reshape'])
_probe_ids = itertools.count()


@dataclasses.dataclass(frozen=True)
class Layer:
  """A masked weight and the op that multiplies it with its input.

  Attributes:
    name: the weight's name (`PrunedModel.weight_names`).
    index: its index in `PrunedModel.weights`.
    op: the consuming op's type (a key of `op_rules.RULES`).
    input_tensor: the flat graph's tensor the op reads the layer input from
      (a lookup's token ids).
    kernel_shape: the weight as the op sees it ([in, out], or
      [kh, kw, cin, cout]; an EinsumDense kernel [in, heads, head_dim] is
      seen as the [in, heads * head_dim] matrix it is reshaped to, an
      output kernel [heads, head_dim, out] as [heads * head_dim, out]).
    attrs: the conv's strides, padding and dilations (empty otherwise).
    after: the names of the masked weights the input depends on.
    kind: `op_rules.MATRIX`, `CONV` or `LOOKUP`.
  """

  name: str
  index: int
  op: str
  input_tensor: str
  kernel_shape: Tuple[int, ...]
  attrs: Mapping[str, object]
  after: frozenset
  kind: str = op_rules.MATRIX

  @property
  def inputs(self) -> int:
    """The rows of the [inputs, outputs] matrix the solvers prune."""
    return int(np.prod(self.kernel_shape[:-1]))

  @property
  def outputs(self) -> int:
    return int(self.kernel_shape[-1])


class Probe:
  """A function from the model's inputs to chosen layers' inputs."""

  def __init__(self, flat, layers: Sequence[Layer], input_signature):
    self.layers = tuple(layers)
    self._flat = flat
    self._signature = tuple(input_signature)
    self._functions: Dict[Tuple[str, ...], object] = {}

  @classmethod
  def of(cls, pruned) -> 'Probe':
    """The probe of a `PrunedModel`.

    Raises:
      OneShotError: a masked weight is read by an op `op_rules` cannot read,
        or by several ops (tied weights).
    """
    call = pruned.__call__
    flat = flatten.flat_graph(tracing.inference_trace(call))
    shapes = {
      name: tuple(int(d) for d in w.shape)
      for name, w in zip(pruned.weight_names, pruned.weights)
    }
    layers = _layers(flat.graph_def, shapes)
    return cls(flat, layers, call.input_signature)

  def run(self, inputs, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """The inputs of the layers `names` when the model reads `inputs`.

    Args:
      inputs: one batch, structured as the model's input signature.
      names: weight names of `layers`.

    Returns:
      weight name -> its layer's input, as NumPy.
    """
    key = tuple(names)
    if key not in self._functions:
      self._functions[key] = self._function(key)
    values = self._functions[key](*inputs)
    return {name: np.asarray(v) for name, v in zip(key, values)}

  def _function(self, names):
    flat = self._flat
    by_name = {layer.name: layer for layer in self.layers}
    fetches = [by_name[n].input_tensor for n in names]
    fed = {graph_ir.node_name(t) for t in flat.input_names} | set(flat.captures)
    graph_def = graph_ir.without_nodes(flat.graph_def, fed)
    scope = f'probe_{next(_probe_ids)}'

    def call(*args):
      graph = tf.compat.v1.get_default_graph()
      flat_args = tf.nest.flatten(args, expand_composites=True)
      input_map = dict(zip(flat.input_names, flat_args))
      for name, source in flat.captures.items():
        input_map[f'{name}:0'] = _tf_internal.capture(graph, source)
      return tf.graph_util.import_graph_def(
        graph_def, input_map=input_map, return_elements=fetches, name=scope
      )

    return tf.function(
      call, input_signature=list(self._signature), autograph=False
    )


def _layers(graph_def, shapes: Mapping[str, Tuple[int, ...]]) -> List[Layer]:
  """One `Layer` per masked weight, in the graph's topological order."""
  nodes = {n.name: n for n in graph_def.node}
  consumers = collections.defaultdict(list)
  for node in graph_def.node:
    for position, text in enumerate(node.input):
      if not text.startswith('^'):
        consumers[graph_ir.node_name(text)].append((node, position))
  weight_names = list(shapes)
  index = {name: i for i, name in enumerate(weight_names)}
  found = {}
  for node in graph_def.node:
    if not graph_ir.is_masked_weight(node):
      continue
    weight = _weight_of(graph_ir.weight_of_masked(node.name), index)
    if weight is None:
      continue
    users = _users(node, consumers, nodes)
    _check_one_layer(weight, users)
    for user, position, reshaped in users:
      shape = _resolved(reshaped, shapes[weight])
      layer = _layer(user, position, weight, index[weight], shape, nodes)
      if weight in found and found[weight].input_tensor != layer.input_tensor:
        raise errors.OneShotError(
          f'weight {weight!r} is read by several layers ({user.name!r} and '
          'another); one-shot pruning reads one input per weight: leave it '
          'out with do_not_prune'
        )
      found[weight] = layer
  missing = [n for n in weight_names if n not in found]
  if missing:
    raise errors.OneShotError(
      f'no layer reading weight {missing[0]!r} was found in the pruned '
      'model; leave it out with do_not_prune'
    )
  order = _topological(graph_def)
  layers = sorted(
    found.values(),
    key=lambda layer: order[graph_ir.node_name(layer.input_tensor)],
  )
  ancestors = _weight_ancestors(order, nodes, index)
  return [
    dataclasses.replace(
      layer, after=ancestors[graph_ir.node_name(layer.input_tensor)]
    )
    for layer in layers
  ]


def _check_one_layer(weight, users) -> None:
  """Refuses a weight that several different ops read (tied weights).

  Tied input and output embeddings are one table read by a lookup and by a
  transposed matmul: two layers with different inputs, whose statistics
  ask for different masks of the same weight.
  """
  ops = {(user.name, user.op) for user, _, _ in users}
  if len({op for _, op in ops}) > 1:
    listed = ' and '.join(f'{op} {name!r}' for name, op in sorted(ops))
    raise errors.OneShotError(
      f'weight {weight!r} is read by {listed}: a tied (shared) weight, e.g. '
      'tied input and output embeddings, has one mask but two layers of '
      'inputs to choose it from; leave it out with do_not_prune'
    )


def _weight_of(scoped: str, index) -> Optional[str]:
  """The weight name that `[<call scope>/]<weight>` ends with."""
  matches = [w for w in index if scoped == w or scoped.endswith('/' + w)]
  return max(matches, key=len) if matches else None


def _users(node, consumers, nodes):
  """(op, input position, shape) of the ops reading `node`'s value.

  Followed past identities and reshapes; `shape` is the static shape of
  the last Reshape on the way (Keras' EinsumDense reshapes its kernel to a
  matrix), or None.
  """
  stack, found = [(node.name, None)], []
  while stack:
    name, shape = stack.pop()
    for user, position in consumers[name]:
      if user.op in _ON_THE_WAY and position == 0:
        stack.append((user.name, _reshaped(user, nodes) or shape))
      else:
        found.append((user, position, shape))
  return found


def _resolved(reshaped, shape) -> Tuple[int, ...]:
  """`reshaped` (a Reshape's target, maybe with -1) for a weight of `shape`."""
  if reshaped is None:
    return tuple(shape)
  size = int(np.prod(shape))
  known = int(np.prod([d for d in reshaped if d != -1]))
  return tuple(size // known if d == -1 else d for d in reshaped)


def _reshaped(node, nodes) -> Optional[Tuple[int, ...]]:
  """A Reshape's constant target shape, or None."""
  if node.op != 'Reshape':
    return None
  source = nodes.get(graph_ir.node_name(node.input[1]))
  if source is None or source.op != 'Const':
    return None
  return tuple(int(d) for d in tf.make_ndarray(source.attr['value'].tensor))


def _layer(user, position, weight, index, shape, nodes) -> Layer:
  try:
    read = op_rules.reading(user, position, shape, nodes)
  except op_rules.UnreadableError as reason:
    raise errors.OneShotError(
      f'weight {weight!r} is read by {user.op} {user.name!r} (input '
      f'{position}: {reason}); one-shot pruning reads '
      f'{", ".join(sorted(op_rules.RULES))} as layers: leave the weight '
      'out with do_not_prune'
    ) from None
  return Layer(
    weight,
    index,
    user.op,
    _tensor(user.input[read.input_index]),
    read.kernel_shape,
    read.attrs,
    frozenset(),
    read.kind,
  )


def _tensor(text: str) -> str:
  text = text.split('^')[-1]
  return text if ':' in text else f'{text}:0'


def _topological(graph_def) -> Dict[str, int]:
  """Node name -> its position in a topological order."""
  return {
    n.name: i for i, n in enumerate(graph_ir.topological_order(graph_def))
  }


def _weight_ancestors(order, nodes, index) -> Dict[str, frozenset]:
  """Node name -> the masked weights whose `weight * mask` it depends on."""
  found: Dict[str, frozenset] = {}
  for name in sorted(order, key=order.get):
    node = nodes[name]
    deps = frozenset()
    for text in node.input:
      deps |= found.get(graph_ir.node_name(text), frozenset())
    if graph_ir.is_masked_weight(node):
      weight = _weight_of(graph_ir.weight_of_masked(node.name), index)
      deps |= {weight} if weight is not None else frozenset()
    found[name] = deps
  return found
