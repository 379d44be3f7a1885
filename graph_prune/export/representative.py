"""Representative inputs for TFLite quantization and checks.

    x = representative_inputs('train.npz')     # or an array, or a Dataset

Full-integer quantization calibrates activation ranges on example inputs,
and every TFLite export is checked against the float model on inputs; both
take what users have at hand: an array, a `tf.data.Dataset` of input batches
(labels ignored), or an `.npz` file in the training binary's format.
"""

import os

import numpy as np
import tensorflow as tf

from graph_prune import errors

# At most this many examples are used.
MAX_EXAMPLES = 512
# The .npz keys tried for representative inputs, in order (the training
# binary's format has x_train).
_NPZ_KEYS = ('x_train', 'x', 'inputs')


def representative_inputs(data) -> np.ndarray:
  """Representative inputs as one array of examples (batch first).

  Args:
    data: an array of inputs; a `tf.data.Dataset` of input batches (or of
      (inputs, labels) batches, whose inputs are used); or the path of an
      `.npz` holding `x_train` (the training binary's format), `x` or
      `inputs`. Integer images are scaled to [0, 1] as the training binary
      scales them.

  Returns:
    A float32 array, at most `MAX_EXAMPLES` examples.

  Raises:
    RepresentativeDataError: the path is missing or unreadable, the .npz has
      no known key, or the data is empty.
  """
  if isinstance(data, (str, os.PathLike)):
    data = _load_npz(os.fspath(data))
  elif isinstance(data, tf.data.Dataset):
    batches, count = [], 0
    for batch in data:
      if isinstance(batch, (tuple, list)):
        batch = batch[0]
      batches.append(np.asarray(batch))
      count += len(batches[-1])
      if count >= MAX_EXAMPLES:
        break
    data = np.concatenate(batches) if batches else np.zeros((0,))
  array = np.asarray(data)
  if array.ndim == 0 or len(array) == 0:
    raise errors.RepresentativeDataError(
      f'Representative data is empty (shape {list(array.shape)}); pass at '
      'least one input example, batch dimension first.'
    )
  if np.issubdtype(array.dtype, np.integer):
    array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
  return array[:MAX_EXAMPLES].astype(np.float32)


def _load_npz(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise errors.RepresentativeDataError(
      f'Representative data file {path!r} does not exist; pass an .npz with '
      f'one of {", ".join(_NPZ_KEYS)} (e.g. the dataset file of the '
      'training binary).'
    )
  try:
    with np.load(path) as npz:
      key = next((k for k in _NPZ_KEYS if k in npz.files), None)
      if key is None and len(npz.files) == 1:
        key = npz.files[0]
      if key is None:
        raise errors.RepresentativeDataError(
          f'Representative data file {path!r} has arrays {npz.files} but '
          f'none of {", ".join(_NPZ_KEYS)}; name the inputs x_train.'
        )
      return npz[key]
  except (OSError, ValueError) as e:
    if isinstance(e, errors.RepresentativeDataError):
      raise
    raise errors.RepresentativeDataError(
      f'Representative data file {path!r} is not a readable .npz ({e}); '
      'write it with numpy.savez(path, x_train=inputs).'
    ) from e
