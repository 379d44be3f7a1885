"""The record of a run in its model_dir, and which flags a resume may change.

`model_dir/train_config.json` records what makes a run that run: the model,
the data, the hparams, the seed, the batch size and the learning rate (at
the top, each once); `first_run` holds the first run's other settings. A
rerun with the same model_dir resumes only when all of them agree; any other
value is refused with the recorded and the new one, because a checkpoint
would silently override it (the learning rate lives in the optimizer's
state) or it would silently change the run (the seed and the batch size
decide every batch). These may change on resume: `train_steps`,
`checkpoint_every`, `log_every`, `export_dir`, `strategy`,
`num_cpu_devices` (a mirrored run splits the same global batch, so it
trains the same model) and the export options `shrink` and `export_tflite`.
A one-shot run (`oneshot`) also fixes its method, its calibration sample
count and `train_steps` (the step it prunes at); its `finetune_steps` may
change. Records written before `oneshot` existed read as gradual runs.

The record is written only once the model is built and any checkpoint
restored, so a run that fails before (a wrong --model) records nothing; it
is written to a temporary file and renamed, so it is never half written. A
model_dir with checkpoints but no record is refused rather than guessed.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional

import tensorflow as tf

from graph_prune.config import hparams as hparams_lib
from graph_prune.export import staging
from graph_prune.train import errors

CONFIG_FILE = 'train_config.json'
FIXED = (
  'model',
  'data',
  'hparams',
  'seed',
  'batch_size',
  'learning_rate',
  'oneshot',
  'calibration_samples',
)
# What a record without a value of FIXED (an older record) held.
_BEFORE = {'oneshot': None, 'calibration_samples': None}
MAY_CHANGE = (
  'train_steps',
  'checkpoint_every',
  'log_every',
  'export_dir',
  'strategy',
  'num_cpu_devices',
  'shrink',
  'export_tflite',
  'finetune_steps',
)


def prepare(model_dir: str) -> None:
  """Creates `model_dir` and checks that a run can write into it.

  Raises:
    errors.ConfigError: it is a file, or cannot be created or written.
  """
  if os.path.lexists(model_dir) and not os.path.isdir(model_dir):
    raise errors.ConfigError(
      f'--model_dir={model_dir!r} is a file, not a directory; pass a '
      'directory (new or of an earlier run).'
    )
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise errors.ConfigError(
      f'Cannot create --model_dir={model_dir!r} ({e.strerror}); pass a '
      'directory on a writable disk.'
    ) from e
  if not os.access(model_dir, os.W_OK | os.X_OK):
    raise errors.ConfigError(
      f'--model_dir={model_dir!r} is not writable (read-only disk or no '
      'permission); pass a directory this user can write.'
    )


def identity(config) -> Dict[str, Any]:
  """The values of `FIXED` for `config` (a `TrainConfig`), normalized."""
  values = {name: getattr(config, name) for name in FIXED}
  values['data'] = os.path.abspath(config.data) if config.data else ''
  values['hparams'] = hparams_lib.parse_hparams(config.hparams).to_string(
    only_changed=True
  )
  if config.oneshot:  # the step it prunes at
    values['train_steps'] = config.train_steps
  else:  # unused by gradual runs
    values['calibration_samples'] = None
  return values


def check(config, model_dir: str) -> Optional[dict]:
  """Raises unless `config` may run in `model_dir`.

  Returns:
    The saved record, or None for a model_dir without one (and without
    checkpoints).

  Raises:
    errors.ResumeMismatchError: a value of `FIXED` differs from the record,
      or checkpoints exist without a record.
  """
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.exists(path):
    latest = tf.train.latest_checkpoint(model_dir)
    if latest is not None:
      raise errors.ResumeMismatchError(
        f'{model_dir} holds checkpoints ({os.path.basename(latest)}) but no '
        f'{CONFIG_FILE}, so the flags they were trained with are unknown; '
        'pass a new --model_dir (or restore the record).'
      )
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.ResumeMismatchError(
      f'Cannot read {path} ({e}); restore it or pass a new --model_dir.'
    ) from e
  first_run = saved.get('first_run') or {}
  values = identity(config)
  for key, value in values.items():
    # Records of older graph_prune hold only model, data and hparams at the
    # top; the other values are those of the first run.
    old = saved.get(key, first_run.get(key, _BEFORE.get(key)))
    if old != value:
      may_change = [k for k in MAY_CHANGE if k not in values]
      fix = f'drop --{key}' if old is None else f'pass --{key}={old!r}'
      raise errors.ResumeMismatchError(
        f'{model_dir} holds a run with {key}={old!r}, not {value!r}; '
        f'{fix} to resume it, or a new --model_dir (may change on resume: '
        f'{", ".join(may_change)}).'
      )
  return saved


def write(config, model_dir: str) -> None:
  """Writes the record of `config` to `model_dir`, all or nothing."""
  values = identity(config)
  # The first run's other settings, for the record; each value once (the
  # hparams spec is the identity's, normalized, at the top).
  first_run = {
    k: v for k, v in dataclasses.asdict(config).items() if k not in values
  }
  with staging.Staging() as stage:
    with open(stage.file(os.path.join(model_dir, CONFIG_FILE)), 'w') as f:
      json.dump(dict(values, first_run=first_run), f, indent=2)
    stage.commit()
