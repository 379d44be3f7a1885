"""Benchmark: attention heads and FFN units pruned and shrunk away (issue 26).

Usage:
  python bench/transformer_shrink.py [--cases=bert_base,llama_gqa]
      [--batches=1,8] [--sequence=128] [--rounds=7]

Cases (keras-hub backbones from a config, random weights, nothing
downloaded):
  bert_base: BertBackbone, 12 layers, hidden 768, 12 heads, intermediate
    3072, vocabulary 30522 (BERT-base's sizes);
  llama_gqa: LlamaBackbone, 12 layers, hidden 768, 12 query heads sharing 4
    key/value heads (grouped-query attention), intermediate 3072 (gated),
    vocabulary 32000.
Each is pruned with `granularity=unit,unit_groups=coupled` at 50% (masks by
one `mask_update` at the end of the schedule: half of every attention
layer's heads by the group L2 norm of their query, key, value and output
slices, half of every FFN's units; embeddings and BERT's pooler are not
pruned), then `graph_prune.shrink` removes them. The FFN output dense feeds
the residual stream, whose hidden size stays (LayerNorm/RMSNorm statistics
range over it).

Reported: encoder parameters (the variables of the transformer layers) of
the dense model and the shrunk one, all parameters, and latency at each
batch size of the dense Keras model, `graph_prune.strip` (zeros, dense
speed) and `graph_prune.shrink`, all `tf.function`s over the same dict of
int32 inputs (`--sequence` tokens, no padding), interleaved
(`timing.interleaved`), medians and minima over rounds, ratios of medians to
dense; and the largest difference of the shrunk model's output from the
stripped model's.

Writes bench/results/transformer_shrink.json.
"""

import os
import time

from absl import app
from absl import flags
import keras
import keras_hub
import numpy as np
import results_io  # bench/results_io.py, beside this script
import tensorflow as tf
import timing  # bench/timing.py, beside this script

import graph_prune

_CASES = flags.DEFINE_list('cases', ['bert_base', 'llama_gqa'], 'Cases.')
_BATCHES = flags.DEFINE_list('batches', ['1', '8'], 'Batch sizes.')
_SEQUENCE = flags.DEFINE_integer('sequence', 128, 'Tokens per example.')
_ROUNDS = flags.DEFINE_integer('rounds', 7, 'Timing rounds per variant.')
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'transformer_shrink.json'),
  'Where to write the JSON.',
)

SPEC = (
  'target_sparsity=0.5,granularity=unit,unit_groups=coupled,'
  'begin_pruning_step=0,end_pruning_step=1,sparsity_function_end_step=1,'
  'do_not_prune=[embeddings,pooled_dense]'
)
ENCODER = 'transformer_layer_'


def _bert(sequence):
  return keras_hub.models.BertBackbone(
    vocabulary_size=30522,
    num_layers=12,
    num_heads=12,
    hidden_dim=768,
    intermediate_dim=3072,
    max_sequence_length=max(sequence, 512),
  )


def _llama(sequence):
  del sequence  # rotary positions: no maximum
  return keras_hub.models.LlamaBackbone(
    vocabulary_size=32000,
    num_layers=12,
    num_query_heads=12,
    num_key_value_heads=4,
    hidden_dim=768,
    intermediate_dim=3072,
  )


CASES = {'bert_base': _bert, 'llama_gqa': _llama}


def _inputs(name, batch, sequence, vocabulary):
  rng = np.random.RandomState(batch)
  inputs = {
    'token_ids': tf.constant(
      rng.randint(0, vocabulary, (batch, sequence)), tf.int32
    ),
    'padding_mask': tf.ones((batch, sequence), tf.int32),
  }
  if name == 'bert_base':
    inputs['segment_ids'] = tf.zeros((batch, sequence), tf.int32)
  return inputs


def _sequence_output(outputs):
  return outputs['sequence_output'] if isinstance(outputs, dict) else outputs


def _count(variables, encoder_only):
  """Parameters of `variables` (Keras 3's by path, TensorFlow's by name)."""
  return int(
    sum(
      np.prod(v.shape)
      for v in variables
      if not encoder_only or ENCODER in getattr(v, 'path', v.name)
    )
  )


