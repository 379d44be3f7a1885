"""A stripped function rebuilt as a `tf.function`, and its variables.

    copies = VariableCopies(share=True)
    stripped = strip_function(cf, pruning, 'the model', copies=copies)
    fn = rebuild(stripped, cf, input_signature, copies)

`rebuild` imports a `StrippedFunction`'s GraphDef into a new `tf.function`,
feeding each handle Placeholder its variable (see stripped_model.py for
what stripping does). `VariableCopies` makes and holds the variables of a
stripped model: the folded weights (`weight * mask`, fixed), shrunk
weights, and the other variables (the originals, or copies for a live
stripped model); its `variables` are the ones a rebuilt function reads,
which a `StrippedModel` tracks and a SavedModel stores.
"""

import itertools
from typing import Any, Sequence

import tensorflow as tf

from graph_prune import _tf_internal
from graph_prune import errors
from graph_prune.export import folded_checkpoint
from graph_prune.export.stripped_function import StrippedFunction
from graph_prune.passes import graph_ir

# Makes import scopes unique per process.
_call_ids = itertools.count(1)


class VariableCopies:
  """The variables of a stripped model: folded weights and the others.

  One folded variable per (weight, mask) and one copy per original variable
  and shape, shared by every function stripped and rebuilt with this
  object: signatures that read one weight read one variable (a bias that
  shrinking sliced is a copy of its own).

  Attributes:
    share: whether the other variables are the originals themselves rather
      than copies (an export that writes them and is done; a live stripped
      model copies, so that it does not follow later training).
    deferred: a `folded_checkpoint.DeferredFolds` when the folded variables
      hold no values and their values are written into the SavedModel after
      it is saved (an export that writes a SavedModel and is done: the
      folded values never all exist at once); else None.
  """

  def __init__(self, share: bool = False, defer_folds: bool = False):
    self.share = share
    self.deferred = folded_checkpoint.DeferredFolds() if defer_folds else None
    self._copies = {}
    self._folded = {}
    self._read = set()

  @property
  def variables(self):
    """The variables a function rebuilt with this object reads, in order.

    (A folded weight that shrink then sliced is left out: the shrunk graph
    reads the sliced variable.)
    """
    made = list(self._folded.values()) + list(self._copies.values())
    return [v for v in made if id(v) in self._read]

  def mark_read(self, variable) -> None:
    self._read.add(id(variable))

  def folded(self, weight, mask, name: str) -> tf.Variable:
    """A non-trainable variable holding `weight * mask`, +0.0 where pruned.

    Computed by TensorFlow, one weight at a time (no copy through NumPy or
    a proto), see `folded_checkpoint.folded_value`; with `deferred`, the
    variable has no value and the SavedModel's checkpoint gets it.
    """
    key = (id(weight.handle), id(mask.handle))
    if key not in self._folded:
      if weight.shape != mask.shape or weight.dtype != mask.dtype:
        raise errors.FoldError(
          f'Cannot fold {name!r}: the weight is {weight.dtype.name}'
          f'{weight.shape} but the mask is {mask.dtype.name}{mask.shape}.'
        )
      variable_name = graph_ir.variable_name(weight)
      if self.deferred is not None:
        self._folded[key] = self.deferred.variable(weight, mask, variable_name)
      else:
        with tf.init_scope():
          self._folded[key] = tf.Variable(
            folded_checkpoint.folded_value(weight, mask),
            trainable=False,
            name=variable_name,
          )
    return self._folded[key]

  def nonzeros(self, folded) -> int:
    """How many values of a variable `folded` made are not zero."""
    if self.deferred is not None and self.deferred.holds(folded):
      return self.deferred.nonzeros(folded)
    return int(tf.math.count_nonzero(folded))

  def fixed(self, key, value, name: str, trainable=False) -> tf.Variable:
    """A new variable holding `value` (a shrunk weight), one per `key`."""
    if key not in self._folded:
      with tf.init_scope():
        self._folded[key] = tf.Variable(value, trainable=trainable, name=name)
    return self._folded[key]

  def copy_of(self, original) -> tf.Variable:
    """The variable standing for `original`: itself if shared, else a copy."""
    key = id(original.handle)
    if key not in self._copies and self.share:
      self._copies[key] = original
    elif key not in self._copies:
      with tf.init_scope():
        self._copies[key] = tf.Variable(
          original.read_value(),
          name=graph_ir.variable_name(original),
          trainable=bool(getattr(original, 'trainable', False)),
        )
    return self._copies[key]


