"""Estimates of the time a run has left, for progress lines."""

from typing import Mapping


def format_duration(seconds: float) -> str:
  """'42 s', '3 min 05 s', '1 h 02 min': short, for a progress line."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f'{seconds} s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes} min {seconds:02d} s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours} h {minutes:02d} min'


def steps_left(step: int, last_step: int, steps_per_second: float) -> float:
  """Seconds until `last_step` at the current speed (0 when done or idle)."""
  if step >= last_step or steps_per_second <= 0:
    return 0.0
  return (last_step - step) / steps_per_second


def work_left(
  remaining: Mapping[str, float], seconds_per_unit: Mapping[str, float]
) -> float:
  """Seconds for the remaining units of work of each kind.

  Args:
    remaining: kind -> how many units are left (e.g. training steps).
    seconds_per_unit: kind -> the measured seconds per unit so far; a kind
      not measured yet counts as nothing.

  Returns:
    The estimate in seconds.
  """
  return sum(
    count * seconds_per_unit.get(kind, 0.0) for kind, count in remaining.items()
  )
