"""One-shot pruning after dense training: calibration, the prune, fine-tuning.

    examples = oneshot_stage.calibration_examples(data.x_train, 512, seed=0)
    pruned = oneshot_stage.prune(model, examples, hparams, 'sparsegpt')
    run = oneshot_stage.finetune_run(model, pruned, optimizer)

What `graph_prune_train --oneshot=...` and the sweep's one-shot methods do
with a trained model: `graph_prune.prune_oneshot` on a seeded sample of the
training examples (its `max_examples` is the sample's size, so the count asked
for is the count read), then, for the binary, optional steps of training
through the fixed masks (`loop.Run(update_masks=False)`): the one-shot masks
are what is being evaluated, and a magnitude update on the schedule would
replace a wanda or sparsegpt mask by |w|'s.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

from graph_prune.config import hparams as hparams_lib
from graph_prune.model import pruned_model as pruned_lib
from graph_prune.oneshot import api as oneshot_api
from graph_prune.train import errors
from graph_prune.train import loop

OPTIONS = oneshot_api.ONE_SHOT_OPTIONS
# The options that compare single weights within one layer only.
_WITHIN_LAYER = ('wanda', 'sparsegpt')


def calibration_examples(x: np.ndarray, count: int, seed: int) -> np.ndarray:
  """`count` training examples drawn without replacement (all if fewer).

  Args:
    x: the training inputs.
    count: how many, >= 1.
    seed: seeds the draw; the examples keep their order in `x`.

  Returns:
    The examples, `min(count, len(x))` of them.
  """
  if count >= len(x):
    return x
  chosen = np.random.default_rng([seed, 25]).choice(len(x), count, False)
  return x[np.sort(chosen)]


def oneshot_hparams(spec: str, option: str) -> hparams_lib.PruningHParams:
  """`spec` with `prune_option=option`, checked before any training.

  Args:
    spec: the run's hparams; its `prune_option` must be 'weight' (the
      default) or `option`.
    option: one of `OPTIONS`.

  Returns:
    The hparams `prune_oneshot` gets.

  Raises:
    errors.ConfigError: an unknown option, a `prune_option` in `spec` that
      differs, or wanda/sparsegpt with units, blocks or global scope.
  """
  if option not in OPTIONS:
    raise errors.ConfigError(
      f'Unknown oneshot={option!r}; pass one of {", ".join(OPTIONS)} '
      '(or none for gradual pruning).'
    )
  h = hparams_lib.parse_hparams(spec)
  if h.prune_option not in ('weight', option):
    raise errors.ConfigError(
      f'--oneshot={option} conflicts with prune_option={h.prune_option} in '
      f'--hparams; drop prune_option from --hparams (--oneshot sets it), or '
      'drop --oneshot to prune gradually.'
    )
  if option in _WITHIN_LAYER:
    structure = {
      'pruning_scope': (h.pruning_scope, 'layer'),
      'granularity': (h.granularity, 'weight'),
      'block_height': (h.block_height, 1),
      'block_width': (h.block_width, 1),
    }
    for name, (value, wanted) in structure.items():
      if value != wanted:
        raise errors.ConfigError(
          f'--oneshot={option} prunes single weights within each layer, '
          f'but --hparams sets {name}={value}; pass {name}={wanted}, or '
          '--oneshot=weight for structures and global scope.'
        )
  return dataclasses.replace(h, prune_option=option)


def prune(
  model,
  examples: np.ndarray,
  hparams: hparams_lib.PruningHParams,
  log: Optional[Callable[[str], None]] = None,
) -> pruned_lib.PrunedModel:
  """Prunes the trained `model` once from `examples` (`prune_oneshot`).

  Args:
    model: the trained Keras model; under sparsegpt its weights change.
    examples: the calibration inputs (e.g. `calibration_examples`).
    hparams: from `oneshot_hparams`.
    log: called with one line per pruned weight (sparsity and relative
      reconstruction error), when the option reports them.

  Returns:
    The `PrunedModel`, masks set.
  """
  pruned = oneshot_api.prune_oneshot(
    model, examples, hparams, max_examples=len(examples)
  )
  for layer in pruned.report.oneshot if log else ():
    log(
      f'{hparams.prune_option} {layer.name}: sparsity {layer.sparsity:.4f}, '
      f'reconstruction error {layer.error:.4f} ({layer.rows} rows)'
    )
  return pruned


def wrap(model, hparams: hparams_lib.PruningHParams):
  """`model` wrapped as `prune` wraps it, masks not computed.

  For restoring a checkpoint of a pruned run: the same variables as the
  `PrunedModel` of `prune` (`prune_oneshot` wraps the model with
  `apply_pruning` under prune_option=weight).
  """
  return pruned_lib.apply_pruning(
    model, dataclasses.replace(hparams, prune_option='weight')
  )


def finetune_run(model, pruned, optimizer, strategy=None) -> loop.Run:
  """The run that trains `model` through `pruned`'s fixed masks.

  The optimizer keeps its step (and state) from dense training, so steps and
  checkpoints continue where dense training stopped.
  """
  return loop.Run(model, pruned, optimizer, strategy, update_masks=False)
