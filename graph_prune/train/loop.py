"""Training with pruning: the step, the loop, evaluation and resuming.

The loop is what tfmot users write callbacks for, as plain code:

    pruned = graph_prune.apply_pruning(model, hparams)
    run = loop.Run(model, pruned, optimizer)
    run.restore(model_dir)            # resumes if a checkpoint exists
    loop.fit(run, loop.Batches(x, y, 64, seed=0), train_steps=1500,
             model_dir=model_dir)
    loss, accuracy = loop.evaluate(pruned, x_test, y_test)

Every step is a `tf.function` that applies the gradients and then calls
`pruned.conditional_mask_update(optimizer.iterations)`. The batch of a step is
a function of the seed and the step alone (`Batches`), so a run stopped and
resumed from a checkpoint sees the same batches, and ends with the same masks,
as a run that never stopped.
"""

import dataclasses
import shutil
import time
from typing import Callable, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from graph_prune.model import distribute
from graph_prune.model import nonfinite
from graph_prune.model import pruned_model as pruned_lib
from graph_prune.model import summaries
from graph_prune.train import errors
from graph_prune.train import eta
from graph_prune.train import strategies

Log = Callable[[str], None]


class Batches:
  """Shuffled mini-batches keyed by the step.

  The examples are visited epoch by epoch, each epoch in the order of
  `np.random.default_rng([seed, epoch]).permutation(n)`; the batch of step
  `s` (counting from 0) is examples `s * batch_size` to `(s + 1) *
  batch_size - 1` of that endless sequence. So `batch(s)` depends on `seed`
  and `s` only, never on what was drawn before.
  """

  def __init__(
    self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0
  ):
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    self.x, self.y = x, y
    self.batch_size = batch_size
    self.seed = seed
    self._epoch, self._order = -1, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._order = np.random.default_rng([self.seed, epoch]).permutation(
        len(self.x)
      )
      self._epoch = epoch
    return self._order

  def indices(self, step: int) -> np.ndarray:
    """The example indices of the batch of `step` (0-based)."""
    n = len(self.x)
    start, parts, needed = step * self.batch_size, [], self.batch_size
    while needed:
      epoch, offset = divmod(start, n)
      part = self._permutation(epoch)[offset : offset + needed]
      parts.append(part)
      needed -= len(part)
      start += len(part)
    return np.concatenate(parts)

  def batch(self, step: int) -> Tuple[np.ndarray, np.ndarray]:
    """The (images, labels) of the batch of `step` (0-based)."""
    idx = self.indices(step)
    return self.x[idx], self.y[idx]


def _per_example_loss(labels, logits):
  return keras.losses.sparse_categorical_crossentropy(
    labels, logits, from_logits=True
  )


def _loss_and_accuracy(labels, logits):
  labels = tf.cast(labels, tf.int32)
  loss = tf.reduce_mean(
    tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
  )
  correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
  return loss, tf.reduce_mean(tf.cast(correct, tf.float32))


