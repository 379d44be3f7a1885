"""One pruning run end to end: data, model, training, evaluation, export.

    result = experiment.train(
        experiment.TrainConfig(model='mlp', train_steps=1500))
    print(summary.final_table(result.counts, result.test_loss,
                              result.test_accuracy, result.exports))

This is what the `graph_prune_train` binary runs. A rerun with the same
`model_dir` resumes from the latest checkpoint there; the run's model, data,
hparams, seed, batch size and learning rate are written to
`model_dir/train_config.json` once the first run has built its model, and a
rerun with others is refused (`run_record`), so a directory never mixes two
experiments. With `oneshot` the run trains dense for `train_steps`, prunes
once (`oneshot_stage`) and trains `finetune_steps` more through the fixed
masks. The chief holds `run_lock` on the model_dir for the whole run,
so a second trainer on it is refused while the first one lives.
"""

import dataclasses
import os
import tempfile
from typing import Callable, List, Optional, Tuple

import keras

from graph_prune.config import hparams as hparams_lib
from graph_prune.export import output_paths
from graph_prune.export import tflite
from graph_prune.model import pruned_model as pruned_lib
from graph_prune.train import artifacts
from graph_prune.train import datasets
from graph_prune.train import errors
from graph_prune.train import loop
from graph_prune.train import models
from graph_prune.train import oneshot_stage
from graph_prune.train import run_lock
from graph_prune.train import run_record
from graph_prune.train import strategies
from graph_prune.train import summary
from graph_prune.train import versioned_export

