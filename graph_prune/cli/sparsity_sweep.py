"""The classic pruning study on one trained model: one-shot vs gradual pruning.

Usage:
  sparsity_sweep [--out_dir=DIR] [--methods=M1,M2,...] [--sparsities=K1,K2,...]
      [--seeds=0,1,2] [--model=mlp|cnn|lstm|rescnn] [--data=PATH]
      [--dense_steps=N]
      [--retrain_steps=N] [--schedule_fraction=F] [--pruning_frequency=N]
      [--batch_size=B] [--learning_rate=LR] [--latency_batch=B]
      [--calibration_samples=N]
  (or tools/sparsity_sweep ...)

Trains the dense 1000-1000-500-200 MLP on the embedded digits (one per seed),
then prunes it to each sparsity k in 0, 25, 50, 60, 70, 80, 90, 95, 97, 99%
with each method:

  oneshot_weight_layer   once, no retraining; smallest |w| per layer
  oneshot_weight_global  once; one threshold over all layers
  oneshot_unit_layer     once; whole units (L2 of a unit's weights) per layer,
                         with their biases and BatchNorm scale and shift
  oneshot_unitkernel_layer  the same, kernel slices only (biases stay)
  oneshot_unit_global    once; units, one threshold over all layers
  gradual_weight_layer   masked retraining while contrib's schedule raises the
  gradual_weight_global  sparsity (any KIND_GRANULARITY_SCOPE is accepted)
  gradual_unit_layer     masked retraining, whole units per layer

and, on request (--methods), other criteria of single weights in place of
the granularity:

  oneshot_wanda_layer       once (graph_prune.prune_oneshot, no retraining):
                            |w| * ||x|| from --calibration_samples training
                            examples, the same fraction of every output's
                            inputs
  oneshot_sparsegpt_layer   once: SparseGPT, each layer's output
                            reconstructed, the kept weights updated
  gradual_first_order_gradient_layer   masked retraining ranking |w| * g,
                            g the EMA of the weight's movement between
                            steps (google-research's prune_option; also
                            _global, and second_order_gradient)

Coupled channel groups (unit_groups=coupled: the channels residual adds and
concatenations tie, pruned together) are the scope coupled, e.g.
--model=rescnn --methods=gradual_unit_layer,gradual_unit_coupled.

Block sparsity (contrib's block_height x block_width, blocks ranked by mean
|w|) is the granularity blockHxW, e.g. --methods=gradual_block4x4_layer.

Each pruned model is also shrunk (zero units removed, graph_prune.shrink):
the table and files give its multiply-adds beside the stripped model's and
the shrunk / stripped latency at --latency_batch (0: not timed), so the
weight-vs-unit comparison shows what each buys in speed.

The output layer stays dense. Writes OUT_DIR/sweep.csv and sweep.json
(sparsity, non-zeros, accuracy and loss per method and k, averaged over the
seeds; the JSON also holds every seed's rows, the Pareto frontier and where
each method drops by more than 2 points) and, with matplotlib installed,
accuracy.png, loss.png and pareto.png. About four minutes per seed with the
defaults on two cores.
"""

import os

from absl import flags

from graph_prune.cli import runner
from graph_prune.study import config as config_lib
from graph_prune.study import errors
from graph_prune.study import plots
from graph_prune.study import results
from graph_prune.study import sweep
from graph_prune.train import models

_defaults = config_lib.SweepConfig()
_OUT_DIR = flags.DEFINE_string(
  'out_dir', 'sweep_results', 'Directory of the tables and plots.'
)
_METHODS = flags.DEFINE_list(
  'methods', list(_defaults.methods), 'Methods, KIND_GRANULARITY_SCOPE.'
)
_SPARSITIES = flags.DEFINE_list(
  'sparsities',
  [f'{100 * k:g}' for k in _defaults.sparsities],
  'Target sparsities in percent, each in [0, 100).',
)
_SEEDS = flags.DEFINE_list(
  'seeds', ['0'], 'Seeds; one dense model each, results averaged.'
)
_MODEL = flags.DEFINE_enum(
  'model', _defaults.model, list(models.MODELS), 'Built-in model.'
)
_DATA = flags.DEFINE_string(
  'data',
  '',
  'An .npz file or an MNIST IDX folder; empty for the embedded digits.',
)
_SCHEDULE_FRACTION = flags.DEFINE_float(
  'schedule_fraction',
  _defaults.schedule_fraction,
  'Part of the retraining over which the sparsity rises.',
  lower_bound=0,
  upper_bound=1,
)
# The counts, each >= 1; `main` reads them by name (`config_from_flags`).
for _name, _help in (
  ('dense_steps', 'Training steps of the dense model.'),
  ('retrain_steps', 'Steps of each gradual masked retraining.'),
  ('pruning_frequency', 'Steps between mask updates while retraining.'),
  ('batch_size', 'Examples per step.'),
  ('calibration_samples', 'Training examples the one-shot methods read.'),
):
  runner.positive_int(_name, getattr(_defaults, _name), _help)
_LATENCY_BATCH = flags.DEFINE_integer(
  'latency_batch',
  _defaults.latency_batch,
  'Batch size at which shrunk and stripped models are timed (0: no timing).',
  lower_bound=0,
)
_LEARNING_RATE = flags.DEFINE_float(
  'learning_rate',
  _defaults.learning_rate,
  "Adam's learning rate.",
  lower_bound=0,
)


def _numbers(name, values, kind):
  try:
    return tuple(kind(v) for v in values)
  except ValueError as e:
    raise errors.SweepConfigError(
      f'--{name}={",".join(values)} holds a value that is not a number; '
      f'pass e.g. --{name}={"90,95" if kind is float else "0,1,2"}.'
    ) from e


def main(argv):
  runner.reject_arguments(argv, errors.SweepConfigError)
  config = runner.config_from_flags(
    config_lib.SweepConfig,
    methods=tuple(_METHODS.value),
    sparsities=tuple(
      k / 100.0 for k in _numbers('sparsities', _SPARSITIES.value, float)
    ),
    seeds=_numbers('seeds', _SEEDS.value, int),
  )
  result = sweep.sweep(config, log=lambda line: print(line, flush=True))
  paths = results.write_tables(result, _OUT_DIR.value)
  figures = plots.plot(result, _OUT_DIR.value)
  if not figures:
    print(
      'plots skipped: matplotlib is not installed '
      "(pip install 'graph_prune[plots]')."
    )
  print()
  print(results.format_table(result))
  for path in paths + figures:
    print(f'wrote {os.path.abspath(path)}')


def run():
  runner.run(main)


if __name__ == '__main__':
  run()
