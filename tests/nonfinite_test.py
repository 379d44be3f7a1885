"""Tests of graph_prune/nonfinite: the NaN/Inf check as a graph_prune error."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.masks import masking
from graph_prune.masks.mask_structure import MaskStructure
from graph_prune.model import nonfinite


class NonFiniteTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ('eager', False),
    ('tf_function', True),  # quotes escaped in functions
  )
  def test_failed_check_becomes_one_clean_sentence(self, in_function):
    def mask(w):
      return masking.compute_mask(w, 0.5, MaskStructure(), name='d/kernel')

    fn = tf.function(mask) if in_function else mask
    weight = tf.constant([[1.0, np.inf], [2.0, 3.0]])
    with (
      self.assertRaises(errors.NonFiniteWeightError) as caught,
      nonfinite.non_finite_as_error(),
    ):
      fn(weight)
    self.assertEqual(
      str(caught.exception),
      "weight 'd/kernel' holds NaN or Inf, so its pruning mask cannot be "
      'computed; training has diverged (lower the learning rate or clip '
      'gradients) or the weight was loaded wrong.',
    )
    self.assertIsInstance(caught.exception, ValueError)

  def test_other_errors_pass_through(self):
    with (
      self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'other'),
      nonfinite.non_finite_as_error(),
    ):
      raise tf.errors.InvalidArgumentError(None, None, 'some other check')
    self.assertIsNone(nonfinite.non_finite_message(ValueError('x')))


if __name__ == '__main__':
  tf.test.main()
