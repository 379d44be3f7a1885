"""What a sweep runs: its methods (`parse_method`) and settings (`SweepConfig`).

A method is KIND_GRANULARITY_SCOPE (see `graph_prune.study.sweep`), e.g.
`oneshot_unit_global` or `gradual_block4x4_layer`; `Method.hparams` is the
pruning spec it stands for. Granularity `unit` masks a pruned unit's bias and
BatchNorm scale and shift with its kernel slice (`unit_params=all`),
`unitkernel` the kernel slice only (`unit_params=kernel`); scope `coupled`
prunes the channels that residual adds and concatenations tie together as
one (`unit_groups=coupled`, one threshold per group).

The GRANULARITY part may instead name a criterion other than |w| (a row of
`CRITERIA`, its `prune_option`): single weights ranked by it, e.g.
`oneshot_sparsegpt_layer` (`prune_oneshot` from calibration data) or
`gradual_first_order_gradient_layer` (masked retraining ranking |w| * g).
A criterion's row says which kinds and scopes it works with.
"""

import dataclasses
import re
from typing import Optional, Tuple

from graph_prune.study import errors
from graph_prune.train import models

SPARSITIES = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
KINDS = ('oneshot', 'gradual')
GRANULARITIES = ('weight', 'unit', 'unitkernel', 'blockHxW')
_UNITS = {'unit': 'all', 'unitkernel': 'kernel'}  # -> unit_params
_BLOCK = re.compile(r'block([1-9][0-9]*)x([1-9][0-9]*)')  # blockHxW
SCOPES = ('layer', 'global', 'coupled')


@dataclasses.dataclass(frozen=True)
class Criterion:
  """A criterion a method may name instead of a magnitude granularity.

  Attributes:
    prune_option: the `prune_option` hparam it sets.
    kinds: the kinds it works with: wanda and sparsegpt prune once from
      calibration data, the gradient saliencies need training between
      mask updates.
    scopes: the scopes it works with (wanda and sparsegpt compare weights
      within a layer only).
  """

  prune_option: str
  kinds: Tuple[str, ...]
  scopes: Tuple[str, ...]


# GRANULARITY part -> criterion; a new criterion is a new row.
CRITERIA = {
  'wanda': Criterion('wanda', ('oneshot',), ('layer',)),
  'sparsegpt': Criterion('sparsegpt', ('oneshot',), ('layer',)),
  'first_order_gradient': Criterion(
    'first_order_gradient', ('gradual',), ('layer', 'global')
  ),
  'second_order_gradient': Criterion(
    'second_order_gradient', ('gradual',), ('layer', 'global')
  ),
}
DEFAULT_METHODS = (
  'oneshot_weight_layer',
  'oneshot_weight_global',
  'oneshot_unit_layer',
  'oneshot_unitkernel_layer',
  'oneshot_unit_global',
  'gradual_weight_layer',
  'gradual_weight_global',
  'gradual_unit_layer',
)


@dataclasses.dataclass(frozen=True)
class Method:
  """How a sweep prunes: kind, granularity and threshold scope."""

  kind: str
  granularity: str
  scope: str

  @property
  def name(self) -> str:
    return f'{self.kind}_{self.granularity}_{self.scope}'

  @property
  def prune_option(self) -> str:
    """The `prune_option` of the method ('weight' ranks |w|)."""
    criterion = CRITERIA.get(self.granularity)
    return criterion.prune_option if criterion else 'weight'

  @property
  def block_dims(self) -> Optional[Tuple[int, int]]:
    """(height, width) for a `blockHxW` granularity, else None."""
    match = _BLOCK.fullmatch(self.granularity)
    return (int(match.group(1)), int(match.group(2))) if match else None

  def hparams(
    self, sparsity: float, schedule_steps: int = 1, frequency: int = 1
  ) -> str:
    """The pruning spec reaching `sparsity` at step `schedule_steps`."""
    blocks = self.block_dims
    if blocks:
      granularity = (
        f'granularity=weight,block_height={blocks[0]},block_width={blocks[1]}'
      )
    elif self.granularity in _UNITS:
      granularity = f'granularity=unit,unit_params={_UNITS[self.granularity]}'
    elif self.granularity in CRITERIA:
      granularity = f'granularity=weight,prune_option={self.prune_option}'
    else:
      granularity = f'granularity={self.granularity}'
    if self.scope == 'coupled':
      scope = 'pruning_scope=layer,unit_groups=coupled'
    else:
      scope = f'pruning_scope={self.scope}'
    return (
      f'name=sweep,target_sparsity={float(sparsity)!r},'
      f'{granularity},{scope},'
      f'do_not_prune=[{models.OUTPUT_LAYER}],'
      f'begin_pruning_step=0,end_pruning_step={schedule_steps},'
      f'sparsity_function_begin_step=0,'
      f'sparsity_function_end_step={schedule_steps},'
      f'pruning_frequency={frequency}'
    )