# 90% sparsity on the embedded digits in about a minute on two cores: dense
# for 200 steps, the cubic schedule from 200 to 1000, masks fixed after 1000,
# 400 steps of masked fine-tuning.
DEFAULT_HPARAMS = (
  'target_sparsity=0.9,begin_pruning_step=200,end_pruning_step=1000,'
  'sparsity_function_begin_step=200,sparsity_function_end_step=1000,'
  'pruning_frequency=50'
)
DEFAULT_TRAIN_STEPS = 1400
CONFIG_FILE = run_record.CONFIG_FILE


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The settings of one run (the binary's flags).

  Attributes:
    model: a built-in model, one of `models.MODELS`.
    data: '' for the embedded digits, an `.npz`, or an MNIST IDX folder.
    hparams: the pruning spec (contrib syntax).
    train_steps: the step training stops at.
    batch_size: examples per step.
    learning_rate: Adam's learning rate.
    seed: seeds the weights' initialization and the data order.
    model_dir: checkpoints, summaries and `train_config.json`; '' makes a
      new temporary directory.
    export_dir: where the SavedModels go; '' is `model_dir/export`.
    checkpoint_every: steps between checkpoints (and one at the end).
    log_every: steps between progress lines.
    strategy: 'default', 'mirrored' or 'multi_worker' (`distribute`).
    num_cpu_devices: with 'mirrored', split the CPU into this many logical
      devices (for trying it on one machine); None uses the real devices.
    shrink: also export the shrunk SavedModel (zero units removed,
      `graph_prune.shrink`) to `export_dir/shrunk/STEP`.
    export_tflite: TFLite quantization modes to export as
      `export_dir/tflite/STEP/<mode>.tflite` (int8 calibrated on the
      training inputs); every export's test accuracy is then measured.
    oneshot: None prunes gradually on the hparams' schedule; 'weight',
      'wanda' or 'sparsegpt' trains dense for `train_steps`, then prunes
      once with `prune_oneshot` (that `prune_option`, the hparams' targets).
    calibration_samples: with `oneshot`, the training examples it reads.
    finetune_steps: with `oneshot`, steps trained after the prune with the
      masks fixed; the run ends at `train_steps + finetune_steps`.
  """

  model: str = 'mlp'
  data: str = ''
  hparams: str = DEFAULT_HPARAMS
  train_steps: int = DEFAULT_TRAIN_STEPS
  batch_size: int = 64
  learning_rate: float = 1e-3
  seed: int = 0
  model_dir: str = ''
  export_dir: str = ''
  checkpoint_every: int = 1000
  log_every: int = 100
  strategy: str = 'default'
  num_cpu_devices: Optional[int] = None
  shrink: bool = False
  export_tflite: Tuple[str, ...] = ()
  oneshot: Optional[str] = None
  calibration_samples: int = 512
  finetune_steps: int = 0

  def __post_init__(self):
    models.check_name(self.model)
    for mode in self.export_tflite:
      if mode not in tflite.QUANTIZE_MODES:
        raise errors.ConfigError(
          f'Unknown TFLite quantization {mode!r} in export_tflite; pass '
          f'some of {",".join(tflite.QUANTIZE_MODES)}.'
        )
    hparams_lib.parse_hparams(self.hparams)
    for name in ('train_steps', 'batch_size', 'checkpoint_every', 'log_every'):
      least = 1 if name == 'batch_size' else 0
      if getattr(self, name) < least:
        raise errors.ConfigError(
          f'{name}={getattr(self, name)} is too small; pass a value >= {least}.'
        )
    if not self.learning_rate > 0:
      raise errors.ConfigError(
        f'learning_rate={self.learning_rate}; pass a positive value.'
      )
    if self.strategy not in strategies.STRATEGY_KINDS:
      raise errors.ConfigError(
        f'Unknown strategy {self.strategy!r}; pass one of '
        f'{", ".join(strategies.STRATEGY_KINDS)}.'
      )
    if self.num_cpu_devices is not None and (
      self.strategy != 'mirrored' or self.num_cpu_devices < 1
    ):
      raise errors.ConfigError(
        f'num_cpu_devices={self.num_cpu_devices} needs strategy=mirrored '
        f'(got {self.strategy!r}) and a value >= 1.'
      )
    if self.strategy == 'multi_worker' and not self.model_dir:
      raise errors.ConfigError(
        'strategy=multi_worker needs a model_dir that every worker reaches '
        '(a shared folder); pass --model_dir.'
      )
    self._check_oneshot()

  def _check_oneshot(self) -> None:
    if self.finetune_steps < 0:
      raise errors.ConfigError(
        f'finetune_steps={self.finetune_steps} is negative; pass a value >= 0.'
      )
    if not self.oneshot:
      option = hparams_lib.parse_hparams(self.hparams).prune_option
      if option in oneshot_stage.OPTIONS and option != 'weight':
        raise errors.ConfigError(
          f'prune_option={option} in hparams prunes once after training; '
          f'pass --oneshot={option} (and drop prune_option from --hparams).'
        )
      if self.finetune_steps:
        raise errors.ConfigError(
          f'finetune_steps={self.finetune_steps} needs oneshot (gradual '
          'pruning fine-tunes after end_pruning_step within train_steps); '
          'pass --oneshot=weight|wanda|sparsegpt, or drop --finetune_steps.'
        )
      return
    oneshot_stage.oneshot_hparams(self.hparams, self.oneshot)
    if self.calibration_samples < 1:
      raise errors.ConfigError(
        f'calibration_samples={self.calibration_samples} is too small; pass '
        'a value >= 1 (e.g. 512).'
      )
    if self.strategy != 'default':
      raise errors.ConfigError(
        f'oneshot={self.oneshot} runs on one device, not under '
        f'strategy={self.strategy}; pass --strategy=default.'
      )

  @property
  def end_step(self) -> int:
    """The step the run ends at (after fine-tuning, with `oneshot`)."""
    return self.train_steps + (self.finetune_steps if self.oneshot else 0)


@dataclasses.dataclass
class TrainResult:
  """What `train` did and measured."""

  model_dir: str
  resumed_from: Optional[str]
  progress: loop.Progress
  test_loss: float
  test_accuracy: float
  counts: summary.ParamCounts
  exports: List[versioned_export.Export]
  pruned: pruned_lib.PrunedModel
  model: keras.Model
  # With export_tflite: the dense float SavedModel's size, for comparison.
  dense_export: Optional[versioned_export.Export] = None


def train(
  config: TrainConfig, log: Callable[[str], None] = print
) -> TrainResult:
  """Trains (or resumes), evaluates and exports one pruned model.

  Args:
    config: the run's settings.
    log: called with each line of progress.

  Returns:
    A `TrainResult`.

  Raises:
    DataError: the data path is missing or malformed.
    errors.ConfigError: model_dir is a file or not writable.
    errors.ResumeMismatchError: model_dir holds a run with other values of
      `run_record.FIXED`, or checkpoints without a record.
    errors.ModelDirBusyError: another live run holds model_dir.
    ResumeError: the latest checkpoint does not fit the model.
    UnknownModelError: the model does not take the data's images.
    StrategyError: the strategy cannot be set up, or the batch does not
      split over its replicas.
    OutputPathError: export_dir is under a file.
  """
  # First: a mirrored strategy over logical CPUs must split the CPU before
  # TensorFlow initializes its devices.
  if config.export_dir:  # before training, not after it
    output_paths.check(config.export_dir, '--export_dir')
  strategy = strategies.make_strategy(config.strategy, config.num_cpu_devices)
  chief = strategies.is_chief(strategy)
  data = datasets.load(config.data)
  model_dir = config.model_dir or tempfile.mkdtemp(prefix='graph_prune_train_')
  if not chief:  # the chief holds the lock and writes the record
    return _train_in(config, strategy, data, model_dir, log, chief)
  run_record.prepare(model_dir)
  with run_lock.hold(model_dir):
    return _train_in(config, strategy, data, model_dir, log, chief)


def _train_in(config, strategy, data, model_dir, log, chief) -> TrainResult:
  """`train` once model_dir is prepared and locked (by the chief)."""
  saved = run_record.check(config, model_dir) if chief else None
  run = _build_run(config, data, strategy)
  # A one-shot run's dense model may restore a fine-tuning checkpoint.
  resumed_from = run.restore(model_dir, partial=bool(config.oneshot))
  if chief and saved is None:  # the model is built and the restore worked
    run_record.write(config, model_dir)
  _log_start(config, data, run, model_dir, resumed_from, log)
  batches = loop.Batches(
    data.x_train, data.y_train, config.batch_size, seed=config.seed
  )

  def fit(run, steps):
    return loop.fit(
      run,
      batches,
      steps,
      model_dir=model_dir,
      checkpoint_every=config.checkpoint_every,
      log_every=config.log_every,
      log=log,
    )

  progress = fit(run, config.train_steps)
  if config.oneshot:
    run = _prune_oneshot(config, data, run, model_dir, log)
    tuned = fit(run, config.end_step)
    progress.end_step = tuned.end_step
    progress.checkpoints += tuned.checkpoints
    progress.history += tuned.history
    progress.seconds += tuned.seconds
  test_loss, test_accuracy = loop.evaluate(run.pruned, data.x_test, data.y_test)
  exports, dense_export = [], None
  if chief:  # the other workers hold the same model
    loop.write_scalars(
      model_dir,
      run.step,
      {'test/loss': test_loss, 'test/accuracy': test_accuracy},
    )
    exports = _export(config, run, model_dir, log, data.x_train)
    if config.export_tflite:
      exports = artifacts.with_accuracy(exports, data.x_test, data.y_test)
      dense_export = artifacts.dense_reference(run.model)
  return TrainResult(
    model_dir=model_dir,
    resumed_from=resumed_from,
    progress=progress,
    test_loss=test_loss,
    test_accuracy=test_accuracy,
    counts=summary.count_params(run.model, run.pruned),
    exports=exports,
    pruned=run.pruned,
    model=run.model,
    dense_export=dense_export,
  )


def _export(config: TrainConfig, run: loop.Run, model_dir: str, log, x_train):
  """Writes the pruned and the stripped SavedModel of `run`'s step."""
  export_dir = config.export_dir or os.path.join(model_dir, 'export')
  return versioned_export.export(
    run.pruned,
    export_dir,
    run.step,
    log=log,
    shrink=config.shrink,
    tflite_modes=config.export_tflite,
    representative_data=x_train,
  )


def _build_run(config: TrainConfig, data, strategy) -> loop.Run:
  """The model, its pruning and the optimizer, built under `strategy`.

  With `oneshot` the model trains dense first: no pruning yet.
  """
  with strategy.scope():
    model = models.build(
      config.model, data.x_train.shape[1:], data.num_classes, seed=config.seed
    )
    pruned = (
      None
      if config.oneshot
      else pruned_lib.apply_pruning(model, config.hparams)
    )
    optimizer = keras.optimizers.Adam(config.learning_rate)
  return loop.Run(model, pruned, optimizer, strategy)


def _prune_oneshot(config, data, run, model_dir, log) -> loop.Run:
  """Prunes the dense `run` once; returns the run of the fixed masks.

  A rerun whose latest checkpoint is past `train_steps` (from fine-tuning)
  does not prune again: it wraps the model as the prune did and restores
  that checkpoint's weights, masks and optimizer.
  """
  hparams = oneshot_stage.oneshot_hparams(config.hparams, config.oneshot)
  if run.step > config.train_steps:
    pruned = oneshot_stage.wrap(run.model, hparams)
    tuned = oneshot_stage.finetune_run(
      run.model, pruned, run.optimizer, run.strategy
    )
    tuned.restore(model_dir)
  else:
    examples = oneshot_stage.calibration_examples(
      data.x_train, config.calibration_samples, config.seed
    )
    log(
      f'step {run.step}: pruning once with prune_option={config.oneshot} '
      f'from {len(examples)} training examples.'
    )
    pruned = oneshot_stage.prune(run.model, examples, hparams, log=log)
    tuned = oneshot_stage.finetune_run(
      run.model, pruned, run.optimizer, run.strategy
    )
  log(
    f'step {tuned.step}: sparsity {loop.overall_sparsity(pruned):.4f}; '
    f'fine-tuning with fixed masks to step {config.end_step}.'
  )
  return tuned


def _log_start(config, data, run, model_dir, resumed_from, log) -> None:
  """Logs what is trained on what, and where it starts from."""
  strategy = run.strategy
  if strategy.num_replicas_in_sync > 1:
    log(
      f'{type(strategy).__name__}: {strategy.num_replicas_in_sync} '
      f'replicas, {config.batch_size // strategy.num_replicas_in_sync} '
      'examples each per step.'
    )
  log(
    f'{config.model} on {config.data or "the embedded digits"}: '
    f'{len(data.x_train)} train / '
    f'{len(data.x_test)} test images of shape {list(data.x_train.shape[1:])}'
    f', {run.model.count_params()} weights'
    + (
      f', pruning {len(run.pruned.weight_names)} of them.'
      if run.pruned is not None
      else f', dense until step {config.train_steps}, then {config.oneshot} '
      'one-shot pruning.'
    )
  )
  if resumed_from:
    log(f'resumed from {resumed_from} at step {run.step}.')
  else:
    log(f'training from step 0 in {model_dir}')
