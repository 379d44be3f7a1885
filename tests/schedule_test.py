"""Tests of graph_prune.masks.schedule against contrib's closed form."""

from absl.testing import parameterized
import tensorflow as tf

from graph_prune.config.hparams import parse_hparams
from graph_prune.masks import schedule


def _closed_form(t, s_i, s_f, t0, t1, e):
  p = min(max((t - t0) / (t1 - t0), 0.0), 1.0)
  return s_f + (s_i - s_f) * (1.0 - p) ** e


class PolynomialSparsityTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    ('contrib_default', 0.0, 0.5, 0, 100, 3.0),
    ('linear', 0.1, 0.9, 10, 110, 1.0),
    ('late_start', 0.0, 0.95, 1000, 5000, 3.0),
    ('fractional_exponent', 0.2, 0.8, 0, 7, 0.5),
    ('decreasing', 0.6, 0.3, 5, 25, 2.0),
  )
  def test_matches_closed_form(self, s_i, s_f, t0, t1, e):
    steps = sorted(
      {0, t0, t0 + 1, (t0 + t1) // 2, t1 - 1, t1, t1 + 1, 2 * t1 + 5}
    )
    for t in steps:
      got = schedule.polynomial_sparsity(
        t,
        initial_sparsity=s_i,
        target_sparsity=s_f,
        begin_step=t0,
        end_step=t1,
        exponent=e,
      )
      self.assertEqual(got.dtype, tf.float32)
      self.assertAllClose(
        got, _closed_form(t, s_i, s_f, t0, t1, e), atol=1e-7, msg=f'step {t}'
      )

  def test_endpoints(self):
    h = parse_hparams(
      'initial_sparsity=0.1,target_sparsity=0.9,'
      'sparsity_function_begin_step=50,'
      'sparsity_function_end_step=150'
    )
    self.assertAllClose(schedule.sparsity_at(0, h), 0.1)
    self.assertAllClose(schedule.sparsity_at(50, h), 0.1)
    self.assertAllClose(schedule.sparsity_at(150, h), 0.9)
    self.assertAllClose(schedule.sparsity_at(10**9, h), 0.9)

  def test_large_steps_stay_exact(self):
    # float32 cannot hold 2**24 + 1; the schedule computes in float64.
    t0 = 2**24
    got = schedule.polynomial_sparsity(
      t0 + 1,
      initial_sparsity=0.0,
      target_sparsity=0.5,
      begin_step=t0,
      end_step=t0 + 2,
      exponent=1.0,
    )
    self.assertAllClose(got, 0.25)

  def test_weight_target_follows_own_curve(self):
    h = parse_hparams(
      'initial_sparsity=0.2,target_sparsity=0.5,sparsity_function_end_step=10'
    )
    for t in range(12):
      self.assertAllClose(
        schedule.sparsity_at(t, h, target_sparsity=0.8),
        _closed_form(t, 0.2, 0.8, 0, 10, 3.0),
      )
    self.assertAllClose(schedule.sparsity_at(10, h, target_sparsity=0.8), 0.8)

  def test_in_tf_function_with_int64_step(self):
    h = parse_hparams('target_sparsity=0.9,sparsity_function_end_step=200')
    fn = tf.function(lambda step: schedule.sparsity_at(step, h))
    for t in [0, 37, 100, 199, 200, 500]:
      self.assertAllClose(
        fn(tf.constant(t, tf.int64)), _closed_form(t, 0.0, 0.9, 0, 200, 3.0)
      )


class ShouldUpdateTest(parameterized.TestCase, tf.test.TestCase):
  def _sequence(self, h, steps):
    """Runs contrib's loop: update, then record the step."""
    last, updated = 0, []
    for t in steps:
      if bool(schedule.should_update(t, last, h)):
        last = t
        updated.append(t)
    return updated

  def test_contrib_conditional_update_steps(self):
    h = parse_hparams(
      'pruning_frequency=2,begin_pruning_step=1,end_pruning_step=6'
    )
    self.assertEqual(self._sequence(h, range(10)), [2, 4, 6])

  def test_begin_zero_first_update_at_frequency(self):
    h = parse_hparams('pruning_frequency=10')
    self.assertEqual(self._sequence(h, range(35)), [10, 20, 30])

  def test_no_end(self):
    h = parse_hparams('pruning_frequency=3,begin_pruning_step=100')
    self.assertEqual(self._sequence(h, range(95, 112)), [100, 103, 106, 109])

  def test_end_equal_begin_is_one_update(self):
    h = parse_hparams(
      'pruning_frequency=1,begin_pruning_step=7,end_pruning_step=7'
    )
    self.assertEqual(self._sequence(h, range(20)), [7])

  def test_skipped_steps_update_when_due(self):
    h = parse_hparams('pruning_frequency=10')
    # Steps need not be consecutive (e.g. resumed training).
    self.assertEqual(self._sequence(h, [3, 12, 13, 25, 26, 40]), [12, 25, 40])

  def test_matches_formula_on_grid(self):
    h = parse_hparams(
      'pruning_frequency=4,begin_pruning_step=3,end_pruning_step=20'
    )
    fn = tf.function(lambda t, last: schedule.should_update(t, last, h))
    for t in range(25):
      for last in range(0, 25, 3):
        expected = t >= 3 and t <= 20 and last + 4 <= t
        self.assertEqual(
          bool(fn(tf.constant(t, tf.int64), tf.constant(last, tf.int64))),
          expected,
          (t, last),
        )


if __name__ == '__main__':
  tf.test.main()
