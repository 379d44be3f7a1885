"""Pruning criteria: the importance score of every element of a weight.

A criterion is named (the name is what the `prune_option` hparam will hold)
and looked up in `CRITERIA`. It scores each element of a weight from the
weight and from extra per-weight inputs it declares (`CriterionInput`): a
saliency kept next to the mask, in the weight's shape, or a vector along one
axis, such as the norm of each input feature, broadcast along the others.
Every mask path ranks these scores and nothing else: layer and global scope,
the batched small weights, N:M groups, blocks (which pool the scores), units
and coupled channel groups (whose score is the L2 norm of their slices'
scores). So a new criterion is one new row of `CRITERIA`, and no path can
keep ranking |w| behind its back.

    name                    score      inputs
    magnitude               |w|        none
    first_order_gradient    |w| * g    gradient (the weight's shape)
    second_order_gradient   |w| * g    gradient (the weight's shape)

g is google-research's saliency of the weight's movement between update
calls (`masks/saliency.py`), kept next to the mask; it is >= 0, so
w * g is a signed score of |w| * g. `PRUNE_OPTIONS` maps each value of the
`prune_option` hparam to its row ('weight' is `magnitude`).

The contract of a criterion's `signed` function: given the weight and its
inputs cast to the score dtype (`score_dtype`), inputs broadcastable against
the weight, it returns `s` whose absolute value is the score, computed
element by element (s[i] depends on w[i] and the inputs at i only). Why
signed: the exact selection ignores sign bits (`selection.prune_smallest`),
so elementwise masks hand it `s` and skip a 4-byte |s| pass over the weight
(for `magnitude`, s is the weight itself). Why element by element: the
batched path scores many weights at once on their flat concatenation
(`batched_masks`), inputs flattened alike. A criterion whose scores are
already non-negative just returns them.
"""

import dataclasses
import difflib
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from graph_prune import errors

# Extra inputs of one weight, by `CriterionInput.name` (None: no inputs).
Inputs = Optional[Mapping[str, tf.Tensor]]


class UnknownCriterionError(errors.HParamValueError):
  """A criterion name is not in `CRITERIA`."""


class CriterionInputError(errors.MaskError):
  """A weight's criterion inputs are missing, unknown or of the wrong shape."""


@dataclasses.dataclass(frozen=True)
class CriterionInput:
  """An extra per-weight input a criterion needs at mask time.

  Attributes:
    name: its key in the weight's inputs mapping.
    axis: None if the input has the weight's shape; else the axis of the
      weight (e.g. -2, a Dense or conv kernel's inputs) that a vector input
      runs along, broadcast along every other axis.
  """

  name: str
  axis: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Criterion:
  """A named importance score (see the module docstring for `signed`).

  Attributes:
    name: the criterion's name (the `prune_option` value).
    signed: (weight, inputs) -> s with |s| the score, elementwise; weight
      and inputs are in the score dtype, inputs a dict by name.
    inputs: the extra per-weight inputs it needs.
  """

  name: str
  signed: Callable[[tf.Tensor, Dict[str, tf.Tensor]], tf.Tensor] = (
    dataclasses.field(repr=False)
  )
  inputs: Tuple[CriterionInput, ...] = ()


def _magnitude(weight, unused_inputs):
  # |w|: the weight itself, whose sign the selection ignores.
  return weight


MAGNITUDE = Criterion('magnitude', _magnitude)

# The input name of google-research's saliency g (`masks/saliency.py`).
GRADIENT = 'gradient'


def _weight_times_gradient(weight, inputs):
  # |w| * g: g >= 0 (an EMA of L2-normalized absolute movements).
  return weight * inputs[GRADIENT]


FIRST_ORDER_GRADIENT = Criterion(
  'first_order_gradient',
  _weight_times_gradient,
  inputs=(CriterionInput(GRADIENT),),
)
SECOND_ORDER_GRADIENT = Criterion(
  'second_order_gradient',
  _weight_times_gradient,
  inputs=(CriterionInput(GRADIENT),),
)

# Name -> criterion. A new criterion is a new row.
CRITERIA: Mapping[str, Criterion] = {
  c.name: c for c in (MAGNITUDE, FIRST_ORDER_GRADIENT, SECOND_ORDER_GRADIENT)
}

# Value of the `prune_option` hparam -> criterion (google-research's names).
PRUNE_OPTIONS: Mapping[str, Criterion] = {
  'weight': MAGNITUDE,
  'first_order_gradient': FIRST_ORDER_GRADIENT,
  'second_order_gradient': SECOND_ORDER_GRADIENT,
}

NAMES: Tuple[str, ...] = tuple(CRITERIA)


def resolve(criterion: Union[str, Criterion]) -> Criterion:
  """The criterion of a name in `CRITERIA` (a `Criterion` is returned as is).

  Raises:
    UnknownCriterionError: the name is not in `CRITERIA`.
  """
  if isinstance(criterion, Criterion):
    return criterion
  if not isinstance(criterion, str) or criterion not in CRITERIA:
    close = difflib.get_close_matches(str(criterion), NAMES, n=1)
    hint = f'did you mean {close[0]!r}? ' if close else ''
    raise UnknownCriterionError(
      f'Unknown pruning criterion {criterion!r}; {hint}known criteria: '
      f'{", ".join(NAMES)}.'
    )
  return CRITERIA[criterion]


def score_dtype(weight_dtype) -> tf.DType:
  """The dtype scores and thresholds of a weight are computed in."""
  weight_dtype = tf.as_dtype(weight_dtype)
  return tf.float64 if weight_dtype == tf.float64 else tf.float32


