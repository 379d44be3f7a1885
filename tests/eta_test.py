"""Tests of the time-left estimates in progress lines."""

from absl.testing import parameterized
import tensorflow as tf

from graph_prune.train import eta


class FormatDurationTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('zero', 0, '0 s'),
    ('negative', -3, '0 s'),
    ('seconds', 42.4, '42 s'),
    ('rounds_up_to_a_minute', 59.6, '1 min 00 s'),
    ('minutes', 185, '3 min 05 s'),
    ('hours', 3720, '1 h 02 min'),
  )
  def test_format(self, seconds, text):
    self.assertEqual(eta.format_duration(seconds), text)


class EstimateTest(tf.test.TestCase):
  def test_steps_left_is_remaining_steps_over_speed(self):
    self.assertAllClose(eta.steps_left(100, 1400, 50.0), 1300 / 50.0)

  def test_nothing_left_at_the_end_or_without_speed(self):
    self.assertEqual(eta.steps_left(1400, 1400, 50.0), 0.0)
    self.assertEqual(eta.steps_left(10, 1400, 0.0), 0.0)

  def test_work_left_sums_kinds_at_their_rates(self):
    left = eta.work_left(
      {'dense': 300, 'retrain': 1200, 'oneshot': 4},
      {'dense': 0.01, 'retrain': 0.02, 'oneshot': 0.5},
    )
    self.assertAllClose(left, 300 * 0.01 + 1200 * 0.02 + 4 * 0.5)

  def test_unmeasured_kind_counts_as_nothing(self):
    self.assertEqual(eta.work_left({'retrain': 100}, {'dense': 0.1}), 0.0)


if __name__ == '__main__':
  tf.test.main()
