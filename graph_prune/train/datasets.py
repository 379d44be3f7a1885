"""Datasets: the embedded digits, and a user's `.npz` or MNIST IDX folder.

Nothing here downloads anything, ever.

A user's data is checked before anything is built from it: images need at
least one dimension besides the examples' and finite pixels; labels number
the classes 0..K-1 and the model gets K = largest label + 1 outputs, so a
label set where most of those classes have no example (one stray large
label) is refused rather than silently growing the model. Integer images
are divided by the largest value in x_train (255 for MNIST, 16 for the
digits), so they land in [0, 1] whatever their dtype; float images are used
as they are (`data_inputs.scale_like_training`, which also scales an .npz of
this format handed in as TFLite representative data, so calibration sees
what training saw).
"""

import gzip
import os
from typing import NamedTuple
import zipfile
import zlib

import numpy as np

from graph_prune.model import data_inputs
from graph_prune.train import errors

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')

# MNIST's file names; Fashion-MNIST uses the same.
_IDX_FILES = {
  'x_train': 'train-images-idx3-ubyte',
  'y_train': 'train-labels-idx1-ubyte',
  'x_test': 't10k-images-idx3-ubyte',
  'y_test': 't10k-labels-idx1-ubyte',
}
_IDX_DTYPES = {
  0x08: np.dtype('>u1'),
  0x09: np.dtype('>i1'),
  0x0B: np.dtype('>i2'),
  0x0C: np.dtype('>i4'),
  0x0D: np.dtype('>f4'),
  0x0E: np.dtype('>f8'),
}


class Dataset(NamedTuple):
  """A train/test split; images are float32 in [0, 1], labels int32."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray

  @property
  def num_classes(self) -> int:
    return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits() -> Dataset:
  """The embedded 8x8 handwritten digits (1437 train, 360 test images).

  Returns:
    A `Dataset` with images of shape [n, 8, 8] scaled to [0, 1].
  """
  with np.load(os.path.join(_DATA_DIR, 'digits.npz')) as data:
    return Dataset(
      x_train=data['x_train'].astype(np.float32) / 16.0,
      y_train=data['y_train'].astype(np.int32),
      x_test=data['x_test'].astype(np.float32) / 16.0,
      y_test=data['y_test'].astype(np.int32),
    )


def load(path: str = '') -> Dataset:
  """Loads a dataset: the embedded digits, an `.npz`, or an MNIST IDX folder.

  Args:
    path: '' for the embedded digits; a `.npz` file with `x_train, y_train,
      x_test, y_test`; or a folder with MNIST's four IDX files
      (`train-images-idx3-ubyte`, ..., each optionally `.gz`).

  Returns:
    A `Dataset`; integer images are divided by the largest value in
    x_train (255 for MNIST), so they span [0, 1].

  Raises:
    DataError: a missing path, a missing key or file, or a malformed file,
      naming the file and what is wrong.
  """
  if not path:
    return load_digits()
  if os.path.isdir(path):
    return _load_idx_folder(path)
  if not os.path.exists(path):
    raise errors.DataError(
      f'Data path {path!r} does not exist; pass an .npz file, a folder with '
      'the four MNIST IDX files, or nothing for the embedded digits.'
    )
  return _load_npz(path)


def _load_npz(path: str) -> Dataset:
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [k for k in Dataset._fields if k not in data.files]
      if missing:
        raise errors.DataError(
          f'{path}: the .npz lacks {missing}; it must hold x_train, '
          f'y_train, x_test and y_test (it holds {sorted(data.files)}).'
        )
      arrays = {k: data[k] for k in Dataset._fields}
  except errors.DataError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    # A truncated or corrupt archive fails as BadZipFile or zlib.error.
    raise errors.DataError(
      f'{path}: not a readable .npz file ({e}); write it again with '
      'numpy.savez.'
    ) from e
  return _finish(arrays, path)


def _load_idx_folder(folder: str) -> Dataset:
  arrays = {}
  for key, stem in _IDX_FILES.items():
    candidates = [os.path.join(folder, stem + ext) for ext in ('', '.gz')]
    found = [c for c in candidates if os.path.exists(c)]
    if not found:
      raise errors.DataError(
        f'{folder}: missing {stem} (or {stem}.gz); an MNIST folder holds '
        f'{", ".join(_IDX_FILES.values())}.'
      )
    arrays[key] = read_idx(found[0])
  return _finish(arrays, folder)


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (optionally gzipped).

  Args:
    path: the file.

  Returns:
    The array, in native byte order.

  Raises:
    DataError: naming the file and what is wrong with it.
  """
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    # A corrupt gzip stream fails as zlib.error (or gzip's OSError).
    raise errors.DataError(
      f'{path}: cannot be read ({e}); download or unpack it again.'
    ) from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise errors.DataError(
      f'{path}: not an IDX file (the first two bytes must be 0, got '
      f'{raw[:4].hex() or "an empty file"}).'
    )
  dtype = _IDX_DTYPES.get(raw[2])
  if dtype is None:
    raise errors.DataError(
      f'{path}: unknown IDX data type code 0x{raw[2]:02x}.'
    )
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise errors.DataError(
      f'{path}: truncated header ({len(raw)} bytes, {header} needed for '
      f'{ndim} dimensions).'
    )
  shape = tuple(int(d) for d in np.frombuffer(raw, '>u4', ndim, 4))
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(raw) - header != expected:
    raise errors.DataError(
      f'{path}: the header says shape {list(shape)} ({expected} bytes of '
      f'data) but the file holds {len(raw) - header} bytes.'
    )
  return (
    np.frombuffer(raw, dtype, offset=header)
    .reshape(shape)
    .astype(dtype.newbyteorder('='))
  )


