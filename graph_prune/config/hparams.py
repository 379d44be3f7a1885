"""Pruning hyperparameters: contrib-compatible spec strings, parsed and checked.

A spec is what `tf.contrib.model_pruning.get_pruning_hparams().parse(spec)`
took in TF1, so an old string keeps parsing and meaning the same:

    name=cifar10_pruning,begin_pruning_step=10000,end_pruning_step=100000,
    target_sparsity=0.9,weight_sparsity_map=[conv1:0.8,.*kernel:0.6]

Grammar (contrib's `HParams.parse`, extended where contrib could not parse):
  * clauses `name=value` separated by commas;
  * a list value is `[a,b,c]`; commas inside `()`, `[]` or `{}` and escaped
    characters belong to the element, so regexes such as `conv[0-9]{1,2}`
    work (contrib rejected them);
  * the type comes from the default: an int may be given for a float, a float
    for an int is an error; bools take true/false/True/False/1/0;
  * map entries are `regex:value`, split on the last ':' (so `(?:...)` works).
  Contrib's indexed assignment `name[0]=value` is not supported.

Every check happens when a spec is parsed or a `PruningHParams` built, so
traced code never meets a bad value: here each value's type, in
`hparams_rules` what the typed values may be (ranges, choices, entries,
combinations), in `hparams_syntax` the grammar.
"""

import dataclasses
import difflib
import re
from typing import Any, Optional, Tuple

from graph_prune import errors
from graph_prune.config import hparams_rules as rules
from graph_prune.config import hparams_syntax as syntax


@dataclasses.dataclass(frozen=True)
class WeightSettings:
  """Pruning settings resolved for one weight by name.

  Attributes:
    target_sparsity: the sparsity this weight reaches at the schedule's end.
    block_dims: (height, width) of the pruning blocks; -1 is a whole dimension.
    has_own_target: True when `weight_sparsity_map` named this weight; such a
      weight is pruned on its own even under `pruning_scope=global`.
  """

  target_sparsity: float
  block_dims: Tuple[int, int]
  has_own_target: bool


