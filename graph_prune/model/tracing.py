"""Turns what the user hands to graph_prune into one concrete TF2 graph.

`trace(graph_fn)` accepts a `tf.function`, a `ConcreteFunction`, a
`tf.Module` whose `__call__` is a `tf.function` (traced as that function, with
its input signature), a plain Python callable plus an input signature, or a
Keras model (Keras 3
`keras.Model` or tf_keras `tf_keras.Model`: Sequential, functional or
subclassed) and returns a `Traced`: the `ConcreteFunction`, the positional
input signature it was traced with, and the `tf.Variable`s it captures.

Keras models are traced with `training=False` by default: that is the graph
that is served and exported (dropout off, batch norm using its moving
statistics). A training step wants `training=True` (dropout on, batch norm
using batch statistics and updating its moving averages); pass
`trace(model, training=True)` for that graph. Both graphs read the same
variables, so the caller may trace and rewrite each mode separately and give
both rewrites the same mask variables.
"""

import dataclasses
import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import tensorflow as tf

from graph_prune import errors


@dataclasses.dataclass(frozen=True)
class Traced:
  """A computation traced into one graph.

  Attributes:
    concrete_function: the `tf.types.experimental.ConcreteFunction`.
    input_signature: tuple with one structure of `tf.TensorSpec` per
      positional argument; `fn(*args)` takes arguments matching it.
    variables: the `tf.Variable`s the graph captures, in capture order (which
      is deterministic for a given Python function). For Keras 3 models these
      are the `tf.Variable`s behind the Keras variables (`keras_var.value`).
    name: a short description of what was traced, for messages.
  """

  concrete_function: Any
  input_signature: Tuple[Any, ...]
  variables: Tuple[tf.Variable, ...]
  name: str


def trace(
  graph_fn: Any,
  input_signature: Optional[Sequence[Any]] = None,
  training: Optional[bool] = False,
) -> Traced:
  """Traces `graph_fn` into a single `ConcreteFunction`.

  Args:
    graph_fn: a `tf.function`, a `ConcreteFunction`, a Python callable, or a
      Keras model (Keras 3 or tf_keras).
    input_signature: sequence of `tf.TensorSpec` structures, one per positional
      argument. Required for plain callables and for `tf.function`s declared
      without one; taken from the model's inputs for Keras models when omitted;
      must be omitted (or equal) for a `ConcreteFunction`.
    training: only for Keras models, passed as `model(x, training=training)`.
      False (default) traces the inference graph; True the training graph
      (dropout active, batch norm updating its statistics); None lets the model
      decide (Keras uses the learning phase, i.e. inference here).

  Returns:
    A `Traced`.

  Raises:
    UntraceableError: `graph_fn` cannot be traced into one graph (e.g. a
      polymorphic `tf.function` and no signature), naming it and the fix.
    ArgumentTypeError: `input_signature` is not a list or tuple, or
      `training` is not None or a Python bool.
  """
  name = _describe(graph_fn)
  check_training(training)
  input_signature = _checked_signature(input_signature)
  cf = _concrete_function(graph_fn, input_signature, training, name)
  args_sig, kwargs_sig = cf.structured_input_signature
  if kwargs_sig:
    raise errors.UntraceableError(
      f'Cannot trace {name}: its signature has keyword arguments '
      f'{sorted(kwargs_sig)}; pass every input positionally.'
    )
  return Traced(
    concrete_function=cf,
    input_signature=tuple(args_sig),
    variables=_captured_variables(cf),
    name=name,
  )


def check_training(training) -> None:
  """Checks a `training` argument: None, True or False.

  Raises:
    UntraceableError: `training` is a tensor: the mode would be chosen at run
      time, but each mode is a separate graph.
    ArgumentTypeError: `training` is of another type.
  """
  if training is None or isinstance(training, bool):
    return
  if isinstance(training, (tf.Tensor, tf.Variable)):
    raise errors.UntraceableError(
      f'training must be None, True or False, got the tensor {training!r}; '
      'pass a Python bool (each mode is a separate graph).'
    )
  raise errors.ArgumentTypeError(
    f'training must be None, True or False, got {type(training).__name__} '
    f'{training!r}; pass a Python bool.'
  )


