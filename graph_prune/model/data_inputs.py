"""Example inputs that users hand in, read once and checked against the model.

    batches = read_example_inputs('train.npz', pruned.__call__.input_signature)
    for batch in batches:         # structured like the signature
      pruned(*batch)

Every place that takes example inputs from a user reads them here: TFLite's
representative data (`export_tflite`, `strip_masks --representative_data`)
and the calibration data of one-shot pruning. So every form is accepted
everywhere, and every mistake is the same one-line `ExampleDataError` naming
the value and the fix. The forms:

  an array           examples, batch first (anything `np.asarray` takes);
  a list of batches  each an array, a dict, or (inputs, labels[, weights]);
  a tf.data.Dataset  batched or unbatched, of inputs or (inputs, labels);
  a dict             {input name: array}, for a model of several inputs (a
                     batch or a Dataset element may be one too, or a list in
                     the inputs' order);
  a path             an `.npz` with `x_train`, `x` or `inputs` (or a single
                     array, or one array per input name), or an `.npy`.

Values. Integer data is never divided by its dtype's maximum. An `.npz` with
`x_train` is the training binary's format (`graph_prune_train --data`): its
integer `x_train` is scaled exactly as that binary scaled it for training,
divided by the largest absolute value in `x_train` (255 for MNIST, 16 for
the embedded digits; `scale_like_training`), so calibration sees what the
model saw. Any other integer data is cast to the model's float input as it
is, which is what the model computes on at inference. Float data is cast to
the input's float dtype.

Checks, against the input signature: which inputs (names, count); each
input's rank and every static dimension (a fixed batch dimension too, by
re-batching); the dtype's kind (a float input takes integer or float data,
an integer input integer data, a bool input bool data); the values: no NaN
or Inf (nor any the cast makes, e.g. 1e39 as float32), integers within the
input's integer type. Also refused: object arrays (e.g. of None), strings,
complex values, empty data, and missing, unreadable or truncated files.

This module reads the forms (files, lists, Datasets, dicts) into one array
per input; what one input takes (its name, dtype kind, shape and values) is
`signature_inputs`, which checks every array read here whatever its form.
"""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.model import signature_inputs as signature

# Defined in signature_inputs; importable from here as before.
input_names = signature.input_names

# At most this many examples are read (the first ones) unless the caller
# passes its own limit (None: every example; one-shot calibration does).
MAX_EXAMPLES = 512
# The .npz keys tried for the inputs, in order; x_train is the training
# binary's format (and is scaled as the binary scales it).
NPZ_KEYS = ('x_train', 'x', 'inputs')
_TRAINING_KEY = 'x_train'


def scale_like_training(images: np.ndarray, x_train: np.ndarray) -> np.ndarray:
  """Images as the training binary feeds them to its model, float32.

  Integer images are divided by the largest absolute value in `x_train`
  (at least 1): 255 for MNIST, 16 for the embedded digits, whatever their
  dtype. Float images are used as they are.

  Args:
    images: images of the dataset (`x_train` or `x_test`).
    x_train: the dataset's training images, which set the scale.

  Returns:
    A float32 array of the shape of `images`.
  """
  if np.issubdtype(images.dtype, np.integer):
    largest = float(max(abs(x_train.max().item()), abs(x_train.min().item())))
    return images.astype(np.float32) / np.float32(max(largest, 1))
  return images.astype(np.float32)


def read_example_inputs(
  data,
  input_signature,
  batch_size: Optional[int] = None,
  max_examples: Optional[int] = MAX_EXAMPLES,
  what: str = 'Example data',
) -> List[Any]:
  """Reads and checks example inputs for a model; returns batches to feed.

  See the module docstring for the forms `data` may take, how integer data
  is cast (never divided by its dtype's maximum; an `.npz` with `x_train` is
  scaled as the training binary scaled it), and what is checked.

  Args:
    data: the example inputs: an array (batch first), a list of batches, a
      batched or unbatched `tf.data.Dataset` of inputs or (inputs, labels),
      a dict {input name: array}, or an `.npz` / `.npy` path.
    input_signature: the model's inputs: a `tf.TensorSpec`, or a structure
      of them (a SavedModel signature's dict, or a `tf.function`'s
      `input_signature`, e.g. `pruned.__call__.input_signature`).
    batch_size: examples per returned batch; None for all in one batch. A
      fixed batch dimension in the signature wins.
    max_examples: read at most this many examples (the first ones); None
      reads every example (an infinite Dataset is then refused).
    what: what the data is, for messages ('Representative data').

  Returns:
    A list of batches, each structured like `input_signature` (a dict for a
    dict signature, a tuple for a tuple, so `model(*batch)`), holding NumPy
    arrays of each input's dtype.

  Raises:
    ExampleDataError: one sentence naming the value, where it is (which
      input, which dimension, which example) and the fix.
  """
  inputs = signature.signature_inputs(input_signature)
  if not inputs:
    raise errors.ExampleDataError(
      f'{what}: the model takes no inputs (input signature '
      f'{input_signature!r}), so there is nothing to feed; pass the model '
      'whose inputs the data is for.'
    )
  reader = _Reader(inputs, what)
  columns = reader.read(data, max_examples)
  fixed = signature.fixed_batch(inputs, what)
  count = len(next(iter(columns.values())))
  size = fixed or batch_size or count
  if count < size and fixed:
    raise errors.ExampleDataError(
      f'{what} has {count} examples but the model takes batches of exactly '
      f'{fixed} (the fixed batch dimension of {inputs[0].label}, '
      f'shape {inputs[0].shape_text()}); pass at least {fixed} examples.'
    )
  stop = count - count % size if fixed else count
  batches = []
  for start in range(0, stop, size):
    flat = [columns[i.name][start : start + size] for i in inputs]
    batches.append(tf.nest.pack_sequence_as(input_signature, flat))
  return batches