@dataclasses.dataclass(frozen=True)
class PruningHParams:
  """All pruning hyperparameters, with contrib's names and defaults.

  Contrib's hparams (see contrib `get_pruning_hparams`):

  Attributes:
    name: name scope of the pruning variables and summaries.
    begin_pruning_step: first step at which masks may update (>= 0).
    end_pruning_step: last step at which masks may update; -1 never stops.
    weight_sparsity_map: `regex:sparsity` entries giving some weights their
      own target sparsity (regex searched in the weight's name).
    block_dims_map: `regex:HxW` entries giving some weights their own block.
    threshold_decay: EMA factor of the threshold, in [0, 1).
    pruning_frequency: minimum number of steps between two mask updates.
    nbins: histogram bins of `threshold_method=histogram`.
    block_height: rows per block; -1 means the whole dimension.
    block_width: columns per block; -1 means the whole dimension.
    block_pooling_function: 'AVG' or 'MAX' pooling of |w| inside a block.
    initial_sparsity: sparsity at the schedule's begin, in [0, 1).
    target_sparsity: sparsity at the schedule's end, in [0, 1).
    sparsity_function_begin_step: first step of the schedule (>= 0).
    sparsity_function_end_step: last step of the schedule (> begin).
    sparsity_function_exponent: exponent of the polynomial schedule (> 0).
    use_tpu: accepted for compatibility, has no effect.

  graph_prune's additions (their defaults keep contrib's behaviour):

  Attributes:
    do_not_prune: regexes; a weight whose name matches one stays dense.
    pruning_scope: 'layer' (one threshold per weight) or 'global' (one
      threshold over all weights without their own map target).
    granularity: 'weight' (single weights or blocks) or 'unit' (whole output
      units: slices along a kernel's last axis, ranked by L2 norm).
    sparsity_m_by_n: None, or (N, M): at most N non-zeros in every M
      consecutive weights along the input axis (axis -2). Written `N:M`.
    threshold_method: 'exact' (exactly round(s * n) pruned, ties broken by
      index) or 'histogram' (older contrib's histogram CDF with `nbins`).
    unit_params: with `granularity=unit`, 'all' also masks a pruned unit's
      own bias and BatchNorm scale and shift (found by following the
      kernel's output, `passes/channel_groups.py`), so the unit outputs
      exactly activation(0) and `shrink` can remove it; 'kernel' masks the
      kernel slice only.
    unit_groups: with `granularity=unit`, 'none' scores each kernel's units
      on their own; 'coupled' scores the channels that residual adds,
      concatenations and depthwise convs tie together jointly (the L2 norm
      over every member's slice) and prunes a channel in every member at
      once, so that `shrink` can remove it.

  google-research `model_pruning`'s additions (same names and defaults, so
  its spec strings parse and mean the same):

  Attributes:
    prune_option: what masks rank: 'weight' (|w|, contrib's), or
      'first_order_gradient' / 'second_order_gradient' (|w| * g, g a
      saliency of the weight's movement between update calls; see
      `masks/saliency.py`).
    gradient_decay_rate: d of the saliency's EMA,
      g <- d * g + (1 - d) * l2_normalize(movement), in [0, 1].
  """

  name: str = 'model_pruning'
  begin_pruning_step: int = 0
  end_pruning_step: int = -1
  weight_sparsity_map: Tuple[str, ...] = ()
  block_dims_map: Tuple[str, ...] = ()
  threshold_decay: float = 0.0
  pruning_frequency: int = 10
  nbins: int = 256
  block_height: int = 1
  block_width: int = 1
  block_pooling_function: str = 'AVG'
  initial_sparsity: float = 0.0
  target_sparsity: float = 0.5
  sparsity_function_begin_step: int = 0
  sparsity_function_end_step: int = 100
  sparsity_function_exponent: float = 3.0
  use_tpu: bool = False
  do_not_prune: Tuple[str, ...] = ()
  pruning_scope: str = 'layer'
  granularity: str = 'weight'
  sparsity_m_by_n: Optional[Tuple[int, int]] = None
  threshold_method: str = 'exact'
  unit_params: str = 'all'
  unit_groups: str = 'none'
  prune_option: str = 'weight'
  gradient_decay_rate: float = 0.99

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = _coerce(field.name, getattr(self, field.name))
      object.__setattr__(self, field.name, value)
    _validate(self)

  @property
  def block_dims(self) -> Tuple[int, int]:
    """The default block (height, width)."""
    return (self.block_height, self.block_width)

  def to_string(self, only_changed: bool = False) -> str:
    """Writes the spec string that `parse_hparams` turns back into `self`.

    Args:
      only_changed: write only the hparams that differ from their default.

    Returns:
      A comma-separated `name=value` spec.
    """
    clauses = []
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if only_changed and value == field.default:
        continue
      clauses.append(f'{field.name}={_format_value(field.name, value)}')
    return ','.join(clauses)

  def weight_settings(self, weight_name: str) -> WeightSettings:
    """Resolves the per-weight maps for one weight.

    Args:
      weight_name: the weight's name, searched by each map entry's regex.

    Returns:
      The weight's `WeightSettings`.

    Raises:
      WeightMatchError: if several entries of one map match the weight.
    """
    target = _match_map(
      'weight_sparsity_map', self.weight_sparsity_map, weight_name
    )
    block = _match_map('block_dims_map', self.block_dims_map, weight_name)
    return WeightSettings(
      target_sparsity=(
        self.target_sparsity
        if target is None
        else syntax.parse_map_sparsity(target)
      ),
      block_dims=(
        self.block_dims
        if block is None
        else syntax.parse_block_dims('block_dims_map', block)
      ),
      has_own_target=target is not None,
    )

  def unmatched_map_entries(self, weight_names) -> Tuple[str, ...]:
    """Map entries (of both maps) that match none of `weight_names`."""
    names = tuple(weight_names)
    unmatched = []
    for entry in self.weight_sparsity_map + self.block_dims_map:
      regex = syntax.split_entry('map', entry)[0]
      if not any(re.search(regex, n) for n in names):
        unmatched.append(entry)
    return tuple(unmatched)


_FIELDS = {f.name: f for f in dataclasses.fields(PruningHParams)}
_LIST_FIELDS = rules.LIST_FIELDS


def _kind(name: str) -> type:
  """The scalar type of an hparam, taken from its default."""
  if name in _LIST_FIELDS:
    return list
  if name == 'sparsity_m_by_n':
    return tuple
  return type(_FIELDS[name].default)


