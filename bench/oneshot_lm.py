"""Benchmark: one-shot pruning of a small transformer language model.

Usage:
  python bench/oneshot_lm.py [--seeds=0,1,2] [--train_steps=N]
      [--methods=weight,wanda,sparsegpt] [--sparsities=0.5,2:4]
      [--output=bench/results/oneshot_lm.json]

Issue 25's language-model row. The text is Python's own standard library
source, read from `sysconfig.get_paths()['stdlib']` (the top-level `.py`
files in sorted order, as bytes), so nothing is downloaded; it is
distributed under the PSF License Agreement (Python Software Foundation
License Version 2). The files are split by name, not by position: the first
files give --train_bytes of training text and the files after them
--test_bytes of held-out text, so no held-out window overlaps training.

The model is a byte-level causal transformer in Keras: token embedding
(256 bytes) plus learned positions, --blocks pre-norm blocks of causal
`MultiHeadAttention` (--heads heads) and a GELU FFN (4 x --d_model), a final
LayerNorm and a Dense head to 256 logits. It is trained dense for
--train_steps steps of Adam (--batch_size random windows of --seq_len bytes
of the training text), per seed. Then for each method (`prune_option`
weight, wanda, sparsegpt) and sparsity (a fraction, or N:M as
`sparsity_m_by_n`) a copy is pruned once by `prune_oneshot` with
--calibration random training windows: every attention and FFN kernel of
the blocks; the token and position embeddings and the output head stay
dense (`do_not_prune`). One more row per method prunes the token embedding
too (at the first fractional sparsity). Perplexity is exp of the mean
next-byte cross-entropy over every position of the held-out windows; no
retraining. It prints the table (per seed and the median) and the seconds
of each `prune_oneshot` call, and writes the JSON to --output.
"""

import math
import os
import statistics
import sysconfig
import time

from absl import app
from absl import flags
import keras
import numpy as np
import results_io  # bench/results_io.py, beside this script
import tensorflow as tf

import graph_prune

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Dense model seeds.')
_METHODS = flags.DEFINE_list(
  'methods', ['weight', 'wanda', 'sparsegpt'], 'prune_option values.'
)
_SPARSITIES = flags.DEFINE_list(
  'sparsities', ['0.5', '2:4'], 'Target sparsities, or N:M.'
)
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 600, 'Training steps.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Windows per step.')
_SEQ_LEN = flags.DEFINE_integer('seq_len', 128, 'Bytes per window.')
_D_MODEL = flags.DEFINE_integer('d_model', 128, 'Model width.')
_HEADS = flags.DEFINE_integer('heads', 4, 'Attention heads.')
_BLOCKS = flags.DEFINE_integer('blocks', 2, 'Transformer blocks.')
_TRAIN_BYTES = flags.DEFINE_integer('train_bytes', 600_000, 'Training text.')
_TEST_BYTES = flags.DEFINE_integer('test_bytes', 64_000, 'Held-out text.')
_CALIBRATION = flags.DEFINE_integer(
  'calibration', 128, 'Calibration windows (random, from training text).'
)
_OUTPUT = flags.DEFINE_string(
  'output',
  os.path.join(os.path.dirname(__file__), 'results', 'oneshot_lm.json'),
  'Where to write the JSON.',
)

VOCABULARY = 256  # bytes
# Never pruned in the main rows: the lookups and the head.
DENSE = ('token', 'position', 'head')


def stdlib_text(train_bytes: int, test_bytes: int):
  """(training bytes, held-out bytes, their file names) of the stdlib."""
  root = sysconfig.get_paths()['stdlib']
  names = sorted(n for n in os.listdir(root) if n.endswith('.py'))
  parts, files, total = [[], []], [[], []], 0
  wanted = (train_bytes, test_bytes)
  part = 0
  for name in names:
    with open(os.path.join(root, name), 'rb') as f:
      data = f.read()
    parts[part].append(data)
    files[part].append(name)
    total += len(data)
    if total >= wanted[part]:
      part, total = part + 1, 0
      if part == 2:
        break
  train = np.frombuffer(b''.join(parts[0]), np.uint8)[:train_bytes]
  test = np.frombuffer(b''.join(parts[1]), np.uint8)[:test_bytes]
  return train.astype(np.int32), test.astype(np.int32), files