def signed_scores(
  weight: tf.Tensor,
  criterion: Union[str, Criterion] = MAGNITUDE,
  inputs: Inputs = None,
  name: Optional[str] = None,
) -> tf.Tensor:
  """s of the weight's shape in the score dtype, |s| being the score.

  Only for consumers that ignore signs: the exact selection, a sum of
  squares. Others take `scores`.

  Args:
    weight: the weight (static shape).
    criterion: a name in `CRITERIA` or a `Criterion`.
    inputs: the weight's extra inputs, by name, as the criterion declares.
    name: the weight's name, for error messages.

  Raises:
    UnknownCriterionError: an unknown criterion name.
    CriterionInputError: an input is missing, unknown or misshapen.
  """
  criterion = resolve(criterion)
  weight = tf.convert_to_tensor(weight)
  dtype = score_dtype(weight.dtype)
  views = _views(criterion, weight.shape, inputs, dtype, name)
  return criterion.signed(tf.cast(weight, dtype), views)


def scores(
  weight: tf.Tensor,
  criterion: Union[str, Criterion] = MAGNITUDE,
  inputs: Inputs = None,
  name: Optional[str] = None,
) -> tf.Tensor:
  """The non-negative score of every element, in the score dtype.

  Args and Raises: as `signed_scores`.
  """
  return absolute(signed_scores(weight, criterion, inputs, name))


def absolute(signed: tf.Tensor) -> tf.Tensor:
  """The scores of signed scores: the one place a score's sign is dropped."""
  return tf.abs(signed)


def flat_signed_scores(
  flat: tf.Tensor,
  shapes: Sequence[tf.TensorShape],
  criterion: Union[str, Criterion] = MAGNITUDE,
  inputs: Optional[Sequence[Inputs]] = None,
  names: Optional[Sequence[Optional[str]]] = None,
) -> tf.Tensor:
  """`signed_scores` of many weights from their flat concatenation.

  The criterion runs once on all of them (it is elementwise), each input
  broadcast to its weight's shape, flattened and concatenated alike.

  Args:
    flat: the weights, each flattened, concatenated, in the score dtype.
    shapes: each weight's static shape.
    criterion: a name in `CRITERIA` or a `Criterion`.
    inputs: per weight, its extra inputs (None: none for any weight).
    names: the weights' names, for error messages.

  Raises: as `signed_scores`.
  """
  criterion = resolve(criterion)
  inputs = list(inputs) if inputs is not None else [None] * len(shapes)
  names = list(names) if names is not None else [None] * len(shapes)
  views = [
    _views(criterion, shape, given, flat.dtype, name)
    for shape, given, name in zip(shapes, inputs, names)
  ]
  flat_inputs = {
    spec.name: tf.concat(
      [
        tf.reshape(tf.broadcast_to(v[spec.name], shape), [-1])
        for v, shape in zip(views, shapes)
      ],
      0,
    )
    for spec in criterion.inputs
  }
  return criterion.signed(flat, flat_inputs)


def check_inputs(
  criterion: Union[str, Criterion],
  weight_shape,
  inputs: Inputs = None,
  name: Optional[str] = None,
) -> None:
  """Raises unless `inputs` are what `criterion` needs for this weight.

  Adds no op to the graph: only names and static shapes are checked.

  Raises:
    UnknownCriterionError: an unknown criterion name.
    CriterionInputError: an input is missing, unknown or misshapen.
  """
  _view_shapes(resolve(criterion), tf.TensorShape(weight_shape), inputs, name)


def _views(criterion, shape, inputs, dtype, name) -> Dict[str, tf.Tensor]:
  """The weight's inputs, checked, cast to `dtype` and broadcastable to it.

  A vector input along `axis` is reshaped to [1, .., n, .., 1], so the
  criterion's elementwise ops broadcast it without a weight-sized copy.
  """
  shape = tf.TensorShape(shape)
  views = _view_shapes(criterion, shape, inputs, name)
  return {
    key: tf.reshape(tf.cast(inputs[key], dtype), view)
    for key, view in views.items()
  }


def _view_shapes(criterion, shape, inputs, name) -> Dict[str, list]:
  """Per declared input, the shape it is viewed in; raises on bad inputs."""
  given = dict(inputs or {})
  label = f'weight {name!r}' if name else 'the weight'
  declared = {spec.name for spec in criterion.inputs}
  unknown = sorted(set(given) - declared)
  if unknown:
    raise CriterionInputError(
      f'Criterion {criterion.name!r} takes no input {unknown[0]!r} for '
      f'{label}; it takes {sorted(declared) or "none"}.'
    )
  views = {}
  for spec in criterion.inputs:
    if spec.name not in given:
      raise CriterionInputError(
        f'Criterion {criterion.name!r} needs input {spec.name!r} for {label}; '
        "pass it in the weight's criterion inputs."
      )
    if spec.axis is None:
      expected = view = shape.as_list()
    elif not -shape.rank <= spec.axis < shape.rank:
      raise CriterionInputError(
        f'Criterion input {spec.name!r} runs along axis {spec.axis}, which '
        f'{label} of shape {shape} does not have.'
      )
    else:
      axis = spec.axis % shape.rank
      expected = [shape[axis]]
      view = [1] * shape.rank
      view[axis] = shape[axis]
    value = given[spec.name]
    got = tf.TensorShape(
      value.shape if hasattr(value, 'shape') else np.shape(value)
    )
    if got.rank is None or got.as_list() != expected:
      raise CriterionInputError(
        f'Criterion input {spec.name!r} of {label} has shape {got}; the '
        f'criterion {criterion.name!r} needs {tf.TensorShape(expected)}.'
      )
    views[spec.name] = view
  return views
