"""Tests of export/staging: stale staging paths and what --overwrite may
replace (issue 15, item 9)."""

import errno
import os
import re
import socket
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import tensorflow as tf

from graph_prune import errors
from graph_prune.export import staging


def _dead_pid():
  child = subprocess.Popen([sys.executable, '-c', 'pass'])
  child.wait()
  return child.pid


def _mkdir(*parts):
  path = os.path.join(*parts)
  os.makedirs(path)
  return path


class StagingTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.parent = tempfile.mkdtemp(dir=self.get_temp_dir())

  def test_staging_paths_of_dead_processes_on_this_host_are_removed(self):
    host = socket.gethostname()
    dead = _mkdir(self.parent, f'.model.tmp-{host}-{_dead_pid()}-abc123')
    dead_old = _mkdir(self.parent, f'.model.old-{host}-{_dead_pid()}-abc123')
    with open(os.path.join(dead, 'saved_model.pb'), 'w') as f:
      f.write('half')
    kept = [
      f'.model.tmp-{host}-{os.getpid()}-live00',  # a live process
      f'.model.tmp-another-host-{_dead_pid()}-far000',  # cannot be checked
      '.model.tmp-untagged',  # older graph_prune
      f'.other.tmp-{host}-{_dead_pid()}-abc123',  # another output's
    ]
    for name in kept:
      _mkdir(self.parent, name)
    with staging.Staging() as stage:
      tmp = stage.directory(os.path.join(self.parent, 'model'))
      self.assertTrue(
        os.path.basename(tmp).startswith(f'.model.tmp-{host}-{os.getpid()}-')
      )
      stage.commit()
    self.assertFalse(os.path.exists(dead))
    self.assertFalse(os.path.exists(dead_old))
    self.assertCountEqual(os.listdir(self.parent), kept + ['model'])

  def test_stale_staging_file_is_removed(self):
    host = socket.gethostname()
    stale = os.path.join(self.parent, f'.m.tflite.tmp-{host}-{_dead_pid()}-x1')
    with open(stale, 'w') as f:
      f.write('half')
    with staging.Staging() as stage:
      with open(stage.file(os.path.join(self.parent, 'm.tflite')), 'w') as f:
        f.write('whole')
      stage.commit()
    self.assertEqual(os.listdir(self.parent), ['m.tflite'])

  def test_overwrite_replaces_only_a_saved_model(self):
    other = _mkdir(self.parent, 'project')
    with open(os.path.join(other, 'notes.txt'), 'w') as f:
      f.write('mine')
    with self.assertRaisesRegex(
      errors.OutputExistsError,
      r"'.*project' is not empty and holds no SavedModel \(no "
      r'saved_model.pb\), so it is not replaced even with --overwrite',
    ):
      staging.check_output(other, True, '--overwrite')
    with (
      self.assertRaises(errors.OutputExistsError),
      staging.Staging(overwrite=True) as stage,
    ):
      stage.directory(other)
    self.assertEqual(os.listdir(other), ['notes.txt'])
    saved = _mkdir(self.parent, 'model')
    with open(os.path.join(saved, 'saved_model.pb'), 'w') as f:
      f.write('old')
    staging.check_output(saved, True, '--overwrite')  # may be replaced
    staging.check_output(_mkdir(self.parent, 'empty'), False)

  def test_complete_saved_model(self):
    path = os.path.join(self.parent, 'sm')
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, path)
    self.assertTrue(staging.is_complete_saved_model(path))
    for name in ('fingerprint.pb', 'variables/variables.index'):
      os.rename(os.path.join(path, name), os.path.join(self.parent, 'x'))
      self.assertFalse(staging.is_complete_saved_model(path), name)
      os.rename(os.path.join(self.parent, 'x'), os.path.join(path, name))
    self.assertFalse(staging.is_complete_saved_model(self.parent))


class DiskErrorTest(tf.test.TestCase, parameterized.TestCase):
  """A full or read-only disk: an error naming the output, nothing left."""

  @parameterized.named_parameters(
    ('python_full', 'python', errno.ENOSPC, 'no space left on device'),
    ('python_read_only', 'python', errno.EROFS, 'read-only file system'),
    ('tensorflow_full', 'tensorflow', errno.ENOSPC, 'no space left on device'),
  )
  def test_disk_error_names_the_final_path(self, raiser, code, reason):
    parent = tempfile.mkdtemp(dir=self.get_temp_dir())
    final = os.path.join(parent, 'model')
    with (
      self.assertRaisesRegex(
        errors.OutputWriteError,
        rf"^Cannot write '{re.escape(final)}': {reason}; free space",
      ),
      staging.Staging() as stage,
    ):
      tmp = stage.directory(final)
      where = os.path.join(tmp, 'variables', 'variables.data')
      if raiser == 'python':
        raise OSError(code, os.strerror(code), where)
      # What TensorFlow's file writers raise (e.g. from SavedModel).
      raise tf.errors.UnknownError(
        None, None, f'{where}; No space left on device'
      )
    self.assertEqual(os.listdir(parent), [])

  def test_other_errors_pass_through(self):
    parent = tempfile.mkdtemp(dir=self.get_temp_dir())
    with self.assertRaises(FileNotFoundError), staging.Staging() as stage:
      stage.directory(os.path.join(parent, 'model'))
      raise FileNotFoundError(errno.ENOENT, 'gone', 'x')
    self.assertEqual(os.listdir(parent), [])


if __name__ == '__main__':
  tf.test.main()
