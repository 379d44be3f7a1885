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
    self.assertAllClose(d.x_train, arrays['x_train'] / 255.0)
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


if __name__ == '__main__':
  tf.test.main()
