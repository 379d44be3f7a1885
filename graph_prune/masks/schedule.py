"""The gradual pruning schedule (Zhu & Gupta 2017) and the update condition.

Both are pure functions of the step: no variables, no global step. They work
eagerly and inside `tf.function`; `step` may be a Python int or an integer
tensor such as `optimizer.iterations`.
"""

import dataclasses

import tensorflow as tf

from graph_prune.config import hparams as hparams_lib


def polynomial_sparsity(
  step,
  *,
  initial_sparsity: float,
  target_sparsity: float,
  begin_step: int,
  end_step: int,
  exponent: float,
  dtype=tf.float32,
) -> tf.Tensor:
  """Sparsity at `step` of contrib's polynomial schedule.

      p    = clip((step - begin_step) / (end_step - begin_step), 0, 1)
      s(t) = target + (initial - target) * (1 - p) ** exponent

  Args:
    step: the training step (int or integer tensor).
    initial_sparsity: s_i, the sparsity at `begin_step`.
    target_sparsity: s_f, the sparsity from `end_step` on.
    begin_step: t0 of the schedule.
    end_step: the step at which s_f is reached; > begin_step.
    exponent: e; 1 is linear, contrib's default 3 prunes fast early.

  Returns:
    A scalar tensor of `dtype` (float32 as contrib; the mask update asks for
    float64, so that 0.9 prunes exactly round(0.9 n) of n weights even for
    n beyond 2**24).
  """
  # float64: steps beyond 2**24 stay exact.
  step = tf.cast(step, tf.float64)
  p = (step - begin_step) / float(end_step - begin_step)
  p = tf.clip_by_value(p, 0.0, 1.0)
  sparsity = target_sparsity + (initial_sparsity - target_sparsity) * tf.pow(
    1.0 - p, exponent
  )
  return tf.cast(sparsity, dtype)


@dataclasses.dataclass(frozen=True)
class PolynomialSchedule:
  """contrib's schedule towards one target, as a function of the step.

  Built once from the hparams (`polynomial_schedule`); calling it is
  `polynomial_sparsity` with these settings closed over, as an optax schedule
  closes over its hyperparameters.
  """

  initial_sparsity: float
  target_sparsity: float
  begin_step: int
  end_step: int
  exponent: float

  def __call__(self, step, dtype=tf.float32) -> tf.Tensor:
    return polynomial_sparsity(
      step,
      initial_sparsity=self.initial_sparsity,
      target_sparsity=self.target_sparsity,
      begin_step=self.begin_step,
      end_step=self.end_step,
      exponent=self.exponent,
      dtype=dtype,
    )


def polynomial_schedule(
  hparams: hparams_lib.PruningHParams, target_sparsity: float = None
) -> PolynomialSchedule:
  """The schedule of a weight with `target_sparsity` (see `sparsity_at`)."""
  if target_sparsity is None:
    target_sparsity = hparams.target_sparsity
  return PolynomialSchedule(
    initial_sparsity=hparams.initial_sparsity,
    target_sparsity=target_sparsity,
    begin_step=hparams.sparsity_function_begin_step,
    end_step=hparams.sparsity_function_end_step,
    exponent=hparams.sparsity_function_exponent,
  )


def sparsity_at(
  step,
  hparams: hparams_lib.PruningHParams,
  target_sparsity: float = None,
  dtype=tf.float32,
) -> tf.Tensor:
  """The schedule's sparsity at `step` for a weight with `target_sparsity`.

  A weight with its own target in `weight_sparsity_map` follows the same
  curve towards its own target. (contrib scaled the global curve by
  target_w / target_sparsity, which agrees when initial_sparsity is 0 and
  misses the weight's target otherwise.)

  Args:
    step: the training step.
    hparams: the pruning hparams.
    target_sparsity: the weight's target; defaults to hparams.target_sparsity.
    dtype: the result's float dtype.

  Returns:
    A scalar tensor of `dtype`.
  """
  return polynomial_schedule(hparams, target_sparsity)(step, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class UpdateCondition:
  """contrib's mask update condition, resolved from the hparams.

  Calling it with `(step, last_update_step)` gives the bool scalar tensor

      step >= begin_step
      and (step <= end_step or end_step < 0)
      and last_update_step + frequency <= step
  """

  begin_step: int
  end_step: int
  frequency: int

  def __call__(self, step, last_update_step) -> tf.Tensor:
    step = tf.cast(step, tf.int64)
    last_update_step = tf.cast(last_update_step, tf.int64)
    in_window = step >= self.begin_step
    if self.end_step >= 0:
      in_window = tf.logical_and(in_window, step <= self.end_step)
    due = last_update_step + self.frequency <= step
    return tf.logical_and(in_window, due)


def update_condition(hparams: hparams_lib.PruningHParams) -> UpdateCondition:
  """The update condition of `hparams` (see `should_update`)."""
  return UpdateCondition(
    begin_step=hparams.begin_pruning_step,
    end_step=hparams.end_pruning_step,
    frequency=hparams.pruning_frequency,
  )


def should_update(
  step, last_update_step, hparams: hparams_lib.PruningHParams
) -> tf.Tensor:
  """contrib's condition for a mask update at `step`.

      step >= begin_pruning_step
      and (step <= end_pruning_step or end_pruning_step < 0)
      and last_update_step + pruning_frequency <= step

  `last_update_step` starts at 0 in contrib, so with begin_pruning_step 0 the
  first update is at step == pruning_frequency.

  Args:
    step: the training step (int or integer tensor).
    last_update_step: the step of the last update (int or integer tensor).
    hparams: the pruning hparams.

  Returns:
    A bool scalar tensor.
  """
  return update_condition(hparams)(step, last_update_step)
