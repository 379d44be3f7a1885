"""The inputs of a model's input signature, and whether an array fits one.

    inputs = signature_inputs(pruned.__call__.input_signature)
    array = as_array(value, inputs[0], 'batch 0', what)
    check_kind(array, inputs[0], 'batch 0', what)   # then check_shape
    values = cast_values(array, inputs[0], what)    # after concatenating

`data_inputs.read_example_inputs` accepts many forms of data (arrays, lists
of batches, Datasets, files); this module knows nothing of them. It holds
the other half: what one input of the signature takes. The signature is
flattened once into named `SignatureInput`s (the names a dict of data is
keyed by), and every array read, whatever form it came in, goes through the
same checks against its input: the dtype's kind (a float input takes integer
or float data, an integer input integer data, a bool input bool data; never
objects, strings or complex values), the rank and each static dimension,
and, once cast to the input's dtype, no NaN or Inf (nor any the cast makes)
and integers within the input's integer type. Each failure is one
`ExampleDataError` sentence naming the input, the value and the fix.
"""

import dataclasses
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from graph_prune import errors


@dataclasses.dataclass(frozen=True)
class SignatureInput:
  """One input of the signature: its name in messages and dicts, its spec."""

  name: str
  spec: tf.TensorSpec
  named: bool = True

  @property
  def label(self) -> str:
    """How messages name it: "input 'x'", or 'the input' without a name."""
    return f'input {self.name!r}' if self.named else 'the input'

  def shape_text(self) -> str:
    return shape_text(self.spec.shape)


def input_names(input_signature) -> Tuple[str, ...]:
  """The names `read_example_inputs` gives the inputs of `input_signature`.

  A dict key (the path of keys, joined by '/') where the input sits in a
  dict; else the TensorSpec's name; else 'input_<i>' by position.
  """
  return tuple(i.name for i in signature_inputs(input_signature))


def signature_inputs(input_signature) -> List[SignatureInput]:
  """The inputs of `input_signature`, in `tf.nest`'s order, named.

  Args:
    input_signature: a `tf.TensorSpec` or a structure of them.

  Returns:
    One `SignatureInput` per TensorSpec, named as `input_names` says.

  Raises:
    ExampleDataError: if the signature holds anything but TensorSpecs.
  """
  found = []

  def visit(value, keys):
    if isinstance(value, tf.TensorSpec):
      found.append((keys, value))
    elif isinstance(value, Mapping):
      for key in sorted(value):  # tf.nest's order
        visit(value[key], keys + (str(key),))
    elif isinstance(value, (list, tuple)):
      for item in value:
        visit(item, keys)
    elif value is not None:
      raise errors.ExampleDataError(
        f'The input signature holds {value!r}, not a tf.TensorSpec; pass the '
        "model's input signature (e.g. pruned.__call__.input_signature)."
      )

  visit(input_signature, ())
  if len(tf.nest.flatten(input_signature)) != len(found):
    raise errors.ExampleDataError(
      f'The input signature {input_signature!r} holds something other than '
      "tf.TensorSpecs; pass the model's input signature."
    )
  inputs = []
  for position, (keys, spec) in enumerate(found):
    name = '/'.join(keys) or spec.name
    inputs.append(SignatureInput(name or f'input_{position}', spec, bool(name)))
  if len({i.name for i in inputs}) != len(inputs):
    inputs = [
      SignatureInput(f'input_{position}', i.spec)
      for position, i in enumerate(inputs)
    ]
  if len(inputs) == 1 and not inputs[0].named:
    return inputs
  return [dataclasses.replace(i, named=True) for i in inputs]


def fixed_batch(inputs: Sequence[SignatureInput], what: str) -> Optional[int]:
  """The batch size the inputs fix (one for all), or None if they fix none."""
  sizes = {
    i.spec.shape[0]
    for i in inputs
    if i.spec.shape.rank and i.spec.shape[0] is not None
  }
  if len(sizes) > 1:
    raise errors.ExampleDataError(
      f"{what}: the model's inputs fix different batch sizes "
      f'({", ".join(f"{i.name} {i.shape_text()}" for i in inputs)}), so no '
      'batch fits them all; give them one batch dimension.'
    )
  return sizes.pop() if sizes else None


def as_array(value, i: SignatureInput, where: str, what: str) -> np.ndarray:
  """`value` (an array, a tensor, nested lists) as one NumPy array."""
  if isinstance(value, (tf.Tensor, tf.Variable)):
    value = value.numpy()
  if isinstance(value, (tf.RaggedTensor, tf.SparseTensor)):
    raise errors.ExampleDataError(
      f'{what}: {where} gives {i.label} a {type(value).__name__}; '
      'pass dense arrays of one shape.'
    )
  try:
    return np.asarray(value)
  except (ValueError, TypeError) as e:
    raise errors.ExampleDataError(
      f'{what}: {where} for {i.label} cannot be one array '
      f'({" ".join(str(e).split())}); pass a rectangular numeric array of '
      f'shape {i.shape_text()}.'
    ) from e