def parse_method(name: str) -> Method:
  """Parses 'KIND_GRANULARITY_SCOPE', e.g. 'gradual_weight_global'.

  GRANULARITY may hold underscores (a criterion such as
  `first_order_gradient`): KIND is the first part, SCOPE the last.

  Raises:
    errors.SweepConfigError: naming the bad part and the choices.
  """
  parts = name.strip().split('_')
  if len(parts) >= 3:
    parts = [parts[0], '_'.join(parts[1:-1]), parts[-1]]
  valid = len(parts) == 3 and (
    parts[0] in KINDS
    and parts[2] in SCOPES
    and (
      parts[1] in ('weight', *_UNITS, *CRITERIA) or _BLOCK.fullmatch(parts[1])
    )
  )
  if not valid:
    raise errors.SweepConfigError(
      f'Unknown method {name!r}; a method is KIND_GRANULARITY_SCOPE with '
      f'KIND in {KINDS}, GRANULARITY in {GRANULARITIES} (e.g. block4x4) or '
      f'a criterion in {tuple(CRITERIA)}, SCOPE in {SCOPES}, e.g. '
      'gradual_weight_global.'
    )
  kind, granularity, scope = parts
  if scope == 'coupled' and granularity not in _UNITS:
    raise errors.SweepConfigError(
      f'Method {name!r}: scope coupled groups units; use granularity unit '
      f'or unitkernel, e.g. {kind}_unit_coupled.'
    )
  criterion = CRITERIA.get(granularity)
  if criterion and kind not in criterion.kinds:
    raise errors.SweepConfigError(
      f'Method {name!r}: {granularity} works with kind '
      f'{" or ".join(criterion.kinds)} only, e.g. '
      f'{criterion.kinds[0]}_{granularity}_{criterion.scopes[0]}.'
    )
  if criterion and scope not in criterion.scopes:
    raise errors.SweepConfigError(
      f'Method {name!r}: {granularity} works with scope '
      f'{" or ".join(criterion.scopes)} only, e.g. '
      f'{kind}_{granularity}_{criterion.scopes[0]}.'
    )
  return Method(kind, granularity, scope)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The settings of a sweep (the `sparsity_sweep` binary's flags).

  Attributes:
    methods: method names (see `parse_method`).
    sparsities: target sparsities, each in [0, 1).
    seeds: one dense model and one set of rows per seed.
    model: the built-in model.
    data: '' for the embedded digits, an `.npz` or an MNIST IDX folder.
    dense_steps: training steps of the dense model.
    retrain_steps: steps of each gradual (masked) retraining.
    schedule_fraction: the part of `retrain_steps` over which the sparsity
      rises; the rest fine-tunes with fixed masks.
    pruning_frequency: steps between mask updates while retraining.
    batch_size: examples per step.
    learning_rate: Adam's learning rate, for both training and retraining.
    latency_batch: the batch size at which each pruned model's shrunk and
      stripped versions are timed (`graph_prune.shrink`); 0 skips timing
      (multiply-adds are always counted).
    calibration_samples: training examples the one-shot methods read
      (`prune_oneshot`'s calibration data; all when fewer).
  """

  methods: Tuple[str, ...] = DEFAULT_METHODS
  sparsities: Tuple[float, ...] = SPARSITIES
  seeds: Tuple[int, ...] = (0,)
  model: str = 'mlp'
  data: str = ''
  dense_steps: int = 1500
  batch_size: int = 64
  learning_rate: float = 1e-3
  retrain_steps: int = 600
  pruning_frequency: int = 20
  schedule_fraction: float = 0.6
  latency_batch: int = 256
  calibration_samples: int = 512

  def __post_init__(self):
    for name in self.methods:
      parse_method(name)
    if not self.methods or not self.sparsities or not self.seeds:
      raise errors.SweepConfigError(
        'methods, sparsities and seeds must each name at least one value.'
      )
    for s in self.sparsities:
      if not 0.0 <= s < 1.0:
        raise errors.SweepConfigError(
          f'Sparsity {s} is outside [0, 1); pass e.g. 0.9 for 90%.'
        )
    models.check_name(self.model)
    for name in (
      'dense_steps',
      'retrain_steps',
      'pruning_frequency',
      'batch_size',
      'calibration_samples',
    ):
      if getattr(self, name) < 1:
        raise errors.SweepConfigError(
          f'{name}={getattr(self, name)}; pass a value >= 1.'
        )
    if not 0.0 < self.schedule_fraction <= 1.0:
      raise errors.SweepConfigError(
        f'schedule_fraction={self.schedule_fraction} is outside (0, 1].'
      )

  @property
  def schedule_steps(self) -> int:
    """The step the retraining schedule reaches its target at."""
    steps = max(1, int(round(self.retrain_steps * self.schedule_fraction)))
    # The last update must fall on this step: a multiple of the frequency.
    return max(self.pruning_frequency, steps - steps % self.pruning_frequency)