def _checked_signature(input_signature) -> Optional[Tuple[Any, ...]]:
  """`input_signature` as a tuple, or ArgumentTypeError if not a sequence."""
  if input_signature is None:
    return None
  if not isinstance(input_signature, (list, tuple)):
    raise errors.ArgumentTypeError(
      'input_signature must be a list with one tf.TensorSpec structure per '
      f'positional argument, got {type(input_signature).__name__} '
      f'{input_signature!r}; wrap it in a list: [spec].'
    )
  return tuple(input_signature)


def _concrete_function(graph_fn, input_signature, training, name):
  """The one `ConcreteFunction` of `graph_fn` (see `trace`)."""
  if isinstance(graph_fn, tf.types.experimental.ConcreteFunction):
    return graph_fn
  if isinstance(graph_fn, tf.types.experimental.PolymorphicFunction):
    return _trace_tf_function(graph_fn, input_signature, name)
  if is_keras_model(graph_fn):
    if input_signature is None:
      input_signature = _keras_input_signature(graph_fn, name)
    model = graph_fn

    def call_model(*args):
      return model(*args, training=training)

    return _trace_callable(call_model, input_signature, name)
  method = _tf_function_call(graph_fn)
  if method is not None:
    return _trace_tf_function(method, input_signature, name)
  if callable(graph_fn):
    if input_signature is None:
      raise errors.UntraceableError(
        f'Cannot trace {name}: a plain Python callable needs an '
        'input_signature; pass input_signature=[tf.TensorSpec(...), ...].'
      )
    return _trace_callable(graph_fn, input_signature, name)
  raise errors.UntraceableError(
    f'Cannot trace {name}: expected a tf.function, a ConcreteFunction, a '
    'Keras model or a Python callable.'
  )


def _tf_function_call(obj):
  """`obj.__call__` when it is a `tf.function` (a `tf.Module`'s), else None.

  A module declaring `@tf.function(input_signature=...) def __call__` is
  traced like that function, with its signature (calling the module with a
  new Python callable would lose it).
  """
  if not callable(obj):
    return None
  try:
    method = obj.__call__
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(method, tf.types.experimental.PolymorphicFunction):
    return method
  return None


def _trace_tf_function(fn, input_signature, name):
  if input_signature is not None:
    try:
      return fn.get_concrete_function(*input_signature)
    except (TypeError, ValueError) as e:
      raise errors.UntraceableError(
        f'Cannot trace {name} with input_signature {input_signature}: {e}'
      ) from e
  if fn.input_signature is not None:
    return fn.get_concrete_function()
  raise errors.UntraceableError(
    f'Cannot trace {name}: it is a polymorphic tf.function with no '
    'input_signature; declare @tf.function(input_signature=[...]) or pass '
    'input_signature=[tf.TensorSpec(...), ...].'
  )


def _trace_callable(fn: Callable[..., Any], input_signature, name):
  try:
    return tf.function(
      fn, input_signature=list(input_signature), autograph=True
    ).get_concrete_function()
  except (TypeError, ValueError) as e:
    raise errors.UntraceableError(
      f'Cannot trace {name} with input_signature {input_signature}: {e}'
    ) from e


def _captured_variables(cf) -> Tuple[tf.Variable, ...]:
  """The captured `tf.Variable`s, in capture order, matched by handle id."""
  by_handle = {id(v.handle): v for v in cf.graph.variables}
  seen = set()
  ordered = []
  for external, _ in cf.graph.captures:
    v = by_handle.get(id(external))
    if v is not None and id(v) not in seen:
      seen.add(id(v))
      ordered.append(v)
  return tuple(ordered)