def parse_hparams(
  spec: str = '', base: Optional[PruningHParams] = None
) -> PruningHParams:
  """Parses a contrib-style hparams spec string.

  Args:
    spec: `name=value` clauses separated by commas, e.g.
      `'target_sparsity=0.9,begin_pruning_step=1000'`. Empty gives defaults.
    base: the hparams the spec overrides; defaults to `PruningHParams()`.

  Returns:
    A validated, frozen `PruningHParams`.

  Raises:
    HParamsError: (a ValueError) with the hparam, the value and the rule,
      for any malformed, unknown, repeated, mistyped or out-of-range value.
  """
  if not isinstance(spec, str):
    raise errors.HParamTypeError(
      f'The hparams spec must be a string, got {type(spec).__name__} '
      f'{spec!r}; write it as "name=value,name=value".'
    )
  values = {}
  for name, raw in syntax.split_clauses(spec):
    if name not in _FIELDS:
      raise errors.UnknownHParamError(
        f'Unknown hparam {syntax.excerpt(name)} in '
        f'{syntax.excerpt(spec, spec.find(name))}{_did_you_mean(name)}'
      )
    if name in values:
      raise errors.HParamSyntaxError(
        f'Hparam {name!r} is given twice in {syntax.excerpt(spec)}; give it '
        'once.'
      )
    values[name] = syntax.parse_value(name, _kind(name), raw)
  base = base if base is not None else PruningHParams()
  return dataclasses.replace(base, **values)


def _did_you_mean(name: str) -> str:
  close = difflib.get_close_matches(name, list(_FIELDS), n=1, cutoff=0.6)
  if close:
    return f'; did you mean {close[0]!r}?'
  return f'; known hparams are {", ".join(sorted(_FIELDS))}.'


def _coerce(name: str, value: Any):
  """Normalizes a Python value given to the dataclass to the field's type."""
  kind = _kind(name)
  if kind is list:
    if isinstance(value, str):
      raise errors.HParamTypeError(
        f'Hparam {name!r} takes a list of strings, got the string '
        f'{value!r}; pass [{value!r}] or a tuple.'
      )
    if not isinstance(value, (list, tuple)) or not all(
      isinstance(v, str) for v in value
    ):
      raise errors.HParamTypeError(
        f'Hparam {name!r} takes a list of strings, got {value!r}.'
      )
    return tuple(v for v in value if v)
  if name == 'sparsity_m_by_n':
    if value is None or value == '':
      return None
    if isinstance(value, str):
      return syntax.parse_m_by_n(value)
    if (
      isinstance(value, (tuple, list))
      and len(value) == 2
      and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
      return tuple(value)
    raise errors.HParamTypeError(
      f'Hparam sparsity_m_by_n takes "N:M" or a pair of ints, got {value!r}.'
    )
  if kind is bool:
    if isinstance(value, bool):
      return value
  elif kind is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return syntax.check_int64(name, value)
  elif kind is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif isinstance(value, str):
    return value
  raise errors.HParamTypeError(
    f'Hparam {name!r} takes a {kind.__name__}, got {type(value).__name__} '
    f'{value!r}.'
  )


def _validate(h: PruningHParams):
  """Checks `hparams_rules` on `h`; raises HParamValueError naming the value."""

  def fail(name, rule):
    raise errors.HParamValueError(
      f'Hparam {name}={_format_value(name, getattr(h, name))} is invalid: '
      f'{rule}.'
    )

  rules.check(h, fail)


def _match_map(field: str, entries, weight_name: str) -> Optional[str]:
  matches = [
    e
    for e in entries
    if re.search(syntax.split_entry(field, e)[0], weight_name)
  ]
  if len(matches) > 1:
    raise errors.WeightMatchError(
      f'Weight {weight_name!r} is matched by {len(matches)} entries of '
      f'{field}: {matches}; make the regexes exclusive (e.g. anchor them '
      'with ^ and $).'
    )
  return matches[0] if matches else None


def _format_value(name: str, value) -> str:
  if name in _LIST_FIELDS:
    return '[' + ','.join(value) + ']'
  if name == 'sparsity_m_by_n':
    return '' if value is None else f'{value[0]}:{value[1]}'
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, float):
    return repr(value)
  return str(value)
