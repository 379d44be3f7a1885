"""One training run per model_dir: an exclusive lock the kernel releases.

    with run_lock.hold(model_dir):
      ...  # restore, train, checkpoint, export

Two trainers on one `model_dir` would both start from the same checkpoint
and overwrite each other's checkpoints and exports, so the second one is
refused. The lock is `fcntl.flock` on `model_dir/.graph_prune.lock`: the
kernel drops it when the holding process ends in any way (even SIGKILL), so
a killed run never leaves the directory locked, and no pid has to be judged
stale. The file records the holder's host and pid for the message; it stays
in place between runs (removing it would race with a new holder).

`flock` is advisory and local to one kernel: on a network file system that
does not forward it, two hosts are not kept apart (the multi-worker chief is
one process, so its own workers never take the lock).
"""

import contextlib
import fcntl
import os
import socket
from typing import Iterator

from graph_prune.train import errors

LOCK_FILE = '.graph_prune.lock'


@contextlib.contextmanager
def hold(model_dir: str) -> Iterator[str]:
  """Holds the exclusive lock of `model_dir` for the `with` body.

  Args:
    model_dir: an existing directory.

  Yields:
    The lock file's path.

  Raises:
    errors.ModelDirBusyError: another live process holds the lock.
  """
  path = os.path.join(model_dir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode('utf-8', 'replace').strip()
      raise errors.ModelDirBusyError(
        f'{model_dir} is in use by another training run '
        f'({holder or "a process that has not written its pid yet"}); wait '
        'for it to end (or stop it), or pass another --model_dir.'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
    yield path
  finally:
    os.close(fd)  # releases the lock