class Run:
  """What one training run trains and checkpoints.

  Attributes:
    model: the Keras model (owns the weights).
    pruned: the `PrunedModel` over it, or None to train the dense model.
    optimizer: a Keras optimizer; `optimizer.iterations` is the step.
    strategy: the `tf.distribute` strategy the three were built under (the
      default strategy on one device).
    checkpoint: a `tf.train.Checkpoint` of the three.
    update_masks: whether each step updates the masks on the schedule; False
      trains through fixed masks (fine-tuning after one-shot pruning, whose
      masks no magnitude update may replace).
  """

  def __init__(
    self,
    model: keras.Model,
    pruned: Optional[pruned_lib.PrunedModel],
    optimizer: keras.optimizers.Optimizer,
    strategy: Optional[tf.distribute.Strategy] = None,
    update_masks: bool = True,
  ):
    self.model = model
    self.update_masks = update_masks
    self.pruned = pruned
    self.optimizer = optimizer
    self.strategy = strategy or tf.distribute.get_strategy()
    distribute.check_strategy(self.strategy)
    # Built now, under the scope: a restore fills the slots instead of
    # deferring, and the slots are distributed like the weights.
    with self.strategy.scope():
      optimizer.build(model.trainable_variables)
    objects = dict(model=model, optimizer=optimizer)
    if pruned is not None:
      objects['pruned'] = pruned
    self.checkpoint = tf.train.Checkpoint(**objects)
    # Fixed masks: the step trains through `pruned` but never updates it.
    self._step_fn = strategies.make_train_step(
      self.strategy,
      pruned if update_masks else None,
      model.trainable_variables,
      optimizer,
      _per_example_loss,
      training=True,
      forward=model if pruned is None else pruned,
      with_accuracy=True,
    )

  @property
  def forward(self):
    """The function from images to logits (masked when pruning)."""
    if self.pruned is not None:
      return self.pruned
    return lambda x: self.model(x, training=False)

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def train_step(self, x, y) -> Tuple[tf.Tensor, tf.Tensor]:
    """One step on the global batch `(x, y)`: (mean loss, accuracy).

    Applies the gradients, then updates the masks when the schedule says so
    (the step of `strategies.make_train_step`). Under a strategy with
    several replicas the batch is split into equal contiguous slices, one per
    replica (`strategies.distribute_batch`), so the step sees the same global
    batch as a single-device run.
    """
    if self.strategy.num_replicas_in_sync > 1:
      x, y = strategies.distribute_batch(self.strategy, x, y)
    # A diverged weight fails the step's mask update: a graph_prune error
    # naming it (advice included), so the binary prints one line.
    with nonfinite.non_finite_as_error():
      loss, _, accuracy = self._step_fn(x, y)
    return loss, accuracy

  def checkpoint_manager(self, model_dir: str) -> tf.train.CheckpointManager:
    # max_to_keep=None: never delete a checkpoint, ours or a previous run's.
    return tf.train.CheckpointManager(
      self.checkpoint,
      model_dir,
      max_to_keep=None,
      step_counter=self.optimizer.iterations,
    )

  def restore(self, model_dir: str, partial: bool = False) -> Optional[str]:
    """Restores the latest checkpoint in `model_dir`, if there is one.

    Args:
      model_dir: the directory `fit` writes checkpoints to.
      partial: the checkpoint may hold more than this run (a dense run
        restoring a checkpoint of its pruned continuation); no warnings about
        its other values.

    Returns:
      The restored checkpoint's path, or None when there was none.

    Raises:
      errors.ResumeError: the checkpoint does not hold this model's variables.
    """
    latest = tf.train.latest_checkpoint(model_dir)
    if latest is None:
      return None
    try:
      status = self.checkpoint.restore(latest)
      status.assert_existing_objects_matched()
      if partial:
        status.expect_partial()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise errors.ResumeError(
        f'{latest} does not fit this model ({first_line[:200]}); pass the '
        'flags it was trained with, or a new --model_dir.'
      ) from e
    return latest


@dataclasses.dataclass
class Progress:
  """What `fit` did.

  Attributes:
    start_step: the step the run started (or resumed) from.
    end_step: the step it stopped at.
    checkpoints: paths of the checkpoints it wrote.
    history: one (step, loss, accuracy, sparsity, steps_per_second) per
      progress line.
    seconds: wall time of the loop.
  """

  start_step: int
  end_step: int
  checkpoints: List[str] = dataclasses.field(default_factory=list)
  history: List[Tuple[int, float, float, float, float]] = dataclasses.field(
    default_factory=list
  )
  seconds: float = 0.0

  @property
  def steps_per_second(self) -> float:
    return (self.end_step - self.start_step) / max(self.seconds, 1e-9)


def overall_sparsity(pruned: Optional[pruned_lib.PrunedModel]) -> float:
  """The fraction of masked-out weights over all pruned weights (0 if None)."""
  if pruned is None:
    return 0.0
  return float(pruned.sparsity().overall.numpy())


def fit(
  run: Run,
  batches: Batches,
  train_steps: int,
  model_dir: Optional[str] = None,
  checkpoint_every: int = 0,
  log_every: int = 100,
  log: Optional[Log] = print,
  stop_after: Optional[int] = None,
) -> Progress:
  """Trains `run` from its current step up to `train_steps`.

  Every `log_every` steps (and at the last step) it logs one progress line
  with the mean loss and accuracy of the steps since the last line, the
  masks' sparsity and the speed, and writes the same as TensorBoard scalars
  (`train/loss`, `train/accuracy`, `train/steps_per_second` and
  `PrunedModel.write_summaries`: sparsity and threshold per weight) to
  `model_dir`. It saves a checkpoint to `model_dir` every
  `checkpoint_every` steps and at the end.

  Args:
    run: the model, pruning and optimizer; `run.optimizer.iterations` is the
      step it starts from (non-zero after `run.restore`).
    batches: the training batches.
    train_steps: the step to stop at.
    model_dir: where summaries and checkpoints go; None writes neither.
    checkpoint_every: steps between checkpoints; 0 saves only at the end.
    log_every: steps between progress lines; 0 logs only the last one.
    log: called with each progress line; None is silent.
    stop_after: stop (with a checkpoint) after this many steps of this call,
      as if the run had been interrupted; None runs to `train_steps`.

  Returns:
    A `Progress`.
  """
  log = log or (lambda line: None)
  start = run.step
  progress = Progress(start_step=start, end_step=start)
  outputs = _Outputs(run, model_dir)
  end = (
    train_steps if stop_after is None else min(train_steps, start + stop_after)
  )
  step, window, began = start, _Window(start), time.perf_counter()
  while step < end:
    window.add(*run.train_step(*batches.batch(step)))
    step = run.step
    last = step >= end
    if last or (log_every and step % log_every == 0):
      row = window.close(step, run.pruned)
      progress.history.append(row)
      log(_progress_line(row, train_steps))
      outputs.write_summaries(step, row)
      window = _Window(step)
    if last or (checkpoint_every and step % checkpoint_every == 0):
      path = outputs.save(step)
      if path:
        progress.checkpoints.append(path)
        log(f'saved checkpoint {path}')
  progress.end_step = step
  progress.seconds = time.perf_counter() - began
  outputs.close()
  return progress


