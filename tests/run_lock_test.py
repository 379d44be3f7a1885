"""Tests of train/run_lock: one training run per model_dir (issue 15, 5)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf

from graph_prune.train import errors
from graph_prune.train import experiment
from graph_prune.train import run_lock

# A process without TensorFlow that takes the lock, says so, and waits.
_HOLDER = textwrap.dedent(
  """
  import sys, time
  from graph_prune.train import run_lock
  with run_lock.hold(sys.argv[1]):
    print('locked', flush=True)
    time.sleep(60)
  """
)


def _start_holder(model_dir):
  holder = subprocess.Popen(
    [sys.executable, '-c', _HOLDER, model_dir],
    stdout=subprocess.PIPE,
    text=True,
  )
  assert holder.stdout.readline().strip() == 'locked'
  return holder


class RunLockTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    self.model_dir = tempfile.mkdtemp(dir=self.get_temp_dir())

  def test_second_holder_is_refused_naming_the_first(self):
    with (
      run_lock.hold(self.model_dir),
      self.assertRaisesRegex(
        errors.ModelDirBusyError,
        rf'is in use by another training run \(pid {os.getpid()} on '
        rf'{socket.gethostname()}\); wait for it',
      ),
      run_lock.hold(self.model_dir),
    ):
      pass
    with run_lock.hold(self.model_dir):  # released at the end of the with
      pass

  def test_lock_of_a_killed_process_is_released(self):
    holder = _start_holder(self.model_dir)
    try:
      with (
        self.assertRaisesRegex(
          errors.ModelDirBusyError, rf'\(pid {holder.pid} on '
        ),
        run_lock.hold(self.model_dir),
      ):
        pass
    finally:
      holder.send_signal(signal.SIGKILL)
      holder.wait(timeout=30)
    with run_lock.hold(self.model_dir) as path, open(path) as f:
      self.assertEqual(
        f.read(), f'pid {os.getpid()} on {socket.gethostname()}\n'
      )

  def test_second_trainer_on_a_locked_model_dir_is_refused(self):
    holder = _start_holder(self.model_dir)
    try:
      config = experiment.TrainConfig(
        hparams='target_sparsity=0.5', train_steps=0, model_dir=self.model_dir
      )
      with self.assertRaisesRegex(
        errors.ModelDirBusyError, 'pass another --model_dir'
      ):
        experiment.train(config, log=lambda line: None)
    finally:
      holder.send_signal(signal.SIGKILL)
      holder.wait(timeout=30)
    # Refused before anything was written: no record, no checkpoint.
    self.assertEqual(os.listdir(self.model_dir), [run_lock.LOCK_FILE])


if __name__ == '__main__':
  tf.test.main()
