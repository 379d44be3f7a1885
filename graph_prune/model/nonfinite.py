"""The NaN/Inf check of a mask update, as a graph_prune error.

`masking` checks every weight for NaN and Inf inside the update's graph (a
`tf.debugging.Assert` with the sentence 'graph_prune: weight ... holds NaN or
Inf, ...'), so a failing check reaches Python as TensorFlow's
`InvalidArgumentError`. Where graph_prune itself runs the update (an eager
`mask_update`, the training binary's step) `non_finite_as_error` turns it
into `NonFiniteWeightError` with that sentence alone, which the binaries
print as one line.
"""

import contextlib
import re
from typing import Iterator, Optional

import tensorflow as tf

from graph_prune import errors

# Matches the sentence `masking._check_finite` asserts with.
_NON_FINITE = re.compile(r'graph_prune: (.*? holds NaN or Inf[^\]]*)')


def non_finite_message(error: Exception) -> Optional[str]:
  """The sentence of a failed NaN/Inf check in `error`, or None.

  TensorFlow wraps an `Assert`'s data in its own text (and escapes quotes
  when the assertion ran in a function); this recovers our sentence.
  """
  if not isinstance(error, tf.errors.InvalidArgumentError):
    return None
  found = _NON_FINITE.search(str(error.message))
  if not found:
    return None
  # Eagerly the data is printed as a quoted repr; in a function, escaped.
  sentence = found.group(1).replace("\\'", "'").rstrip('"\'\\')
  return sentence + '.'


@contextlib.contextmanager
def non_finite_as_error() -> Iterator[None]:
  """Raises `NonFiniteWeightError` for a failed NaN/Inf check in the body.

  Raises:
    errors.NonFiniteWeightError: naming the weight.
  """
  try:
    yield
  except tf.errors.InvalidArgumentError as e:
    message = non_finite_message(e)
    if message is None:
      raise
    raise errors.NonFiniteWeightError(message) from e