def rebuild(
  stripped: StrippedFunction,
  concrete_function,
  input_signature: Sequence[Any],
  copies: VariableCopies,
):
  """A `tf.function` computing `stripped` like `concrete_function`.

  The stripped GraphDef is imported into the new function's graph: each
  handle Placeholder is fed the handle of its variable (a folded or shrunk
  one, or the other variable or its copy). The outputs are packed into the
  original function's output structure.

  Args:
    stripped: from `strip_function(concrete_function, ...)`.
    concrete_function: the original function (for its output structure).
    input_signature: the new function's positional input signature; its
      flattened specs must match the original's flat inputs.
    copies: the `VariableCopies` that made the stripped function's
      variables; it records which ones the rebuilt function reads.

  Returns:
    A `tf.function` with `input_signature`.
  """
  cf = concrete_function
  input_names = stripped.input_names
  handles = {f'{name}:0': v for name, v in stripped.variables.items()}
  for variable in handles.values():
    copies.mark_read(variable)
  graph_def, present = _importable_graph(stripped)
  flat_structure, is_output = _output_layout(cf, stripped)
  scope = f'stripped_{next(_call_ids)}'

  def call(*args):
    graph = tf.compat.v1.get_default_graph()
    flat_args = tf.nest.flatten(args, expand_composites=True)
    input_map = {
      name: t
      for name, t in zip(input_names, flat_args)
      if graph_ir.node_name(name) in present
    }
    for name, source in handles.items():
      if isinstance(source, tf.Variable):
        # So that the function lists it among its `variables` (freezing
        # and the TFLite converter find the values there).
        _tf_internal.mark_variable_accessed(source)
        source = source.handle
      input_map[name] = _tf_internal.capture(graph, source)
    results = tf.graph_util.import_graph_def(
      graph_def,
      input_map=input_map,
      return_elements=list(stripped.output_names),
      name=scope,
    )
    outputs = iter(results)
    flat = [
      next(outputs) if output else t
      for t, output in zip(flat_structure, is_output)
    ]
    return tf.nest.pack_sequence_as(
      cf.structured_outputs, flat, expand_composites=True
    )

  return tf.function(
    call, input_signature=list(input_signature), autograph=False
  )


def _importable_graph(stripped: StrippedFunction):
  """(The GraphDef to import, the names of the stripped graph's nodes).

  The inputs' Placeholders and the variables' handle Placeholders are left
  out: input_map feeds their consumers.
  """
  fed = {graph_ir.node_name(name) for name in stripped.input_names} | set(
    stripped.variables
  )
  graph_def = graph_ir.without_nodes(
    stripped.graph_def,
    {n.name for n in stripped.graph_def.node if n.op == 'Placeholder'} & fed,
  )
  present = {n.name for n in stripped.graph_def.node}
  return graph_def, present


def _output_layout(cf, stripped: StrippedFunction):
  """(The flat output structure, whether each leaf is a function output).

  The function's outputs are its structure's tensors, in flat order (a
  loaded signature's structure holds TensorSpecs); other leaves (None,
  Python numbers) are returned as they are.
  """
  flat_structure = tf.nest.flatten(
    cf.structured_outputs, expand_composites=True
  )
  is_output = [
    isinstance(t, (tf.Tensor, tf.TensorSpec)) for t in flat_structure
  ]
  if sum(is_output) != len(stripped.output_names):
    raise errors.StripError(
      f'Cannot rebuild {cf.name}: its output structure has {sum(is_output)} '
      f'tensors but the function {len(stripped.output_names)} outputs.'
    )
  return flat_structure, is_output
