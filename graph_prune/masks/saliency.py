"""google-research's weight-movement saliency (`prune_option`), as pure math.

    spec = saliency.Saliency(order=1, decay=0.99)
    new = spec.update(weight, state)   # a `State` of new values; no writes

google-research `model_pruning` ranks weights by |w| * g, where g is not a
backprop gradient but an EMA of how much the weight moved between two calls
of the mask update (every call, updating or not):

    first order:   g <- d * g + (1 - d) * l2_normalize(|w - w_old|)
                   w_old <- w
    second order:  g <- d * g + (1 - d) * l2_normalize(|w + w_oo - 2 w_old|)
                   w_oo <- w_old, w_old <- w

`l2_normalize` runs over the whole weight (`tf.math.l2_normalize`, no axis).
g, w_old and w_oo start at zero, so the first call sees |w|. The variables
live with the model (`model/pruned_weights.py`); the update that writes
them is `model/mask_update.py`; the criteria that rank |w| * g are rows of
`criteria.CRITERIA`, taking g as their `criteria.GRADIENT` input.
"""

import dataclasses
from typing import NamedTuple, Optional

import tensorflow as tf

from graph_prune.masks import criteria

# prune_option -> order of the movement (how many old weights are kept).
ORDERS = {'first_order_gradient': 1, 'second_order_gradient': 2}


class State(NamedTuple):
  """A weight's saliency state (variables, or their new values).

  Attributes:
    gradient: g, the weight's shape, in its score dtype.
    old_weight: the weight at the previous call, in its dtype.
    old_old_weight: the weight two calls before (second order only).
  """

  gradient: tf.Tensor
  old_weight: tf.Tensor
  old_old_weight: Optional[tf.Tensor] = None


@dataclasses.dataclass(frozen=True)
class Saliency:
  """The saliency update of one `prune_option`.

  Attributes:
    order: 1 (first_order_gradient) or 2 (second_order_gradient).
    decay: d, `gradient_decay_rate`, in [0, 1].
  """

  order: int
  decay: float

  def __post_init__(self):
    if self.order not in (1, 2):
      raise ValueError(f'Saliency order {self.order!r} must be 1 or 2.')
    if not 0.0 <= self.decay <= 1.0:
      raise ValueError(f'Saliency decay {self.decay!r} must be in [0, 1].')

  def update(self, weight: tf.Tensor, state: State) -> State:
    """The new state after one call: g folds in the movement, weights shift.

    Args:
      weight: the weight's current value.
      state: its current state (values or variables).

    Returns:
      The new `State` (tensors; nothing is written).
    """
    weight = tf.convert_to_tensor(weight)
    dtype = criteria.score_dtype(weight.dtype)
    current = tf.cast(weight, dtype)
    old = tf.cast(_value(state.old_weight), dtype)
    if self.order == 1:
      movement = current - old
      old_old = None
    else:
      old_old_value = _value(state.old_old_weight)
      movement = current + tf.cast(old_old_value, dtype) - 2.0 * old
      old_old = tf.identity(_value(state.old_weight))
    normalized = tf.math.l2_normalize(tf.abs(movement))
    gradient = tf.cast(_value(state.gradient), dtype)
    gradient = self.decay * gradient + (1.0 - self.decay) * normalized
    return State(gradient, tf.identity(weight), old_old)


def for_option(prune_option: str, decay: float) -> Optional[Saliency]:
  """The saliency a `prune_option` keeps, or None ('weight' keeps none)."""
  order = ORDERS.get(prune_option)
  return None if order is None else Saliency(order, decay)


def _value(x):
  return x.read_value() if isinstance(x, tf.Variable) else x
