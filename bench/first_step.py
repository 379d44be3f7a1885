"""The first training step's cost, pruned against dense, on real models.

For each model (keras.applications with weights=None, small inputs): per
round, a fresh dense model and a fresh pruned one (variants interleaved
round by round, so that noise from other processes hits both alike):
  * apply_pruning time (trace, scan, rewrite of the inference graph);
  * the first training step (a fresh tf.function: Keras traces the model in
    training mode, graph_prune rewrites that graph, TF builds the gradient
    and optimizes the graph), dense and pruned;
  * the first call of a second fresh pruned step that also runs
    `conditional_mask_update` (the README's step): it re-traces the step
    (the training graph's rewrite is cached by then) and traces the mask
    update of every weight;
  * the first step of another fresh pruned model whose step runs the mask
    update from the start (what a user's first step costs: the training
    graph's rewrite and the update's trace together);
  * the steady step (median over timed steps), dense and pruned;
and the ratios pruned / dense: medians and minima over rounds.

  .venv/bin/python bench/first_step.py [--models=mobilenet_v2,resnet50]
      [--size=64] [--rounds=2] [--steps=5] [--out=bench/results/first_step.json]
"""

import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_io

import graph_prune

MODELS = {
  'mobilenet_v2': lambda s: keras.applications.MobileNetV2(
    weights=None, input_shape=(s, s, 3), classes=10
  ),
  'resnet50': lambda s: keras.applications.ResNet50(
    weights=None, input_shape=(s, s, 3), classes=10
  ),
  'densenet121': lambda s: keras.applications.DenseNet121(
    weights=None, input_shape=(s, s, 3), classes=10
  ),
  'efficientnet_b0': lambda s: keras.applications.EfficientNetB0(
    weights=None, input_shape=(s, s, 3), classes=10
  ),
}
HPARAMS = 'target_sparsity=0.5,end_pruning_step=100,pruning_frequency=10'


def train_step(model, call, pruned=None):
  """A fresh SGD step of `call` (dense model or pruned) over `model`'s
  variables, ending with the pruned model's mask update when given one."""
  variables = model.trainable_variables
  counter = tf.Variable(0, dtype=tf.int64)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(call(x)))
    grads = tape.gradient(loss, variables)
    for v, g in zip(variables, grads):
      v.assign_sub(0.01 * g)
    if pruned is not None:
      counter.assign_add(1)
      pruned.conditional_mask_update(counter)
    return loss

  return step


def timed(fn, *args):
  start = time.perf_counter()
  result = fn(*args)
  if isinstance(result, tf.Tensor):
    result.numpy()
  return time.perf_counter() - start, result


def steady(step, x, steps):
  times = []
  for _ in range(steps):
    seconds, _ = timed(step, x)
    times.append(seconds)
  return float(np.median(times))


def one_round(name, size, steps, x):
  """One dense and one pruned model: the seconds of each phase."""
  keras.utils.set_random_seed(0)
  row = {}
  dense = MODELS[name](size)
  dense_step = train_step(dense, lambda x: dense(x, training=True))
  row['dense_first'], _ = timed(dense_step, x)
  keras.utils.set_random_seed(0)
  model = MODELS[name](size)
  row['apply_pruning'], pruned = timed(
    graph_prune.apply_pruning, model, HPARAMS
  )
  pruned_step = train_step(model, lambda x: pruned(x, training=True))
  row['pruned_first'], _ = timed(pruned_step, x)
  update_step = train_step(model, lambda x: pruned(x, training=True), pruned)
  row['pruned_first_with_update'], _ = timed(update_step, x)
  # The README's loop on a fresh model: its very first step rewrites the
  # training graph and traces the mask update.
  keras.utils.set_random_seed(0)
  fresh = MODELS[name](size)
  fresh_pruned = graph_prune.apply_pruning(fresh, HPARAMS)
  fresh_step = train_step(
    fresh, lambda x: fresh_pruned(x, training=True), fresh_pruned
  )
  row['fresh_first_with_update'], _ = timed(fresh_step, x)
  row['dense_steady'] = steady(dense_step, x, steps)
  row['pruned_steady'] = steady(pruned_step, x, steps)
  return row


def summarize(rounds):
  keys = rounds[0].keys()
  median = {k: float(np.median([r[k] for r in rounds])) for k in keys}
  best = {k: float(min(r[k] for r in rounds)) for k in keys}
  for agg in (median, best):
    agg['first_ratio'] = agg['pruned_first'] / agg['dense_first']
    agg['steady_ratio'] = agg['pruned_steady'] / agg['dense_steady']
    agg['update_ratio'] = agg['pruned_first_with_update'] / agg['dense_first']
    agg['fresh_ratio'] = agg['fresh_first_with_update'] / agg['dense_first']
  return {'median': median, 'min': best, 'rounds': rounds}


def print_table(results):
  head = (
    f'{"model":<16} {"apply s":>8} {"dense 1st":>9} {"pruned 1st":>10} '
    f'{"x dense":>7} {"+update":>8} {"x dense":>7} {"dense ms":>8} '
    f'{"pruned ms":>9} {"x dense":>7} {"fresh+upd":>9} {"x dense":>7}'
  )
  print(head)
  for name, res in results.items():
    for agg in ('median', 'min'):
      r = res[agg]
      print(
        f'{name + " " + agg:<16} {r["apply_pruning"]:8.2f} '
        f'{r["dense_first"]:9.2f} {r["pruned_first"]:10.2f} '
        f'{r["first_ratio"]:7.2f} {r["pruned_first_with_update"]:8.2f} '
        f'{r["update_ratio"]:7.2f} {1e3 * r["dense_steady"]:8.1f} '
        f'{1e3 * r["pruned_steady"]:9.1f} {r["steady_ratio"]:7.2f} '
        f'{r["fresh_first_with_update"]:9.2f} {r["fresh_ratio"]:7.2f}'
      )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--out', default='bench/results/first_step.json')
  args = parser.parse_args()
  x = tf.constant(
    np.random.RandomState(0).rand(args.batch, args.size, args.size, 3),
    tf.float32,
  )
  results = {}
  for name in args.models.split(','):
    rounds = [
      one_round(name, args.size, args.steps, x) for _ in range(args.rounds)
    ]
    results[name] = summarize(rounds)
  print_table(results)
  results_io.write(args.out, {'args': vars(args), 'results': results})


if __name__ == '__main__':
  main()