def check_kind(
  array: np.ndarray, i: SignatureInput, where: str, what: str
) -> None:
  """Refuses dtypes the input cannot take: object, string, complex..."""
  kind, dtype = array.dtype.kind, i.spec.dtype
  fix = f'pass numbers of shape {i.shape_text()} (e.g. numpy.float32)'
  if kind == 'O':
    raise errors.ExampleDataError(
      f'{what}: {where} is an object array for {i.label} (None, '
      f'mixed types or ragged rows), not numbers; {fix}.'
    )
  if kind in 'USV':
    raise errors.ExampleDataError(
      f'{what}: {where} holds {array.dtype} values (strings or records) for '
      f'{i.label}, not numbers; {fix}.'
    )
  if kind == 'c':
    raise errors.ExampleDataError(
      f'{what}: {where} is complex ({array.dtype}) for {i.label}, '
      f'which takes real {dtype.name} values; pass real inputs (e.g. '
      'numpy.real(x) or numpy.abs(x), whichever the model was trained on).'
    )
  if dtype.is_floating:
    ok = kind in 'iuf'
  elif dtype.is_integer:
    ok = kind in 'iu'
  elif dtype.is_bool:
    ok = kind == 'b'
  else:
    raise errors.ExampleDataError(
      f'{what}: {i.label} is {dtype.name}, which example inputs '
      'cannot feed; only numeric and bool inputs are read.'
    )
  if not ok:
    raise errors.ExampleDataError(
      f'{what}: {where} is {array.dtype} but {i.label} is '
      f'{dtype.name}; pass {_wanted_kind(dtype)} data.'
    )


def _wanted_kind(dtype) -> str:
  if dtype.is_floating:
    return 'float or integer'
  if dtype.is_integer:
    return 'integer'
  return 'bool'


def check_shape(
  array: np.ndarray, i: SignatureInput, where: str, what: str
) -> None:
  """Refuses a rank or static dimension (after the batch) the input lacks."""
  shape = i.spec.shape
  if shape.rank is None:
    if array.ndim == 0:
      raise errors.ExampleDataError(
        f'{what}: {where} is a scalar for {i.label}; pass examples '
        'with the batch dimension first.'
      )
    return
  given = shape_text(array.shape)
  if array.ndim != shape.rank:
    if array.ndim == shape.rank - 1:
      fix = 'add the batch dimension first (x[None] for one example)'
    else:
      fix = f'pass inputs of shape {_batch_shape(shape)}'
    raise errors.ExampleDataError(
      f'{what}: {i.label} takes shape {i.shape_text()} (rank '
      f'{shape.rank}) but {where} has shape {given} (rank {array.ndim}); '
      f'{fix}.'
    )
  for axis in range(1, shape.rank):
    want = shape[axis]
    if want is not None and array.shape[axis] != want:
      raise errors.ExampleDataError(
        f'{what}: {i.label} takes shape {i.shape_text()} but {where} '
        f'has shape {given}: dimension {axis} is {array.shape[axis]}, not '
        f'{want}; pass inputs of shape {_batch_shape(shape)}.'
      )


def cast_values(array: np.ndarray, i: SignatureInput, what: str) -> np.ndarray:
  """`array` cast to the input's dtype, its values checked."""
  dtype = i.spec.dtype
  if dtype.is_floating:
    with np.errstate(over='ignore', invalid='ignore'):
      cast = array.astype(dtype.as_numpy_dtype)
    _check_finite(array, cast, i, what)
    return cast
  if dtype.is_integer and array.size:
    info = np.iinfo(dtype.as_numpy_dtype)
    low, high = array.min().item(), array.max().item()
    if low < info.min or high > info.max:
      raise errors.ExampleDataError(
        f'{what}: {i.label} is {dtype.name} but the data '
        f"holds values from {low} to {high}, beyond {dtype.name}'s range "
        f'[{info.min}, {info.max}]; pass values that fit.'
      )
  return array.astype(dtype.as_numpy_dtype)


def _check_finite(original, cast, i: SignatureInput, what: str) -> None:
  finite = np.isfinite(cast)
  if finite.all():
    return
  bad = np.argwhere(~finite)
  first = tuple(int(k) for k in bad[0])
  value = float(original[first])
  cause = (
    f'{value:g} overflows {i.spec.dtype.name}'
    if np.isfinite(value)
    else f'{value}'
  )
  raise errors.ExampleDataError(
    f'{what} holds {len(bad)} non-finite value{"s" if len(bad) > 1 else ""} '
    f'(NaN or Inf) for {i.label}, the first at example {first[0]}, '
    f'index {list(first)} ({cause}); replace or drop them (e.g. '
    'numpy.nan_to_num) and pass finite inputs.'
  )


def shape_text(shape) -> str:
  """A shape as messages write it: '[None, 16]', '[...]' for unknown rank."""
  if isinstance(shape, tf.TensorShape):
    if shape.rank is None:
      return '[...]'
    shape = shape.as_list()
  dims = shape
  return '[' + ', '.join('None' if d is None else str(d) for d in dims) + ']'


def _batch_shape(shape: tf.TensorShape) -> str:
  dims = ['n'] + ['any' if d is None else str(d) for d in shape.as_list()[1:]]
  return '[' + ', '.join(dims) + ']'
