"""Trains a small pruned MLP under a tf.distribute strategy, for the tests.

Run as a script, one process per worker (distribute_test.py and
multi_worker_test.py start it):

  python tests/multi_worker_worker.py --strategy=mirrored --num_cpu_devices=2 \
      --steps=200 --out=DIR
  TF_CONFIG='{"cluster": ..., "task": {"type": "worker", "index": 0}}' \
      python tests/multi_worker_worker.py --strategy=multi_worker --out=DIR

Each worker writes DIR/<task>.npz (every local copy of every mask, threshold
and weight, the steps at which the masks were updated, the outputs on fixed
inputs); the chief also writes the checkpoint DIR/ckpt-1. With --resume_at=N
a run also writes a checkpoint at step N, restores it under the strategy into
fresh objects and resumes to step --steps (keys 'resumed_*'). With two or
more local replicas it then makes replica 1's copies differ and records each
replica's outputs and gradients (`replica_check`).

Imported, `train(strategy, steps)` runs the same training in-process (the
tests run it with the default strategy as the single-device reference), and
`launch`/`launch_in_temp_dir` run this script as worker processes.

TensorFlow, Keras and graph_prune are imported inside the functions: the
script must build its strategy (split the CPU into logical devices, join the
cluster) before anything initializes TensorFlow.
"""
# pylint: disable=g-import-not-at-top

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

SPEC = (
  'target_sparsity=0.8,begin_pruning_step=0,end_pruning_step=150,'
  'pruning_frequency=10,sparsity_function_end_step=100'
)
GLOBAL_BATCH = 32


def data():
  rng = np.random.RandomState(0)
  x = rng.standard_normal((1024, 12)).astype(np.float32)
  y = rng.randint(0, 4, 1024).astype(np.int32)
  return x, y


def build(strategy):
  """Model, pruned model and optimizer, created under `strategy.scope()`."""
  import keras

  import graph_prune

  with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
      [
        keras.Input((12,)),
        keras.layers.Dense(32, activation='relu', name='d1'),
        keras.layers.Dense(16, activation='relu', name='d2'),
        keras.layers.Dense(4, name='out'),
      ]
    )
    pruned = graph_prune.apply_pruning(model, SPEC)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
  return model, pruned, optimizer


def train(strategy, steps, objects=None):
  """Trains for `steps` steps (from the optimizer's current iteration).

  Returns:
    (model, pruned, optimizer, steps at which the masks were updated).
  """
  import keras

  from graph_prune.train import strategies

  model, pruned, optimizer = objects or build(strategy)
  loss = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=None
  )
  step = strategies.make_train_step(
    strategy, pruned, model.trainable_variables, optimizer, loss, GLOBAL_BATCH
  )
  x, y = data()
  updates = []
  for _ in range(steps):
    i = (int(optimizer.iterations.numpy()) * GLOBAL_BATCH) % len(x)
    xb, yb = strategies.distribute_batch(
      strategy, x[i : i + GLOBAL_BATCH], y[i : i + GLOBAL_BATCH]
    )
    _, updated = step(xb, yb)
    if bool(updated):
      updates.append(int(optimizer.iterations.numpy()))
  return model, pruned, optimizer, updates


def state(model, pruned, optimizer, updates):
  """Every local copy of the masks, thresholds and weights, as arrays."""
  from graph_prune.model import distribute

  result = {
    'updates': np.array(updates, np.int64),
    'iterations': np.array(int(optimizer.iterations.numpy())),
    'outputs': np.asarray(pruned(data()[0][:64])),
  }
  for kind, variables in (
    ('mask', pruned.masks),
    ('threshold', pruned.thresholds),
    ('weight', [v.value for v in model.weights]),
  ):
    for i, v in enumerate(variables):
      result[f'{kind}_{i}'] = np.stack(
        [c.numpy() for c in distribute.local_copies(v)]
      )
  return result


def replica_check(strategy, model, pruned):
  """Makes replica 1's copies differ, then runs each replica's step.

  Replica 1's copies of the first kernel, its mask and the second bias are
  changed, so a replica that read another replica's copy would give other
  outputs and gradients than computed from its own copies. Returns, stacked
  over replicas: the pruned outputs, the gradients of the summed loss on the
  replica's slice, and every copy of the weights and masks.
  """
  import keras
  import tensorflow as tf

  from graph_prune.model import distribute
  from graph_prune.train import strategies

  rng = np.random.RandomState(7)
  kernel = distribute.local_copies(model.layers[0].kernel.value)
  mask = distribute.local_copies(pruned.masks[0])
  bias = distribute.local_copies(model.layers[1].bias.value)
  kernel[1].assign(kernel[1] + 0.5)
  mask[1].assign((rng.rand(*mask[1].shape) < 0.5).astype(np.float32))
  bias[1].assign(bias[1] + 1.0)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=None
  )
  variables = model.trainable_variables

  def per_replica(xb, yb):
    with tf.GradientTape() as tape:
      outputs = pruned(xb)
      loss = tf.reduce_sum(loss_fn(yb, outputs))
    return outputs, tape.gradient(loss, variables)

  x, y = data()
  inputs = strategies.distribute_batch(
    strategy, x[:GLOBAL_BATCH], y[:GLOBAL_BATCH]
  )
  results = tf.function(lambda a, b: strategy.run(per_replica, (a, b)))(*inputs)
  local = strategy.experimental_local_results
  outputs, grads = results
  check = {'check_outputs': np.stack(local(outputs))}
  for i, grad in enumerate(grads):
    check[f'check_grad_{i}'] = np.stack(local(grad))
  for i, v in enumerate(variables):
    check[f'check_weight_{i}'] = np.stack(
      [c.numpy() for c in distribute.local_copies(v.value)]
    )
  for i, m in enumerate(pruned.masks):
    check[f'check_mask_{i}'] = np.stack(
      [c.numpy() for c in distribute.local_copies(m)]
    )
  return check