def _describe(graph_fn) -> str:
  label = (
    getattr(graph_fn, 'name', None)
    or getattr(graph_fn, '__name__', None)
    or type(graph_fn).__name__
  )
  return f'{type(graph_fn).__name__} {label!r}'


# Keras models.


def keras_model_classes():
  """Model classes of the Keras packages already imported (imports none)."""
  classes = []
  for module_name in ('keras', 'tf_keras'):
    module = sys.modules.get(module_name)
    model_class = getattr(module, 'Model', None) if module else None
    if isinstance(model_class, type):
      classes.append(model_class)
  return tuple(classes)


def is_keras_model(obj) -> bool:
  """Whether `obj` is a Keras model (Keras 3 or tf_keras), which `trace` can
  trace in either mode (`training=`)."""
  classes = keras_model_classes()
  return bool(classes) and isinstance(obj, classes)


def variable_owners(obj) -> Dict[int, Any]:
  """id(tf.Variable) -> the Keras 3 variable wrapping it, for `obj`'s.

  A Keras 3 model tracks `keras.Variable`s, each wrapping the `tf.Variable`
  (or distributed variable) a traced graph captures; tf_keras models and
  `tf.Module`s track the `tf.Variable`s themselves (an empty dict).
  """
  owners = {}
  try:
    variables = getattr(obj, 'variables', None) or ()
  except Exception:  # pylint: disable=broad-except
    return owners  # a property that cannot run unbuilt: nothing to map
  for v in variables:
    value = getattr(v, 'value', None)
    if not isinstance(v, tf.Variable) and isinstance(
      value, (tf.Variable, tf.distribute.DistributedValues)
    ):
      owners[id(value)] = v
  return owners


def _keras_input_signature(model, name):
  """Positional input signature of a Keras model, or UntraceableError.

  Functional/Sequential models: their symbolic inputs. Subclassed models:
  tf_keras records the spec of the first call (`save_spec()`); Keras 3 only
  records the shapes its `build` saw (`_build_shapes_dict`, not public, used
  only as a last resort) and its `input_dtype`.
  """
  save_spec = getattr(model, 'save_spec', None)
  if callable(save_spec):  # tf_keras
    spec = save_spec(dynamic_batch=True)
    if spec is not None:
      args, kwargs = spec
      if not kwargs:
        return tuple(args)
  for attr in ('input', 'inputs'):
    try:
      structure = getattr(model, attr, None)
    except (AttributeError, ValueError):
      structure = None
    if structure is not None:
      if isinstance(structure, (list, tuple)) and len(structure) == 1:
        structure = structure[0]
      return (tf.nest.map_structure(_spec_of_symbolic, structure),)
  shapes = getattr(model, '_build_shapes_dict', None)
  if shapes:
    dtype = getattr(model, 'input_dtype', None) or tf.float32
    return tuple(
      tf.TensorSpec([None] + list(shape)[1:], dtype, name=arg)
      for arg, shape in shapes.items()
    )
  raise errors.UntraceableError(
    f'Cannot find the inputs of {name}: it was never built or called; call '
    'it once on real data or pass input_signature=[tf.TensorSpec(...)].'
  )


def _spec_of_symbolic(t):
  return tf.TensorSpec(
    tuple(t.shape), tf.as_dtype(t.dtype), name=getattr(t, 'name', None)
  )


def inference_trace(function):
  """A fresh trace of `function` for inference.

  Once a model was differentiated inside a `tf.function`, TensorFlow keeps
  the traced call as a forward function that also outputs the mask reads its
  gradient needs; that graph cannot be folded. A new `tf.function` over the
  same Python callable, traced outside any tape, is the plain inference
  graph.
  """
  fresh = tf.function(
    function.python_function, input_signature=function.input_signature
  )
  with tf.init_scope():
    return fresh.get_concrete_function()
