"""`prune_oneshot`: prune a trained model once, from calibration data.

    pruned = graph_prune.prune_oneshot(
        model, x_calibration, 'prune_option=sparsegpt,target_sparsity=0.5')
    pruned.report.oneshot      # per weight: sparsity, reconstruction error
    graph_prune.export_saved_model(pruned, '/tmp/model')

What big-model users do (SparseGPT, Wanda): no training loop and no
schedule, one pass over a few hundred calibration samples. The model is
wrapped by `apply_pruning` as for gradual pruning (same masks, same naming,
same strip, shrink and export), then its layers are pruned in order
(`layers.prune_layers`). `prune_option`:
  * `weight`: |w|, every structure the masks support (blocks, units, N:M,
    global scope), as one mask update at the schedule's end;
  * `wanda`: |w| * ||x_j||, each output keeps the same fraction of inputs;
  * `sparsegpt`: the layer's output reconstructed from its inputs' Hessian;
    the kept weights change too (the model's own variables are written).
`target_sparsity`, `weight_sparsity_map`, `do_not_prune` and
`sparsity_m_by_n` mean what they mean for gradual pruning; the schedule's
steps are ignored.

Every calibration example is used unless `max_examples` says otherwise.
The statistics are sums over batches, so the activations held at once are
one batch's (`batch_size`), whatever the count; only the inputs themselves
are held whole, as they are run once per group of layers. A cap would only
save that copy of the inputs, and a silent one (TFLite's representative
data keeps its 512) would quietly drop what the caller chose to give.
"""

import dataclasses
from typing import Any, Optional, Sequence, Union

from graph_prune import errors
from graph_prune.config import hparams as hparams_lib
from graph_prune.model import data_inputs
from graph_prune.model import pruned_model
from graph_prune.oneshot import layers

ONE_SHOT_OPTIONS = ('weight', 'wanda', 'sparsegpt')
# Calibration examples run through the model at once, when the caller does
# not say: bounds the activations held, whatever the calibration set's size.
BATCH_SIZE = 64


def prune_oneshot(
  model: Any,
  calibration_data: Any,
  hparams: Union[str, hparams_lib.PruningHParams] = '',
  input_signature: Optional[Sequence[Any]] = None,
  batch_size: Optional[int] = None,
  max_examples: Optional[int] = None,
) -> pruned_model.PrunedModel:
  """Prunes `model` once from `calibration_data`; returns the `PrunedModel`.

  Args:
    model: what `apply_pruning` takes (a Keras model, a `tf.function`...).
    calibration_data: an array, a list of batches, a `tf.data.Dataset` or an
      `.npz`/`.npy` path, as `read_example_inputs` reads it (a dict per
      batch for a model of named inputs).
    hparams: the hparams string or object; `prune_option` picks the method.
    input_signature: the inputs, when `model` does not define them.
    batch_size: calibration examples run through the model at once
      (default `BATCH_SIZE`; a fixed batch dimension of the model wins).
    max_examples: use only the first this many calibration examples;
      None (the default) uses every one (an infinite Dataset is refused).

  Returns:
    The `PrunedModel`, its masks set (and under `sparsegpt` its weights);
    `report.oneshot` holds one `layers.LayerResult` per weight.

  Raises:
    HParamsError: a gradient `prune_option` (it needs training), or
      `wanda`/`sparsegpt` with blocks, units or global scope.
    ExampleDataError: the calibration data is empty, malformed, infinite,
      or does not match the model's inputs (nothing is changed).
    StatisticsError: a layer's calibration inputs hold NaN or Inf (nothing is
      changed).
    OneShotError: a masked weight is read by an op `wanda`/`sparsegpt` do
      not handle yet (`op_rules`), or by two layers (tied embeddings); leave
      it out with `do_not_prune`.
  """
  h = (
    hparams_lib.parse_hparams(hparams) if isinstance(hparams, str) else hparams
  )
  method = h.prune_option
  if method not in ONE_SHOT_OPTIONS:
    raise errors.HParamsError(
      f'prune_option={method} needs training (its saliency follows the '
      'weights between updates); prune_oneshot takes prune_option='
      + '|'.join(ONE_SHOT_OPTIONS)
      + '.'
    )
  pruned = pruned_model.apply_pruning(
    model, dataclasses.replace(h, prune_option='weight'), input_signature
  )
  batches = data_inputs.read_example_inputs(
    calibration_data,
    pruned.input_signature,
    batch_size=batch_size or BATCH_SIZE,
    max_examples=max_examples,
    what='calibration_data',
  )
  if method == 'weight':
    pruned.mask_update(_schedule_end(h))
    results = ()
  else:
    _check_structures(pruned, h, method)
    sparsities = {
      plan.name: float(plan.target_sparsity) for plan in pruned.plans
    }
    results = layers.prune_layers(
      pruned,
      [_positional(b) for b in batches],
      method,
      sparsities,
      h.sparsity_m_by_n,
    )
  pruned.report = dataclasses.replace(pruned.report, oneshot=tuple(results))
  return pruned


def _schedule_end(h) -> int:
  """A step at which every weight's schedule has reached its target."""
  return max(h.sparsity_function_end_step, h.begin_pruning_step, 0)


def _check_structures(pruned, h, method) -> None:
  if h.pruning_scope == 'global':
    raise errors.HParamsError(
      f'prune_option={method} compares weights within each layer; '
      'pruning_scope=global works with prune_option=weight.'
    )
  for plan in pruned.plans:
    s = plan.structure
    if s.granularity != 'weight' or tuple(s.block_dims) != (1, 1):
      raise errors.HParamsError(
        f'prune_option={method} prunes single weights; weight '
        f'{plan.name!r} has blocks or units (block_height, block_width, '
        'granularity): use prune_option=weight for structures.'
      )


def _positional(batch):
  """A batch as the model's positional inputs."""
  if isinstance(batch, tuple):
    return batch
  return (batch,)
