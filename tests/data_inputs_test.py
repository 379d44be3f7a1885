"""Tests of graph_prune/model/data_inputs.py: the one reader of example inputs.

No model is built: the reader takes an input signature. What is checked:
  * every form (array, nested lists, list of batches, batched and
    unbatched Dataset, (inputs, labels), dict, .npz keys, .npy) gives the
    same float32 values, NumPy's cast of the data;
  * integer data is cast as it is, never divided by its dtype's maximum;
    an .npz with x_train is scaled as the training binary scales it (the
    same values `train.datasets.load` gives for that file);
  * multi-input signatures by name, fixed batch dimensions by re-batching;
  * every bad input is one `ExampleDataError` line (a ValueError) naming
    the value: the count and first index of NaN/Inf computed with NumPy,
    which input and dimension, expected and given shapes.
"""

import os
import zipfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.model import data_inputs
from graph_prune.train import datasets

SIGNATURE = (tf.TensorSpec([None, 16], tf.float32, name='x'),)
TWO_INPUTS = {
  'a': tf.TensorSpec([None, 4], tf.float32, name='a'),
  'b': tf.TensorSpec([None, 3], tf.int32, name='b'),
}


def _x(n=40):
  return np.random.RandomState(0).rand(n, 16)


def _values(batches):
  """All examples of single-input batches, concatenated."""
  return np.concatenate([b[0] for b in batches])


class FormsTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = os.path.join(tf.compat.v1.test.get_temp_dir(), 'forms')
    os.makedirs(cls.dir, exist_ok=True)
    x = _x()
    np.savez(os.path.join(cls.dir, 'x.npz'), x=x)
    np.savez(os.path.join(cls.dir, 'inputs.npz'), inputs=x, other=x[:2])
    np.savez(os.path.join(cls.dir, 'one.npz'), anything=x)
    np.save(os.path.join(cls.dir, 'x.npy'), x)

  @parameterized.named_parameters(
    ('array', lambda x, d: x),
    ('nested_lists', lambda x, d: x.tolist()),
    ('list_of_batches', lambda x, d: [x[:7], x[7:30], x[30:]]),
    ('list_of_pairs', lambda x, d: [(x[:20], np.zeros(20)), (x[20:], None)]),
    (
      'batched_dataset',
      lambda x, d: tf.data.Dataset.from_tensor_slices(x).batch(6),
    ),
    ('unbatched_dataset', lambda x, d: tf.data.Dataset.from_tensor_slices(x)),
    (
      'dataset_with_labels',
      lambda x, d: tf.data.Dataset.from_tensor_slices((x, np.arange(40))).batch(
        9
      ),
    ),
    ('dict', lambda x, d: {'x': x}),
    ('npz_x', lambda x, d: os.path.join(d, 'x.npz')),
    ('npz_inputs', lambda x, d: os.path.join(d, 'inputs.npz')),
    ('npz_single_array', lambda x, d: os.path.join(d, 'one.npz')),
    ('npy', lambda x, d: os.path.join(d, 'x.npy')),
  )
  def test_every_form_gives_the_same_values(self, make):
    x = _x()
    batches = data_inputs.read_example_inputs(make(x, self.dir), SIGNATURE)
    self.assertLen(batches, 1)
    (got,) = batches[0]
    self.assertEqual(got.dtype, np.float32)
    self.assertAllEqual(got, x.astype(np.float32))

  def test_max_examples_and_batch_size(self):
    x = _x(100)
    batches = data_inputs.read_example_inputs(
      x, SIGNATURE, batch_size=32, max_examples=70
    )
    self.assertEqual([len(b[0]) for b in batches], [32, 32, 6])
    self.assertAllEqual(_values(batches), x[:70].astype(np.float32))

  def test_integer_data_is_cast_as_it_is(self):
    # 0..16 as int64: never divided by int64's maximum (~9.2e18).
    x = (np.arange(40 * 16) % 17).reshape(40, 16).astype(np.int64)
    (batch,) = data_inputs.read_example_inputs(x, SIGNATURE)
    self.assertAllEqual(batch[0], x.astype(np.float32))
    self.assertEqual(float(batch[0].max()), 16.0)

  def test_training_npz_is_scaled_as_the_training_binary_scales_it(self):
    rng = np.random.RandomState(1)
    images = rng.randint(0, 200, (30, 4, 4)).astype(np.uint8)
    labels = rng.randint(0, 3, 30).astype(np.int32)
    path = os.path.join(self.get_temp_dir(), 'train.npz')
    np.savez(
      path,
      x_train=images[:20],
      y_train=labels[:20],
      x_test=images[20:],
      y_test=labels[20:],
    )
    signature = tf.TensorSpec([None, 4, 4], tf.float32)
    (got,) = data_inputs.read_example_inputs(path, signature)
    largest = np.abs(images[:20].astype(np.float64)).max()
    self.assertAllClose(got, images[:20] / largest, rtol=1e-6)
    # Exactly what graph_prune_train trains on for that file.
    self.assertAllEqual(got, datasets.load(path).x_train)

  def test_two_inputs_by_name(self):
    a = np.random.RandomState(2).rand(10, 4)
    b = np.arange(30).reshape(10, 3)
    for data in (
      {'a': a, 'b': b},
      [{'a': a[:4], 'b': b[:4]}, {'a': a[4:], 'b': b[4:]}],
      tf.data.Dataset.from_tensor_slices(({'a': a, 'b': b}, np.zeros(10))),
    ):
      (batch,) = data_inputs.read_example_inputs(data, TWO_INPUTS)
      self.assertAllEqual(batch['a'], a.astype(np.float32))
      self.assertAllEqual(batch['b'], b.astype(np.int32))
      self.assertEqual(batch['b'].dtype, np.int32)

  def test_positional_structure_is_packed_like_the_signature(self):
    signature = (
      [
        tf.TensorSpec([None, 4], tf.float32, name='a'),
        tf.TensorSpec([None, 3], tf.float32, name='b'),
      ],
    )
    self.assertEqual(data_inputs.input_names(signature), ('a', 'b'))
    a, b = np.ones((5, 4)), np.zeros((5, 3))
    (batch,) = data_inputs.read_example_inputs({'a': a, 'b': b}, signature)
    ((got_a, got_b),) = batch
    self.assertAllEqual(got_a, a)
    self.assertAllEqual(got_b, b)

  def test_fixed_batch_dimension_rebatches(self):
    signature = tf.TensorSpec([8, 4, 3], tf.float32)
    x = np.random.RandomState(3).rand(20, 4, 3)
    batches = data_inputs.read_example_inputs(x, signature)
    self.assertEqual([b.shape for b in batches], [(8, 4, 3), (8, 4, 3)])
    self.assertAllEqual(np.concatenate(batches), x[:16].astype(np.float32))


