"""Benchmark: Keras `fit` of a pruned model (`keras_trainer`) vs plain `fit`.

Usage:
  python bench/fit_overhead.py [--epochs=3] [--repeats=7]

The 784-1000-1000-500-200-10 ReLU MLP of bench/train_overhead.py, batch 256,
Adam, 40 batches per epoch of random data: `model.fit` of the dense Keras 3
model against `graph_prune.keras_trainer(pruned).fit` with the mask update at
pruning_frequency 10 and 100. Each variant is compiled and warmed up by one
epoch, then timed for --epochs epochs, --repeats rounds interleaved. Prints ms
per step and the ratios to dense (median and minimum over rounds) and writes
bench/results/fit_overhead.json.
"""

import os
import time

from absl import app
from absl import flags
import keras
import numpy as np
import results_io  # bench/results_io.py, beside this script
import step_timing  # bench/step_timing.py

import graph_prune
from graph_prune.train import models

_EPOCHS = flags.DEFINE_integer('epochs', 3, 'Timed epochs per round.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Interleaved rounds.')
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'fit_overhead.json'),
  'JSON output path.',
)

_BATCH = 256
_STEPS_PER_EPOCH = 40


def _mlp():
  return models.build('mlp', (784,), 10, seed=0)


def _compiled(model):
  model.compile(
    optimizer=keras.optimizers.Adam(1e-4),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )
  return model


def main(argv):
  del argv
  rng = np.random.RandomState(0)
  n = _BATCH * _STEPS_PER_EPOCH
  x = rng.standard_normal((n, 784)).astype(np.float32)
  y = rng.randint(0, 10, n).astype(np.int32)
  variants = {'dense': _compiled(_mlp())}
  for frequency in (10, 100):
    pruned = graph_prune.apply_pruning(
      _mlp(),
      f'target_sparsity=0.9,pruning_frequency={frequency},'
      'sparsity_function_end_step=1000000',
    )
    variants[f'freq_{frequency}'] = _compiled(graph_prune.keras_trainer(pruned))

  def fit(model, epochs):
    model.fit(x, y, batch_size=_BATCH, epochs=epochs, shuffle=False, verbose=0)

  for model in variants.values():
    fit(model, 1)  # traces the step
  times = {k: [] for k in variants}
  steps = _EPOCHS.value * _STEPS_PER_EPOCH
  for _ in range(_REPEATS.value):
    for key, model in variants.items():
      start = time.perf_counter()
      fit(model, _EPOCHS.value)
      times[key].append((time.perf_counter() - start) / steps)
  rows = step_timing.summarize(times)
  step_timing.print_table(rows, width=10)
  results = {
    'batch': _BATCH,
    'steps_per_round': steps,
    'repeats': _REPEATS.value,
    **rows,
  }
  results_io.write(_OUT.value, results)


if __name__ == '__main__':
  app.run(main)