class Positions(keras.layers.Layer):
  """Adds a learned [seq_len, d_model] position table."""

  def __init__(self, seq_len, d_model, **kwargs):
    super().__init__(**kwargs)
    self.seq_len, self.d_model = seq_len, d_model

  def build(self, shape):
    self.table = self.add_weight(
      shape=(self.seq_len, self.d_model),
      initializer=keras.initializers.RandomNormal(stddev=0.02),
      name='table',
    )

  def call(self, x):
    return x + self.table


def build_model(seq_len, d_model, heads, blocks) -> keras.Model:
  layers = keras.layers
  ids = keras.Input((seq_len,), dtype='int32')
  h = layers.Embedding(VOCABULARY, d_model, name='token')(ids)
  h = Positions(seq_len, d_model, name='position')(h)
  for b in range(blocks):
    a = layers.LayerNormalization(name=f'ln{b}a')(h)
    a = layers.MultiHeadAttention(heads, d_model // heads, name=f'attn{b}')(
      a, a, use_causal_mask=True
    )
    h = layers.Add()([h, a])
    f = layers.LayerNormalization(name=f'ln{b}f')(h)
    f = layers.Dense(4 * d_model, activation='gelu', name=f'ffn{b}a')(f)
    h = layers.Add()([h, layers.Dense(d_model, name=f'ffn{b}b')(f)])
  h = layers.LayerNormalization(name='ln_out')(h)
  return keras.Model(ids, layers.Dense(VOCABULARY, name='head')(h))


def windows(text, count, seq_len, rng):
  """`count` random (inputs, next bytes) windows of `text`."""
  starts = rng.integers(0, len(text) - seq_len - 1, count)
  x = np.stack([text[s : s + seq_len] for s in starts])
  y = np.stack([text[s + 1 : s + seq_len + 1] for s in starts])
  return x, y


def train_dense(train, seed) -> keras.Model:
  keras.utils.set_random_seed(seed)
  model = build_model(
    _SEQ_LEN.value, _D_MODEL.value, _HEADS.value, _BLOCKS.value
  )
  steps = _TRAIN_STEPS.value
  schedule = keras.optimizers.schedules.CosineDecay(
    0.0, steps, warmup_target=2e-3, warmup_steps=steps // 20
  )
  model.compile(
    optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )
  rng = np.random.default_rng(seed)
  x, y = windows(train, steps * _BATCH_SIZE.value, _SEQ_LEN.value, rng)
  model.fit(x, y, batch_size=_BATCH_SIZE.value, epochs=1, verbose=0)
  return model


def perplexity(call, test) -> float:
  """exp(mean next-byte cross-entropy) over the held-out windows."""
  seq_len = _SEQ_LEN.value
  count = (len(test) - 1) // seq_len
  x = test[: count * seq_len].reshape(count, seq_len)
  y = test[1 : count * seq_len + 1].reshape(count, seq_len)
  total = 0.0
  for start in range(0, count, 64):
    logits = np.asarray(call(x[start : start + 64]), np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(axis=-1))
    picked = np.take_along_axis(logits, y[start : start + 64, :, None], -1)
    total += float((log_z - picked[..., 0]).sum())
  return math.exp(total / y.size)


def hparams(method, sparsity, dense_layers) -> str:
  target = (
    f'sparsity_m_by_n={sparsity}'
    if ':' in sparsity
    else f'target_sparsity={sparsity}'
  )
  kept = ','.join(dense_layers)
  return f'prune_option={method},{target},do_not_prune=[{kept}]'


def prune_copy(dense, method, sparsity, calibration, test, dense_layers):
  """(perplexity, seconds of prune_oneshot, per-weight report)."""
  model = build_model(
    _SEQ_LEN.value, _D_MODEL.value, _HEADS.value, _BLOCKS.value
  )
  model.set_weights(dense.get_weights())
  began = time.perf_counter()
  pruned = graph_prune.prune_oneshot(
    model, calibration, hparams(method, sparsity, dense_layers)
  )
  seconds = time.perf_counter() - began
  report = [
    dict(name=r.name, sparsity=r.sparsity, error=r.error, rows=r.rows)
    for r in pruned.report.oneshot
  ] or [
    dict(name=name, sparsity=float(s))
    for name, s in pruned.sparsity().per_weight.items()
  ]
  return perplexity(pruned, test), seconds, report


