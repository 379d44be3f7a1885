"""Checking a stripped SavedModel against the pruned one it came from.

`strip_saved_model` runs `verify_signatures` on the staged output before it
renames it into place, so a wrong fold never reaches the output path.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from graph_prune import errors


def verify_signatures(
  original,
  stripped_dir: str,
  keys: Sequence[str],
  rtol: float = 1e-4,
  atol: float = 1e-5,
) -> None:
  """Checks that each stripped signature computes what the original does.

  Runs both on the same random inputs (batch 2 for unknown dimensions);
  signatures with non-numeric inputs or inputs of unknown rank are skipped.

  Raises:
    FoldError: outputs differ (this is a bug of graph_prune).
  """
  stripped = tf.saved_model.load(stripped_dir)
  rng = np.random.RandomState(0)
  for key in keys:
    want_fn = original.signatures[key]
    got_fn = stripped.signatures[key]
    inputs = _random_inputs(want_fn.structured_input_signature[1], rng)
    if inputs is None:
      continue
    want, got = want_fn(**inputs), got_fn(**inputs)
    for name in sorted(want):
      a, b = np.asarray(want[name]), np.asarray(got[name])
      if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
        diff = (
          np.max(np.abs(a - b))
          if a.shape == b.shape
          else f'shape {b.shape} instead of {a.shape}'
        )
        raise errors.FoldError(
          f'The stripped signature {key!r} differs from the input on output '
          f'{name!r} (max difference {diff}); please report this bug.'
        )


def _random_inputs(specs, rng):
  inputs = {}
  for name, spec in specs.items():
    if spec.shape.rank is None:
      return None
    shape = [2 if d is None else d for d in spec.shape]
    if spec.dtype.is_floating:
      value = rng.standard_normal(shape)
    elif spec.dtype.is_integer or spec.dtype.is_bool:
      value = np.zeros(shape)
    else:
      return None
    inputs[name] = tf.constant(value, spec.dtype)
  return inputs