def outside_scope_error(strategy):
  """The error of apply_pruning under `strategy` for a model built outside."""
  import keras

  import graph_prune
  from graph_prune import errors

  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  with strategy.scope():
    try:
      graph_prune.apply_pruning(model)
    except errors.StrategyError as e:
      return str(e)
  return 'no error'


def checkpoint(model, pruned, optimizer):
  import tensorflow as tf

  return tf.train.Checkpoint(model=model, pruned=pruned, optimizer=optimizer)


def free_ports(n):
  """`n` TCP ports free on localhost right now (another process may still
  take one before the worker binds it; the test then fails, never hangs)."""
  sockets = [socket.socket() for _ in range(n)]
  try:
    for sock in sockets:
      sock.bind(('localhost', 0))
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def launch(out, strategy, num_workers=1, args=(), timeout=120):
  """Runs this script as `num_workers` processes and waits for all of them.

  Multi-worker runs get a `TF_CONFIG` each, on free localhost ports. Every
  process is killed (its whole process group) if any fails or the timeout
  passes, and whatever happens, before this returns.

  Args:
    out: the output directory (--out).
    strategy: --strategy.
    num_workers: processes to start (1 unless 'multi_worker').
    args: more command-line arguments.
    timeout: seconds for all of them together.

  Raises:
    RuntimeError: a process failed or timed out; with the end of its log.
  """
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('TF_CONFIG', None)
  ports = free_ports(num_workers) if strategy == 'multi_worker' else []
  procs, logs = [], []
  try:
    for index in range(num_workers):
      if ports:
        env['TF_CONFIG'] = json.dumps(
          {
            'cluster': {'worker': [f'localhost:{p}' for p in ports]},
            'task': {'type': 'worker', 'index': index},
          }
        )
      # Closed by the caller's finally block, after the workers exit.
      log = open(os.path.join(out, f'log_{index}.txt'), 'w')  # noqa: SIM115
      logs.append(log)
      procs.append(
        subprocess.Popen(
          [
            sys.executable,
            os.path.abspath(__file__),
            f'--strategy={strategy}',
            f'--out={out}',
            *args,
          ],
          env=env,
          stdout=log,
          stderr=subprocess.STDOUT,
          start_new_session=True,
        )
      )
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
      failed = [p for p in procs if p.poll()]
      if failed or time.monotonic() > deadline:
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    for log in logs:
      log.close()
  # A worker that failed by itself first, then those killed.
  for index, p in sorted(enumerate(procs), key=lambda ip: ip[1].returncode < 0):
    if p.returncode:
      with open(os.path.join(out, f'log_{index}.txt')) as f:
        tail = f.read()[-3000:]
      raise RuntimeError(
        f'Worker {index} of {strategy} exited with {p.returncode} (killed '
        f'after {timeout}s if -9):\n{tail}'
      )


def launch_in_temp_dir(strategy, num_workers=1, args=(), timeout=120):
  """`launch` into a fresh temporary directory, which it returns.

  The caller deletes it (`tearDownClass`). `make test` runs pytest-xdist with
  `--dist loadscope`, so a test class's `setUpClass` runs once per session.
  """
  out = tempfile.mkdtemp(prefix=f'graph_prune_{strategy}_')
  launch(out, strategy, num_workers, args, timeout)
  return out


def _exit_with_parent():
  """Exits this worker if the process that started it goes away (e.g. a
  killed test run), instead of waiting forever for its peer worker."""
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(1)
    os._exit(3)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True).start()


def main(argv):
  from graph_prune.train import strategies

  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument(
    '--strategy', required=True, choices=['default', 'mirrored', 'multi_worker']
  )
  parser.add_argument('--num_cpu_devices', type=int, default=None)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--resume_at', type=int, default=None)
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  _exit_with_parent()

  # Before anything else touches TensorFlow (logical devices, collectives).
  strategy = strategies.make_strategy(args.strategy, args.num_cpu_devices)
  resolver = getattr(strategy, 'cluster_resolver', None)
  task = (
    f'{resolver.task_type}_{resolver.task_id}'
    if resolver is not None and resolver.task_type
    else 'local'
  )
  objects = train(strategy, args.steps)
  result = state(*objects)
  result['num_replicas'] = np.array(strategy.num_replicas_in_sync)

  where = strategies.checkpoint_dir(strategy, args.out)
  path = checkpoint(*objects[:3]).save(os.path.join(where, 'ckpt'))
  if where != args.out:
    shutil.rmtree(where, ignore_errors=True)

  if args.resume_at is not None:
    first = train(strategy, args.resume_at)
    resume_path = checkpoint(*first[:3]).save(
      os.path.join(args.out, 'resume', 'ckpt')
    )
    objects = build(strategy)
    checkpoint(*objects).restore(resume_path).assert_existing_objects_matched()
    resumed = train(strategy, args.steps - args.resume_at, objects)
    for key, value in state(*resumed).items():
      if key != 'updates':
        result[f'resumed_{key}'] = value

  if strategy.extended.worker_devices[1:]:  # two or more local replicas
    result.update(replica_check(strategy, *objects[:2]))
    result['outside_scope_error'] = outside_scope_error(strategy)
  np.savez(os.path.join(args.out, f'{task}.npz'), checkpoint=path, **result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