def _cells(values):
  per_seed = ' / '.join(f'{v:.3f}' for v in values)
  return f'{per_seed} ({statistics.median(values):.3f})'


def print_table(results, seeds) -> None:
  print(
    f'\nheld-out perplexity (bytes), seeds {" / ".join(map(str, seeds))} '
    f'(median); dense {_cells(results["dense"])}'
  )
  methods = list(results['rows'])
  labels = list(next(iter(results['rows'].values())))
  print('| sparsity | ' + ' | '.join(methods) + ' |')
  print('|---' * (len(methods) + 1) + '|')
  for label in labels:
    cells = [_cells(results['rows'][m][label]['perplexity']) for m in methods]
    print(f'| {label} | ' + ' | '.join(cells) + ' |')
  print('\nseconds per prune_oneshot call, per seed')
  print('| sparsity | ' + ' | '.join(methods) + ' |')
  print('|---' * (len(methods) + 1) + '|')
  for label in labels:
    cells = [
      ' / '.join(f'{s:.1f}' for s in results['rows'][m][label]['seconds'])
      for m in methods
    ]
    print(f'| {label} | ' + ' | '.join(cells) + ' |')


def _rows():
  """(label, sparsity, layers kept dense) of every row."""
  rows = []
  for s in _SPARSITIES.value:
    label = s if ':' in s else f'{float(s):.0%}'
    rows.append((label, s, DENSE))
  fractions = [s for s in _SPARSITIES.value if ':' not in s]
  if fractions:
    label = f'{float(fractions[0]):.0%} + token embedding'
    rows.append((label, fractions[0], DENSE[1:]))
  return rows


def main(argv):
  del argv
  seeds = [int(s) for s in _SEEDS.value]
  train, test, files = stdlib_text(_TRAIN_BYTES.value, _TEST_BYTES.value)
  rows = _rows()
  results = dict(
    text=dict(
      source='Python standard library .py source '
      f'({sysconfig.get_paths()["stdlib"]}), PSF License Agreement',
      train_bytes=int(train.size),
      test_bytes=int(test.size),
      train_files=[files[0][0], files[0][-1], len(files[0])],
      test_files=[files[1][0], files[1][-1], len(files[1])],
    ),
    model=dict(
      seq_len=_SEQ_LEN.value,
      d_model=_D_MODEL.value,
      heads=_HEADS.value,
      blocks=_BLOCKS.value,
      train_steps=_TRAIN_STEPS.value,
      batch_size=_BATCH_SIZE.value,
    ),
    calibration_windows=_CALIBRATION.value,
    seeds=seeds,
    dense=[],
    dense_seconds=[],
    rows={
      m: {
        label: dict(perplexity=[], seconds=[], report=[]) for label, *_ in rows
      }
      for m in _METHODS.value
    },
  )
  print(
    f'text: {train.size} training bytes ({files[0][0]} .. {files[0][-1]}), '
    f'{test.size} held-out bytes ({files[1][0]} .. {files[1][-1]})',
    flush=True,
  )
  for seed in seeds:
    began = time.perf_counter()
    dense = train_dense(train, seed)
    results['dense_seconds'].append(time.perf_counter() - began)
    results['dense'].append(perplexity(lambda x, m=dense: m(x), test))
    print(
      f'seed {seed}: dense perplexity {results["dense"][-1]:.3f} '
      f'({results["dense_seconds"][-1]:.0f} s to train)',
      flush=True,
    )
    rng = np.random.default_rng(1000 + seed)
    calibration, _ = windows(train, _CALIBRATION.value, _SEQ_LEN.value, rng)
    for method in _METHODS.value:
      for label, sparsity, dense_layers in rows:
        ppl, seconds, report = prune_copy(
          dense, method, sparsity, calibration, test, dense_layers
        )
        row = results['rows'][method][label]
        row['perplexity'].append(ppl)
        row['seconds'].append(seconds)
        row['report'].append(report)
        print(
          f'  {method:9s} {label:>24s}: perplexity {ppl:8.3f}  '
          f'prune_oneshot {seconds:5.1f} s',
          flush=True,
        )
    results_io.write(_OUTPUT.value, results)  # a seed at a time
  print_table(results, seeds)
  results_io.write(_OUTPUT.value, results)


if __name__ == '__main__':
  tf.get_logger().setLevel('ERROR')
  app.run(main)
