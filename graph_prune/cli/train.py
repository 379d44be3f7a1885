"""Trains a built-in model with gradual magnitude pruning, then exports it.

Usage:
  graph_prune_train [--model=mlp|cnn|lstm|rescnn] [--data=PATH] [--hparams=SPEC]
      [--train_steps=N] [--batch_size=B] [--learning_rate=LR] [--seed=S]
      [--model_dir=DIR] [--export_dir=DIR] [--checkpoint_every=N]
      [--log_every=N] [--strategy=default|mirrored|multi_worker]
      [--num_cpu_devices=N] [--shrink]
      [--export_tflite=none|dynamic|float16|int8 ...]
      [--oneshot=weight|wanda|sparsegpt [--calibration_samples=N]
       [--finetune_steps=K]]
  (or python -m graph_prune.train ...)

With no flags it prunes the classic 1000-1000-500-200 ReLU MLP to 90%
sparsity on the 8x8 digits shipped with graph_prune, in about a minute on two
cores.

Each step applies Adam's update, then updates the masks when contrib's
schedule says so (`--hparams`, contrib syntax, e.g.
`target_sparsity=0.95,pruning_scope=global,end_pruning_step=1000`). It prints
a progress line every --log_every steps, writes TensorBoard scalars (loss,
accuracy, sparsity and threshold per weight) and checkpoints to --model_dir;
rerun with the same --model_dir to resume from its latest checkpoint (nothing
there is ever deleted). At the end it evaluates on the test split, writes the
pruned SavedModel and the stripped one (masks folded in) to
--export_dir/{pruned,stripped}/STEP, and prints per-weight sparsity, parameter
counts, test accuracy and export sizes. --shrink also writes the shrunk one
(zero units removed physically, for granularity=unit) to
--export_dir/shrunk/STEP. --export_tflite=MODE (none, dynamic, float16,
int8; repeatable) also writes --export_dir/tflite/STEP/MODE.tflite, int8
calibrated on the training inputs, and the table then shows every export's
test accuracy and its gzipped size as a share of the dense float
SavedModel's.

--oneshot=weight|wanda|sparsegpt trains dense for --train_steps instead,
then prunes once (graph_prune.prune_oneshot, prune_option set by the flag,
targets from --hparams, schedule steps ignored) from --calibration_samples
training examples (wanda and sparsegpt print each weight's sparsity and
reconstruction error), trains --finetune_steps more with the masks fixed,
and exports as above.

--data takes an .npz with x_train, y_train, x_test, y_test, or a folder with
MNIST's four IDX files (optionally .gz), e.g. MNIST or Fashion-MNIST.

--strategy=mirrored trains on every local device (--num_cpu_devices=N splits
the CPU into N logical devices to try it on one machine); each step splits
its --batch_size examples evenly over the replicas. --strategy=multi_worker
runs MultiWorkerMirroredStrategy: start the same command once per worker,
each with its TF_CONFIG and the same --model_dir (a folder every worker
reaches); the chief (worker 0) writes checkpoints, summaries and exports.
"""

from absl import flags

from graph_prune import errors
from graph_prune.cli import runner
from graph_prune.config import hparams as hparams_lib
from graph_prune.train import errors as train_errors
from graph_prune.train import experiment
from graph_prune.train import models
from graph_prune.train import oneshot_stage
from graph_prune.train import strategies
from graph_prune.train import summary

