"""The rules a `PruningHParams` must follow, checked once when it is built.

    rules.check(h, fail)   # fail(name, rule) raises HParamValueError

`hparams` turns a spec string or Python values into typed fields; this
module holds what those typed values may be: contrib's rule for each scalar
(ranges, choices, the end step after the begin step), that every map entry
and `do_not_prune` regex parses and compiles, and the settings that cannot
be combined (unit pruning or N:M with blocks, ...). They are apart from the
fields and their parsing because they change for different reasons: a new
hparam adds a field there and, here, only the rule it needs.

A rule reports a violation through `fail(name, rule)`, given by `hparams`,
which writes the offending value back in spec syntax; the first violation
ends the check. Entry-level errors (a malformed map entry, a regex that does
not compile) are raised by `hparams_syntax` as it parses them.
"""

import dataclasses
import math
import re
from typing import Callable, NoReturn

from graph_prune.config import hparams_syntax as syntax

# fail(name, rule): raises the error naming hparam `name` and the `rule` it
# breaks ("it must be >= 0").
Fail = Callable[[str, str], NoReturn]

NAME_RE = re.compile(r'^[A-Za-z0-9_.][A-Za-z0-9_.\-/]*$')
# The hparams whose value is a list of regex entries.
LIST_FIELDS = ('weight_sparsity_map', 'block_dims_map', 'do_not_prune')
# The hparams that take one of a few strings, and those strings.
CHOICES = {
  'block_pooling_function': ('AVG', 'MAX'),
  'pruning_scope': ('layer', 'global'),
  'granularity': ('weight', 'unit'),
  'threshold_method': ('exact', 'histogram'),
  'unit_params': ('all', 'kernel'),
  'unit_groups': ('none', 'coupled'),
  # google-research's criteria (`criteria.PRUNE_OPTIONS` maps each to one),
  # and the one-shot methods of `prune_oneshot` (`oneshot/api.py`).
  'prune_option': (
    'weight',
    'first_order_gradient',
    'second_order_gradient',
    'wanda',
    'sparsegpt',
  ),
}


def check(h, fail: Fail) -> None:
  """Checks every rule on `h` (a `PruningHParams`), in a fixed order.

  Args:
    h: the hparams, their fields already of their types.
    fail: called with (hparam name, rule) at the first broken rule; raises.

  Raises:
    HParamsError: from `fail`, or from `hparams_syntax` for a map entry or
      regex that does not parse.
  """
  check_ranges(h, fail)
  check_lists(h, fail)
  check_combinations(h, fail)


def check_ranges(h, fail: Fail) -> None:
  """contrib's rule for each scalar hparam on its own."""
  for field in dataclasses.fields(h):
    value = getattr(h, field.name)
    if isinstance(value, float) and not math.isfinite(value):
      fail(field.name, 'it must be a finite number')
  if not NAME_RE.match(h.name):
    fail(
      'name',
      'it must be a non-empty name scope of letters, digits and '
      '"_.-/" (no commas or brackets)',
    )
  if h.begin_pruning_step < 0:
    fail('begin_pruning_step', 'it must be >= 0')
  if h.end_pruning_step != -1 and h.end_pruning_step < h.begin_pruning_step:
    fail(
      'end_pruning_step',
      f'it must be -1 (never stop) or >= '
      f'begin_pruning_step={h.begin_pruning_step}: the end step is before '
      'the begin step',
    )
  if not 0.0 <= h.gradient_decay_rate <= 1.0:
    fail('gradient_decay_rate', 'it must be in [0, 1]')
  if not 0.0 <= h.threshold_decay < 1.0:
    fail('threshold_decay', 'it must be in [0, 1)')
  if h.pruning_frequency < 1:
    fail('pruning_frequency', 'it must be >= 1')
  if h.nbins < 2:
    fail('nbins', 'it must be >= 2')
  for name in ('block_height', 'block_width'):
    if getattr(h, name) < 1 and getattr(h, name) != -1:
      fail(name, 'it must be >= 1, or -1 for the whole dimension')
  for name in ('initial_sparsity', 'target_sparsity'):
    if not 0.0 <= getattr(h, name) < 1.0:
      fail(name, 'it must be in [0, 1)')
  if h.sparsity_function_begin_step < 0:
    fail('sparsity_function_begin_step', 'it must be >= 0')
  if h.sparsity_function_end_step <= h.sparsity_function_begin_step:
    fail(
      'sparsity_function_end_step',
      'it must be > '
      f'sparsity_function_begin_step={h.sparsity_function_begin_step}',
    )
  if not h.sparsity_function_exponent > 0:
    fail('sparsity_function_exponent', 'it must be > 0 (1 is linear)')
  for name, choices in CHOICES.items():
    if getattr(h, name) not in choices:
      fail(name, f'it must be one of {", ".join(choices)}')


def check_lists(h, fail: Fail) -> None:
  """Every map entry and do_not_prune regex parses and compiles."""
  for entry in h.weight_sparsity_map:
    syntax.check_regex(
      'weight_sparsity_map',
      syntax.split_entry('weight_sparsity_map', entry)[0],
      entry,
    )
    syntax.parse_map_sparsity(entry)
  for entry in h.block_dims_map:
    syntax.check_regex(
      'block_dims_map', syntax.split_entry('block_dims_map', entry)[0], entry
    )
    syntax.parse_block_dims('block_dims_map', entry)
  for regex in h.do_not_prune:
    syntax.check_regex('do_not_prune', regex, regex)
  for name in LIST_FIELDS:
    for entry in getattr(h, name):
      top = syntax.top_level(entry)
      if entry != entry.strip() or top is None or ',' in top:
        fail(
          name,
          f'entry {entry!r} must have balanced (), [] and {{}}, and '
          'no surrounding spaces or commas outside brackets',
        )


def check_combinations(h, fail: Fail) -> None:
  """Settings that cannot be combined (unit or N:M with blocks, ...)."""
  uses_blocks = h.block_dims != (1, 1) or any(
    syntax.parse_block_dims('block_dims_map', e) != (1, 1)
    for e in h.block_dims_map
  )
  if h.granularity == 'unit' and uses_blocks:
    fail(
      'granularity',
      'unit pruning cannot be combined with blocks '
      '(block_height, block_width, block_dims_map); use one of them',
    )
  if h.unit_params != 'all' and h.granularity != 'unit':
    fail(
      'unit_params',
      "a unit's parameters are masked only when whole units are pruned; "
      'add granularity=unit or drop unit_params',
    )
  if h.unit_groups == 'coupled' and h.granularity != 'unit':
    fail(
      'unit_groups',
      'coupled groups are groups of units; add granularity=unit',
    )
  if h.sparsity_m_by_n is not None:
    n, m = h.sparsity_m_by_n
    if not 1 <= n < m:
      fail('sparsity_m_by_n', 'N:M needs 1 <= N < M, e.g. 2:4')
    conflicts = []
    if uses_blocks:
      conflicts.append('blocks')
    if h.granularity != 'weight':
      conflicts.append(f'granularity={h.granularity}')
    if h.pruning_scope != 'layer':
      conflicts.append(f'pruning_scope={h.pruning_scope}')
    if h.weight_sparsity_map:
      conflicts.append('weight_sparsity_map')
    if conflicts:
      fail(
        'sparsity_m_by_n',
        "N:M sparsity fixes each weight's pattern and "
        f'cannot be combined with {", ".join(conflicts)}; drop one',
      )
