"""Tests of graph_prune.train.datasets on files the tests write themselves."""

import gzip
import os
import struct
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.train import datasets


def _idx_bytes(array, code=0x08):
  header = struct.pack('>BBBB', 0, 0, code, array.ndim)
  header += b''.join(struct.pack('>I', d) for d in array.shape)
  return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def _write(path, data, gz=False):
  with (gzip.open if gz else open)(path, 'wb') as f:
    f.write(data)


class DigitsTest(tf.test.TestCase):
  def test_embedded_digits(self):
    d = datasets.load()
    self.assertEqual(d.x_train.shape, (1437, 8, 8))
    self.assertEqual(d.x_test.shape, (360, 8, 8))
    self.assertEqual(d.x_train.dtype, np.float32)
    self.assertBetween(float(d.x_train.min()), 0.0, 0.0)
    self.assertBetween(float(d.x_train.max()), 1.0, 1.0)
    self.assertAllEqual(np.bincount(d.y_test), [36] * 10)
    self.assertEqual(d.num_classes, 10)
    # Test images are not train images.
    train = {x.tobytes() for x in d.x_train}
    overlap = sum(x.tobytes() in train for x in d.x_test)
    self.assertLess(overlap, 5)


class IdxTest(parameterized.TestCase, tf.test.TestCase):
  def _folder(self, gz):
    folder = tempfile.mkdtemp(dir=self.get_temp_dir())
    rng = np.random.RandomState(0)
    arrays = {
      'x_train': rng.randint(0, 256, (12, 5, 4)).astype(np.uint8),
      'y_train': rng.randint(0, 10, 12).astype(np.uint8),
      'x_test': rng.randint(0, 256, (3, 5, 4)).astype(np.uint8),
      'y_test': rng.randint(0, 10, 3).astype(np.uint8),
    }
    for key, stem in datasets._IDX_FILES.items():
      _write(
        os.path.join(folder, stem + ('.gz' if gz else '')),
        _idx_bytes(arrays[key]),
        gz=gz,
      )
    return folder, arrays

  @parameterized.named_parameters(('raw', False), ('gzip', True))
  def test_mnist_folder(self, gz):
    folder, arrays = self._folder(gz)
    d = datasets.load(folder)
    # Integer images are divided by x_train's largest value (issue 15).
    largest = float(arrays['x_train'].max())
    self.assertAllClose(d.x_train, arrays['x_train'] / largest)
    self.assertAllClose(d.x_test, arrays['x_test'] / largest)
    self.assertAllEqual(d.y_test, arrays['y_test'])
    self.assertEqual(d.y_train.dtype, np.int32)

  def test_read_idx_other_dtypes(self):
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'f')
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    _write(path, _idx_bytes(values, code=0x0C))
    self.assertAllEqual(datasets.read_idx(path), values)

  @parameterized.named_parameters(
    ('magic', b'\x01\x00\x08\x01\x00\x00\x00\x01\x05', 'not an IDX file'),
    ('empty', b'', 'not an IDX file'),
    ('type', b'\x00\x00\x07\x01\x00\x00\x00\x01\x05', 'unknown IDX data type'),
    ('header', b'\x00\x00\x08\x03\x00\x00', 'truncated header'),
    ('size', b'\x00\x00\x08\x01\x00\x00\x00\x03\x05', r'shape \[3\].*holds 1'),
  )
  def test_malformed_idx(self, data, message):
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'bad-idx')
    _write(path, data)
    with self.assertRaisesRegex(errors.DataError, f'bad-idx: .*{message}'):
      datasets.read_idx(path)

  def test_missing_idx_file(self):
    folder, _ = self._folder(False)
    os.remove(os.path.join(folder, 't10k-labels-idx1-ubyte'))
    with self.assertRaisesRegex(
      errors.DataError, 'missing t10k-labels-idx1-ubyte'
    ):
      datasets.load(folder)