_MODEL = flags.DEFINE_enum(
  'model', 'mlp', list(models.MODELS), 'Built-in model to train.'
)
_DATA = flags.DEFINE_string(
  'data',
  '',
  'An .npz file or an MNIST IDX folder; empty for the embedded 8x8 digits.',
)
_HPARAMS = flags.DEFINE_string(
  'hparams',
  experiment.DEFAULT_HPARAMS,
  'Pruning hparams (contrib spec string).',
)
_TRAIN_STEPS = flags.DEFINE_integer(
  'train_steps',
  experiment.DEFAULT_TRAIN_STEPS,
  'Step to train to.',
  lower_bound=0,
)
_BATCH_SIZE = runner.positive_int('batch_size', 64, 'Examples per step.')
_LEARNING_RATE = flags.DEFINE_float(
  'learning_rate', 1e-3, "Adam's learning rate.", lower_bound=0
)
_SEED = flags.DEFINE_integer(
  'seed', 0, 'Seeds the initialization and the data order.'
)
_MODEL_DIR = flags.DEFINE_string(
  'model_dir',
  '',
  'Checkpoints and TensorBoard summaries; rerun with it to '
  'resume. Empty: a new temporary directory.',
)
_EXPORT_DIR = flags.DEFINE_string(
  'export_dir',
  '',
  'Base directory of the SavedModels; empty: MODEL_DIR/export.',
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
  'checkpoint_every',
  1000,
  'Steps between checkpoints (0: only at the end).',
  lower_bound=0,
)
_LOG_EVERY = flags.DEFINE_integer(
  'log_every', 100, 'Steps between progress lines.', lower_bound=0
)
_STRATEGY = flags.DEFINE_enum(
  'strategy',
  'default',
  list(strategies.STRATEGY_KINDS),
  'tf.distribute strategy: default (one device), mirrored (the local '
  'devices) or multi_worker (workers listed in TF_CONFIG).',
)
_SHRINK = flags.DEFINE_bool(
  'shrink',
  False,
  'Also export the shrunk SavedModel (zero units removed physically; '
  'prune with granularity=unit) to EXPORT_DIR/shrunk/STEP.',
)
_EXPORT_TFLITE = flags.DEFINE_multi_enum(
  'export_tflite',
  [],
  ['none', 'dynamic', 'float16', 'int8'],
  'Also export TFLite files with these quantizations (repeat the flag or '
  'give one; int8 is calibrated on the training inputs) to '
  "EXPORT_DIR/tflite/STEP/MODE.tflite, and report every export's test "
  'accuracy and size beside the dense float SavedModel.',
)
_ONESHOT = flags.DEFINE_enum(
  'oneshot',
  None,
  list(oneshot_stage.OPTIONS),
  'Train dense for --train_steps, then prune once with this prune_option '
  '(prune_oneshot); unset: gradual pruning on the --hparams schedule.',
)
_CALIBRATION_SAMPLES = runner.positive_int(
  'calibration_samples',
  experiment.TrainConfig.calibration_samples,
  'With --oneshot: training examples the one-shot pruning reads.',
)
_FINETUNE_STEPS = flags.DEFINE_integer(
  'finetune_steps',
  0,
  'With --oneshot: steps trained after the prune, masks fixed.',
  lower_bound=0,
)
_NUM_CPU_DEVICES = runner.positive_int(
  'num_cpu_devices',
  None,
  'With --strategy=mirrored: split the CPU into this many logical devices.',
)


def _check_hparams(spec: str) -> bool:
  try:
    hparams_lib.parse_hparams(spec)
  except errors.HParamsError as e:
    raise flags.ValidationError(str(e)) from e
  return True


flags.register_validator('hparams', _check_hparams)


def main(argv):
  runner.reject_arguments(argv, train_errors.ConfigError)
  config = runner.config_from_flags(
    experiment.TrainConfig,
    export_tflite=tuple(dict.fromkeys(_EXPORT_TFLITE.value)),
  )
  result = experiment.train(config, log=lambda line: print(line, flush=True))
  if not result.exports:  # a worker other than the chief
    print(f'test accuracy {result.test_accuracy:.4f}; the chief exports.')
    return
  print()
  print(
    summary.final_table(
      result.counts,
      result.test_loss,
      result.test_accuracy,
      result.exports,
      dense=result.dense_export,
    )
  )
  print(f'TensorBoard: tensorboard --logdir {result.model_dir}')


def run():
  runner.run(main)


if __name__ == '__main__':
  run()