def _case(name, batches, sequence, rounds):
  keras.utils.set_random_seed(0)
  model = CASES[name](sequence)
  start = time.perf_counter()
  pruned = graph_prune.apply_pruning(model, SPEC)
  pruned.mask_update(tf.constant(1, tf.int64))
  prune_s = time.perf_counter() - start
  start = time.perf_counter()
  stripped = graph_prune.strip(pruned)
  shrunk = graph_prune.shrink(pruned)
  shrink_s = time.perf_counter() - start
  spec = pruned.__call__.input_signature
  dense_fn = tf.function(
    lambda x: _sequence_output(model(x, training=False)), input_signature=spec
  )
  fns = {
    'dense': dense_fn,
    'stripped': lambda x: _sequence_output(stripped(x)),
    'shrunk': lambda x: _sequence_output(shrunk(x)),
  }
  vocabulary = model.token_embedding.input_dim
  params = {
    'encoder_params_dense': _count(model.variables, True),
    'encoder_params_shrunk': _count(shrunk.variables, True),
    'params_dense': _count(model.variables, False),
    'params_shrunk': _count(shrunk.variables, False),
  }
  rows = []
  for batch in batches:
    x = _inputs(name, batch, sequence, vocabulary)
    diff = np.abs(fns['shrunk'](x).numpy() - fns['stripped'](x).numpy()).max()
    scale = np.abs(fns['stripped'](x).numpy()).max()
    times = timing.interleaved(fns, x, rounds, min_calls=1)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows.append(
      {
        'model': name,
        'batch': batch,
        'sequence': sequence,
        **params,
        'encoder_ratio': (
          params['encoder_params_shrunk'] / params['encoder_params_dense']
        ),
        **{f'{k}_median_s': v for k, v in med.items()},
        **{f'{k}_min_s': float(np.min(v)) for k, v in times.items()},
        'stripped_ratio': med['stripped'] / med['dense'],
        'shrunk_ratio': med['shrunk'] / med['dense'],
        'shrunk_min_ratio': float(np.min(times['shrunk']))
        / float(np.min(times['dense'])),
        'max_abs_diff': float(diff),
        'output_scale': float(scale),
        'prune_and_update_s': prune_s,
        'strip_and_shrink_s': shrink_s,
      }
    )
  return rows, shrunk.shrink_report


def main(argv):
  del argv
  batches = [int(b) for b in _BATCHES.value]
  unknown = sorted(set(_CASES.value) - set(CASES))
  if unknown:
    raise app.UsageError(f'Unknown --cases {unknown}; choose from {[*CASES]}.')
  rows = []
  for name in _CASES.value:
    case_rows, report = _case(name, batches, _SEQUENCE.value, _ROUNDS.value)
    rows += case_rows
    main_report = report.main
    print(
      f'{name}: parameters {main_report.params_before:,} -> '
      f'{main_report.params_after:,} (the shrink report)'
    )
  print(
    f'{"model":<10} {"batch":>5} {"enc params":>11} {"shrunk":>11} '
    f'{"ratio":>6} {"dense ms":>9} {"strip ms":>9} {"shrunk ms":>9} '
    f'{"shr/d":>6} {"min":>6} {"diff/scale":>10}'
  )
  for r in rows:
    print(
      f'{r["model"]:<10} {r["batch"]:>5} {r["encoder_params_dense"]:>11,} '
      f'{r["encoder_params_shrunk"]:>11,} {r["encoder_ratio"]:>6.3f} '
      f'{r["dense_median_s"] * 1e3:>9.2f} '
      f'{r["stripped_median_s"] * 1e3:>9.2f} '
      f'{r["shrunk_median_s"] * 1e3:>9.2f} {r["shrunk_ratio"]:>6.3f} '
      f'{r["shrunk_min_ratio"]:>6.3f} '
      f'{r["max_abs_diff"] / max(r["output_scale"], 1e-30):>10.2e}'
    )
  results_io.write(_OUT.value, {'rows': rows})


if __name__ == '__main__':
  app.run(main)