def _progress_line(row, train_steps: int) -> str:
  step, loss, accuracy, sparsity, speed = row
  line = (
    f'step {step:>6d}/{train_steps}  loss {loss:.4f}  '
    f'accuracy {accuracy:.4f}  sparsity {sparsity:.4f}  '
    f'{speed:6.1f} steps/s'
  )
  left = eta.steps_left(step, train_steps, speed)
  return line + (f'  ~{eta.format_duration(left)} left' if left else '')


class _Outputs:
  """Where `fit` writes checkpoints and summaries.

  Every worker saves (saving may run collective ops), only the chief into
  model_dir; the others into a scratch folder deleted at the end. Only the
  chief writes summaries. Without a model_dir nothing is written.
  """

  def __init__(self, run: Run, model_dir: Optional[str]):
    self.run = run
    self.chief = strategies.is_chief(run.strategy)
    self.save_dir = (
      strategies.checkpoint_dir(run.strategy, model_dir) if model_dir else None
    )
    self.manager = (
      run.checkpoint_manager(self.save_dir) if self.save_dir else None
    )
    self.writer = (
      tf.summary.create_file_writer(model_dir)
      if model_dir and self.chief
      else None
    )

  def write_summaries(self, step: int, row) -> None:
    if self.writer is not None:
      _write_train_summaries(self.writer, self.run, step, row)

  def save(self, step: int) -> Optional[str]:
    """Saves a checkpoint; its path on the chief, else None."""
    if self.manager is None:
      return None
    path = self.manager.save(checkpoint_number=step)
    return path if self.chief else None

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
    if self.save_dir and not self.chief:
      shutil.rmtree(self.save_dir, ignore_errors=True)


class _Window:
  """The steps since the last progress line: their losses, accuracies and
  speed."""

  def __init__(self, step: int):
    self.step, self.began = step, time.perf_counter()
    self.losses, self.accuracies = [], []

  def add(self, loss, accuracy) -> None:
    self.losses.append(float(loss))
    self.accuracies.append(float(accuracy))

  def close(self, step: int, pruned: Optional[pruned_lib.PrunedModel]):
    """(step, mean loss, mean accuracy, sparsity, steps per second)."""
    seconds = time.perf_counter() - self.began
    return (
      step,
      float(np.mean(self.losses)),
      float(np.mean(self.accuracies)),
      overall_sparsity(pruned),
      (step - self.step) / max(seconds, 1e-9),
    )


def _write_train_summaries(writer, run: Run, step: int, row) -> None:
  with writer.as_default():
    summaries.scalar('train/loss', row[1], step)
    summaries.scalar('train/accuracy', row[2], step)
    summaries.scalar('train/steps_per_second', row[4], step)
    if run.pruned is not None:
      run.pruned.write_summaries(step)
  writer.flush()


def write_scalars(model_dir: str, step: int, values: dict) -> None:
  """Writes `{tag: value}` as TensorBoard scalars at `step` to `model_dir`."""
  writer = tf.summary.create_file_writer(model_dir)
  with writer.as_default():
    for tag, value in values.items():
      summaries.scalar(tag, value, step)
  writer.close()


def evaluate(
  forward, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
) -> Tuple[float, float]:
  """Mean cross-entropy and accuracy of `forward` (images -> logits).

  Args:
    forward: e.g. a `PrunedModel`, or a Keras model in inference mode.
    x: images.
    y: integer labels.
    batch_size: examples per call.

  Returns:
    (loss, accuracy) as Python floats.
  """
  loss_sum, correct = 0.0, 0.0
  for i in range(0, len(x), batch_size):
    xb, yb = x[i : i + batch_size], y[i : i + batch_size]
    loss, accuracy = _loss_and_accuracy(yb, forward(tf.constant(xb)))
    loss_sum += float(loss) * len(xb)
    correct += float(accuracy) * len(xb)
  return loss_sum / len(x), correct / len(x)