class _Reader:
  """Collects the examples of each input, checking every piece read."""

  def __init__(self, inputs: Sequence[signature.SignatureInput], what: str):
    self._inputs = list(inputs)
    self._what = what

  def read(self, data, max_examples: Optional[int]) -> Dict[str, np.ndarray]:
    what = self._what
    if data is None:
      raise errors.ExampleDataError(
        f'{what} is None; pass an array of inputs (batch first), a list of '
        'batches, a tf.data.Dataset or an .npz path.'
      )
    if isinstance(data, (str, os.PathLike)):
      pieces = [(self._load(os.fspath(data)), repr(os.fspath(data)), False)]
    elif isinstance(data, tf.data.Dataset):
      if max_examples is None and _infinite(data):
        raise errors.ExampleDataError(
          f'{what} is an infinite tf.data.Dataset (it repeats without end) '
          'and every example was asked for; take a finite part, e.g. '
          'dataset.take(n), or pass max_examples.'
        )
      pieces = self._elements(data)
    elif isinstance(data, (list, tuple)) and _holds_batches(data):
      pieces = (
        (_inputs_of(item), f'batch {n} of the list', False)
        for n, item in enumerate(data)
      )
    else:
      pieces = [(data, 'the data', False)]
    columns = {i.name: [] for i in self._inputs}
    count, empty = 0, _empty_kind(data)
    for value, where, may_be_example in pieces:
      if max_examples is not None and count >= max_examples:
        break
      left = None if max_examples is None else max_examples - count
      arrays = self._piece(value, where, may_be_example)
      for name, array in arrays.items():
        columns[name].append(array[:left])
        empty = f'{where} has shape {signature.shape_text(array.shape)}'
      count += len(columns[self._inputs[0].name][-1])
    if count == 0:
      raise errors.ExampleDataError(
        f'{what} holds no example ({empty}); pass at least one input '
        'example, batch dimension first.'
      )
    out = {}
    for i in self._inputs:
      shapes = {a.shape[1:] for a in columns[i.name]}
      if len(shapes) > 1:
        listed = ', '.join(
          signature.shape_text(['n', *s]) for s in sorted(shapes, key=str)
        )
        raise errors.ExampleDataError(
          f'{what}: the batches of {i.label} have different shapes '
          f'({listed}); pad or crop them to one shape.'
        )
      out[i.name] = signature.cast_values(
        np.concatenate(columns[i.name]), i, what
      )
    return out

  def _elements(self, dataset):
    for n, element in enumerate(dataset):
      yield _inputs_of(element), f'element {n} of the Dataset', True

  def _load(self, path: str):
    what = self._what
    if not os.path.exists(path):
      raise errors.ExampleDataError(
        f'{what} file {path!r} does not exist; pass an .npz with one of '
        f'{", ".join(NPZ_KEYS)} (e.g. the dataset file of the training '
        'binary) or an .npy of inputs.'
      )
    if os.path.isdir(path):
      raise errors.ExampleDataError(
        f'{what} path {path!r} is a directory; pass an .npz with one of '
        f'{", ".join(NPZ_KEYS)} or an .npy of inputs.'
      )
    try:
      with open(path, 'rb') as f:
        magic = f.read(6)
      if not magic.startswith((b'PK', b'\x93NUMPY')):
        raise self._unreadable(path, 'neither a zip archive nor NumPy format')
      loaded = np.load(path, allow_pickle=False)
      if isinstance(loaded, np.ndarray):
        return loaded
      with loaded as npz:
        return self._npz_inputs(npz, path)
    except errors.ExampleDataError:
      raise
    except ValueError as e:
      if 'allow_pickle' in str(e):
        raise errors.ExampleDataError(
          f'{what} file {path!r} holds an object array (pickled Python '
          'objects), not numbers; save numeric arrays, e.g. '
          'numpy.savez(path, x=inputs.astype(numpy.float32)).'
        ) from e
      raise self._unreadable(path, e) from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      # A truncated or corrupt archive fails as BadZipFile or zlib.error.
      raise self._unreadable(path, e) from e

  def _unreadable(self, path, error):
    reason = ' '.join(str(error).split()) or type(error).__name__
    return errors.ExampleDataError(
      f'{self._what} file {path!r} is not a readable .npz or .npy file '
      f'({reason}); write it again with numpy.savez(path, x=inputs) or '
      'numpy.save.'
    )

  def _npz_inputs(self, npz, path):
    names = [i.name for i in self._inputs]
    key = next((k for k in NPZ_KEYS if k in npz.files), None)
    if key is None and len(names) > 1 and set(names) <= set(npz.files):
      return {name: npz[name] for name in names}
    if key is None and len(npz.files) == 1:
      key = npz.files[0]
    if key is None:
      raise errors.ExampleDataError(
        f'{self._what} file {path!r} has arrays {npz.files} but none of '
        f'{", ".join(NPZ_KEYS)}; name the inputs x_train (or x).'
      )
    array = npz[key]
    spec = self._inputs[0].spec
    if key == _TRAINING_KEY and spec.dtype.is_floating:
      signature.check_kind(
        array, self._inputs[0], f'{path!r} (key {key})', self._what
      )
      # The training binary's format: scaled as it scaled it for training.
      return scale_like_training(array, array)
    return array

  def _piece(self, value, where, may_be_example) -> Dict[str, np.ndarray]:
    """{input name: array of examples} of one batch, dataset element or file."""
    named = self._by_name(value, where)
    arrays, lengths = {}, {}
    for i in self._inputs:
      array = signature.as_array(named[i.name], i, where, self._what)
      signature.check_kind(array, i, where, self._what)
      rank = i.spec.shape.rank
      if may_be_example and rank is not None and array.ndim == rank - 1:
        array = array[None]  # an unbatched Dataset's example
      signature.check_shape(array, i, where, self._what)
      arrays[i.name], lengths[i.name] = array, len(array)
    if len(set(lengths.values())) > 1:
      raise errors.ExampleDataError(
        f'{self._what}: in {where} the inputs have different numbers of '
        f'examples ({", ".join(f"{k} {v}" for k, v in lengths.items())}); '
        'give every input the same batch size.'
      )
    return arrays

  def _by_name(self, value, where) -> Dict[str, Any]:
    names = [i.name for i in self._inputs]
    if isinstance(value, Mapping):
      keys = [str(k) for k in value]
      if len(names) == 1 and len(keys) == 1 and keys != names:
        return {names[0]: next(iter(value.values()))}
      missing = [n for n in names if n not in keys]
      unknown = [k for k in keys if k not in names]
      if missing or unknown:
        raise errors.ExampleDataError(
          f'{self._what}: {where} has inputs {sorted(keys)} but the model '
          f'takes {names}; name the arrays {names}.'
        )
      return {str(k): v for k, v in value.items()}
    if len(names) == 1:
      return {names[0]: value}
    if isinstance(value, (list, tuple)) and len(value) == len(names):
      return dict(zip(names, value))
    raise errors.ExampleDataError(
      f'{self._what}: the model takes {len(names)} inputs {names} but '
      f'{where} is {_kind(value)}; pass a dict {{name: array}} per batch.'
    )


def _holds_batches(data) -> bool:
  """Whether a list is a list of batches, not an array as nested lists."""
  batch_types = (np.ndarray, tf.Tensor, Mapping, tuple)
  return not data or any(isinstance(item, batch_types) for item in data)


def _inputs_of(element):
  """The inputs of a batch or Dataset element: (inputs, labels) -> inputs."""
  if isinstance(element, (tuple, list)) and element:
    return element[0]
  return element


def _kind(value) -> str:
  if isinstance(value, (np.ndarray, tf.Tensor)):
    return f'one array of shape {signature.shape_text(list(value.shape))}'
  return f'a {type(value).__name__}'


def _infinite(dataset) -> bool:
  return bool(dataset.cardinality() == tf.data.INFINITE_CARDINALITY)


def _empty_kind(data) -> str:
  if isinstance(data, tf.data.Dataset):
    return 'the Dataset yields no element'
  return 'an empty list'