def _inf_and_nan():
  x = _x()
  x[3, 2], x[5, 1], x[9, 0] = np.inf, np.nan, -np.inf
  return x


def _object_of_none():
  return np.array([[None] * 16] * 3)


class ErrorsTest(tf.test.TestCase, parameterized.TestCase):
  """Each bad input: one line, the value and the fix, ExampleDataError."""

  def assert_one_line_error(self, data, pattern, signature=SIGNATURE):
    with self.assertRaises(errors.ExampleDataError) as raised:
      data_inputs.read_example_inputs(data, signature)
    message = str(raised.exception)
    self.assertIsInstance(raised.exception, ValueError)
    self.assertNotIn('\n', message)
    self.assertRegex(message, pattern)
    return message

  def test_non_finite_values_are_counted_and_located(self):
    x = _inf_and_nan()
    bad = np.argwhere(~np.isfinite(x))
    message = self.assert_one_line_error(x, 'non-finite')
    self.assertIn(f'holds {len(bad)} non-finite values', message)
    self.assertIn(
      f'the first at example {bad[0][0]}, index {bad[0].tolist()} (inf)',
      message,
    )
    self.assertIn("for input 'x'", message)
    self.assertIn('numpy.nan_to_num', message)

  def test_nan_is_refused(self):
    x = _x()
    x[7, 7] = np.nan
    self.assert_one_line_error(
      x, r'1 non-finite value .*index \[7, 7\] \(nan\)'
    )

  def test_overflow_of_the_float_input_is_refused(self):
    x = _x()
    x[0, 4] = 1e39  # finite as float64, Inf as float32
    self.assert_one_line_error(x, r'1e\+39 overflows float32')

  def test_inf_in_an_unbatched_dataset(self):
    x = _inf_and_nan()
    self.assert_one_line_error(
      tf.data.Dataset.from_tensor_slices(x), r'3 non-finite values'
    )

  @parameterized.named_parameters(
    ('object_of_none', _object_of_none(), r'object array .* not numbers'),
    ('list_of_none', [None, None], r'the data is an object array'),
    ('strings', np.array([['a'] * 16]), r'<U1 values .* not numbers'),
    (
      'complex',
      np.zeros((3, 16), np.complex64),
      r'is complex \(complex64\) .* takes real float32 values; pass real',
    ),
    ('bool', np.zeros((3, 16), bool), r'is bool but .* pass float or integer'),
    ('empty_array', np.zeros((0, 16)), r'holds no example .*shape \[0, 16\]'),
    ('empty_list', [], r'holds no example \(an empty list\)'),
    (
      'empty_dataset',
      tf.data.Dataset.from_tensor_slices(np.zeros((0, 16))),
      r'holds no example \(the Dataset yields no element\)',
    ),
    (
      'wrong_rank',
      np.zeros((4, 2, 16)),
      r"input 'x' takes shape \[None, 16\] \(rank 2\) but the data has shape "
      r'\[4, 2, 16\] \(rank 3\); pass inputs of shape \[n, 16\]',
    ),
    (
      'one_dimensional',
      np.zeros(16),
      r'has shape \[16\] \(rank 1\); add the batch dimension first',
    ),
    (
      'wrong_width',
      np.zeros((64, 7)),
      r"input 'x' takes shape \[None, 16\] but the data has shape \[64, 7\]: "
      r'dimension 1 is 7, not 16; pass inputs of shape \[n, 16\]',
    ),
    (
      'ragged_batches',
      [np.zeros((2, 16)), np.zeros((3, 15))],
      r'batch 1 of the list has shape \[3, 15\]: dimension 1 is 15',
    ),
    ('none', None, r'is None; pass an array'),
  )
  def test_bad_data(self, data, pattern):
    self.assert_one_line_error(data, pattern)

  def test_files(self):
    root = self.get_temp_dir()
    good = os.path.join(root, 'good.npz')
    np.savez(good, x=_x())
    with open(good, 'rb') as f:
      raw = f.read()
    truncated = os.path.join(root, 'truncated.npz')
    with open(truncated, 'wb') as f:
      f.write(raw[: len(raw) // 2])
    text = os.path.join(root, 'text.npz')
    with open(text, 'w') as f:
      f.write('not numpy')
    objects = os.path.join(root, 'objects.npy')
    np.save(objects, np.array([None, 1.0]), allow_pickle=True)
    other = os.path.join(root, 'other.npz')
    np.savez(other, a=np.zeros(2), b=np.zeros(2))
    cases = {
      os.path.join(
        root, 'missing.npz'
      ): r"file '.*missing\.npz' does not exist",
      root: r'is a directory; pass an \.npz',
      truncated: r"'.*truncated\.npz' is not a readable \.npz or \.npy file "
      r'\(.+\); write it again',
      text: r"'.*text\.npz' is not a readable \.npz or \.npy",
      objects: r'holds an object array \(pickled Python objects\)',
      other: r"has arrays \['a', 'b'\] but none of x_train, x, inputs",
    }
    self.assertTrue(zipfile.is_zipfile(good))
    for path, pattern in cases.items():
      with self.subTest(os.path.basename(path)):
        self.assert_one_line_error(path, pattern)

  def test_two_inputs(self):
    a, b = np.zeros((5, 4)), np.zeros((5, 3), np.int64)
    self.assert_one_line_error(
      a,
      r"takes 2 inputs \['a', 'b'\] but the data is one array of shape "
      r'\[5, 4\]; pass a dict',
      TWO_INPUTS,
    )
    self.assert_one_line_error(
      {'a': a, 'c': b},
      r"has inputs \['a', 'c'\] but the model takes",
      TWO_INPUTS,
    )
    self.assert_one_line_error(
      {'a': a, 'b': b.astype(np.float32)},
      r"is float32 but input 'b' is int32; pass integer data",
      TWO_INPUTS,
    )
    self.assert_one_line_error(
      {'a': a, 'b': b + 2**40},
      r"input 'b' is int32 but the data holds values from 1099511627776",
      TWO_INPUTS,
    )
    self.assert_one_line_error(
      {'a': a, 'b': b[:3]},
      r'different numbers of examples \(a 5, b 3\)',
      TWO_INPUTS,
    )

  def test_too_few_examples_for_a_fixed_batch(self):
    self.assert_one_line_error(
      np.zeros((3, 4, 3)),
      r'has 3 examples but the model takes batches of exactly 8 .* pass at '
      r'least 8',
      tf.TensorSpec([8, 4, 3], tf.float32),
    )


if __name__ == '__main__':
  tf.test.main()