def _check_images(x: np.ndarray, name: str, where: str) -> None:
  if x.ndim < 2 or 0 in x.shape[1:]:
    raise errors.DataError(
      f'{where}: {name} has shape {list(x.shape)}; images need a shape '
      '[examples, features...] with at least one feature, e.g. [n, 28, 28] '
      'or [n, 784].'
    )
  if not (
    np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
  ):
    raise errors.DataError(
      f'{where}: {name} has dtype {x.dtype}; images must be integers or floats.'
    )
  if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
    bad = np.argwhere(~np.isfinite(x))[0].tolist()
    raise errors.DataError(
      f'{where}: {name} holds NaN or Inf pixels (first at index {bad}); '
      'replace them (e.g. numpy.nan_to_num) before training.'
    )


def _check_labels(y_train, y_test, where: str) -> None:
  # The model gets largest+1 outputs. A class or two without examples is
  # plausible in a small split; most classes empty means stray labels.
  seen = len(np.union1d(y_train, y_test))
  largest = int(max(y_train.max(), y_test.max()))
  if largest + 1 > 2 * seen:
    raise errors.DataError(
      f'{where}: the largest label is {largest} but only {seen} distinct '
      f'labels occur, so {largest + 1 - seen} of the {largest + 1} classes '
      'the model would get have no example; labels must number the classes '
      '0..K-1 (renumber them, or drop the stray label).'
    )


def _finish(arrays, where: str) -> Dataset:
  for split in ('train', 'test'):
    x, y = arrays[f'x_{split}'], arrays[f'y_{split}']
    if x.ndim == 0 or y.ndim == 0:
      raise errors.DataError(
        f'{where}: x_{split} has shape {list(x.shape)} and y_{split} '
        f'{list(y.shape)}; both need one entry per example.'
      )
    if len(x) != len(y):
      raise errors.DataError(
        f'{where}: x_{split} has {len(x)} examples but y_{split} has {len(y)}.'
      )
    if len(x) == 0:
      raise errors.DataError(f'{where}: x_{split} is empty.')
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
      raise errors.DataError(
        f'{where}: y_{split} must be a vector of non-negative integer class '
        f'labels, got dtype {y.dtype} shape {list(y.shape)}.'
      )
    _check_images(x, f'x_{split}', where)
  if arrays['x_train'].shape[1:] != arrays['x_test'].shape[1:]:
    raise errors.DataError(
      f'{where}: train images have shape {arrays["x_train"].shape[1:]} but '
      f'test images {arrays["x_test"].shape[1:]}.'
    )
  _check_labels(arrays['y_train'], arrays['y_test'], where)
  x_train = arrays['x_train']
  return Dataset(
    x_train=data_inputs.scale_like_training(x_train, x_train),
    y_train=arrays['y_train'].astype(np.int32),
    x_test=data_inputs.scale_like_training(arrays['x_test'], x_train),
    y_test=arrays['y_test'].astype(np.int32),
  )