class NpzTest(tf.test.TestCase):
  def test_npz(self):
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'd.npz')
    x = np.random.RandomState(1).rand(6, 3, 3).astype(np.float32)
    np.savez(
      path,
      x_train=x,
      y_train=np.arange(6),
      x_test=x[:2],
      y_test=np.array([1, 0]),
    )
    d = datasets.load(path)
    self.assertAllClose(d.x_train, x)
    self.assertAllEqual(d.y_test, [1, 0])

  def test_errors(self):
    folder = tempfile.mkdtemp(dir=self.get_temp_dir())
    with self.assertRaisesRegex(errors.DataError, 'does not exist'):
      datasets.load(os.path.join(folder, 'nope.npz'))
    path = os.path.join(folder, 'd.npz')
    np.savez(path, x_train=np.zeros((2, 2)), y_train=np.zeros(2, np.int64))
    with self.assertRaisesRegex(
      errors.DataError, r"lacks \['x_test', 'y_test'\]"
    ):
      datasets.load(path)
    np.savez(
      path,
      x_train=np.zeros((2, 2)),
      y_train=np.zeros(3, np.int64),
      x_test=np.zeros((1, 2)),
      y_test=np.zeros(1, np.int64),
    )
    with self.assertRaisesRegex(errors.DataError, 'x_train has 2 examples'):
      datasets.load(path)
    junk = os.path.join(folder, 'junk.npz')
    with open(junk, 'w') as f:
      f.write('not a zip')
    with self.assertRaisesRegex(errors.DataError, 'not a readable .npz'):
      datasets.load(junk)


class CheckedDataTest(parameterized.TestCase, tf.test.TestCase):
  """Bad data is refused with a DataError, never a traceback (issue 15)."""

  def _npz(self, **changes):
    arrays = dict(
      x_train=np.arange(24, dtype=np.float32).reshape(6, 4) / 24,
      y_train=np.array([0, 1, 2, 0, 1, 2]),
      x_test=np.ones((2, 4), np.float32),
      y_test=np.array([1, 2]),
    )
    arrays.update(changes)
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'd.npz')
    np.savez(path, **arrays)
    return path

  def test_packaged_digits_as_data_span_zero_to_one(self):
    packaged = os.path.join(datasets._DATA_DIR, 'digits.npz')
    d = datasets.load(packaged)
    with np.load(packaged) as raw:
      largest = float(raw['x_train'].max())  # 16: the digits' 4-bit pixels
      self.assertAllClose(d.x_train, raw['x_train'] / largest)
    self.assertEqual(float(d.x_train.max()), 1.0)
    self.assertAllClose(d.x_test, datasets.load_digits().x_test)

  @parameterized.named_parameters(
    (
      'stray_label',
      dict(y_train=np.array([0, 1, 2, 0, 1, 100000])),
      r'largest label is 100000 but only 4 distinct labels occur',
    ),
    (
      'one_d_images',
      dict(x_train=np.zeros(6), x_test=np.zeros(2)),
      r'x_train has shape \[6\]; images need a shape \[examples, features',
    ),
    (
      'nan_pixel',
      dict(x_test=np.array([[0, 1, np.nan, 0], [0] * 4])),
      r'x_test holds NaN or Inf pixels \(first at index \[0, 2\]\)',
    ),
    (
      'inf_pixel',
      dict(x_train=np.full((6, 4), np.inf)),
      r'x_train holds NaN or Inf pixels',
    ),
    (
      'string_images',
      dict(x_train=np.full((6, 4), 'a')),
      r'x_train has dtype <U1; images must be integers or floats',
    ),
  )
  def test_bad_arrays(self, changes, message):
    with self.assertRaisesRegex(errors.DataError, message):
      datasets.load(self._npz(**changes))

  def test_truncated_npz(self):
    path = self._npz()
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(data[: len(data) // 2])
    with self.assertRaisesRegex(errors.DataError, 'not a readable .npz file'):
      datasets.load(path)

  def test_corrupt_gzip_idx(self):
    path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), 'f.gz')
    packed = gzip.compress(_idx_bytes(np.arange(400, dtype=np.uint8) % 7))
    # Damage the deflate stream, keep the gzip header intact.
    packed = packed[:12] + bytes(b ^ 0x5A for b in packed[12:-8]) + packed[-8:]
    with open(path, 'wb') as f:
      f.write(packed)
    with self.assertRaisesRegex(errors.DataError, r'f\.gz: cannot be read'):
      datasets.read_idx(path)


if __name__ == '__main__':
  tf.test.main()
