"""Benchmark: the sparsity sweep against graph_prune's quality bars.

Usage:
  python bench/sweep_quality.py [--seeds=0,1,2] [--out_dir=DIR]

Runs the default sweep (the 1000-1000-500-200 MLP on the embedded digits,
one dense model per seed) and checks the means over the seeds against the
bars, set from tfmot's gradual pruning of the same MLP (97.78 / 96.67 / 96.02
/ 88.43% at 90 / 95 / 97 / 99% from a 97.78% dense model):

  gradual pruning: no accuracy lost at 90%, at most 0.5 point lost at 95%,
  at most 1.0 at 97%, at least 93% at 99%;
  one-shot: weight pruning holds accuracy (within 2 points) to a higher
  sparsity than unit pruning, in each scope.

Prints the table and one line per bar and method; writes the sweep's tables
and plots to --out_dir and the checks to bench/results/sweep_quality.json.
About four minutes per seed on two idle cores.
"""

import json
import os

from absl import app
from absl import flags

from graph_prune.study import config as config_lib
from graph_prune.study import plots
from graph_prune.study import results
from graph_prune.study import sweep

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds to average over.')
_OUT_DIR = flags.DEFINE_string(
  'out_dir',
  os.path.join(os.path.dirname(__file__), 'results', 'sweep_quality'),
  'Tables and plots.',
)
_RESULT = flags.DEFINE_string(
  'result',
  os.path.join(os.path.dirname(__file__), 'results', 'sweep_quality.json'),
  'JSON with the checks.',
)

# (sparsity, kind, limit): 'loss' bars limit the points lost against the
# dense model, 'floor' bars the accuracy itself (percent).
_GRADUAL_BARS = (
  (0.90, 'loss', 0.0),
  (0.95, 'loss', 0.5),
  (0.97, 'loss', 1.0),
  (0.99, 'floor', 93.0),
)
_TFMOT = {0.90: 97.78, 0.95: 96.67, 0.97: 96.02, 0.99: 88.43}


def check(result: results.SweepResult) -> list:
  """One dict per bar and method: the value, the limit and whether it holds."""
  means = {(e['method'], e['target_sparsity']): e for e in result.mean_rows()}
  dense = 100 * result.dense_accuracy
  checks = []
  for method in result.config.methods:
    if not method.startswith('gradual'):
      continue
    for sparsity, kind, limit in _GRADUAL_BARS:
      entry = means.get((method, sparsity))
      if entry is None:
        continue
      accuracy = 100 * entry['accuracy']
      if kind == 'loss':
        value, ok = dense - accuracy, dense - accuracy <= limit + 1e-9
        bar = f'loses <= {limit:g} points'
      else:
        value, ok = accuracy, accuracy >= limit
        bar = f'>= {limit:g}%'
      checks.append(
        {
          'method': method,
          'sparsity': sparsity,
          'bar': bar,
          'accuracy': accuracy,
          'value': value,
          'ok': bool(ok),
          'accuracy_std': 100 * entry['accuracy_std'],
          'tfmot': _TFMOT[sparsity],
        }
      )
  holds = results.holds(result.mean_rows(), result.dense_accuracy)
  for scope in config_lib.SCOPES:
    weight = holds.get(f'oneshot_weight_{scope}')
    unit = holds.get(f'oneshot_unit_{scope}')
    if weight and unit:
      checks.append(
        {
          'method': f'oneshot_*_{scope}',
          'bar': 'weight pruning holds further than unit pruning',
          'weight': weight,
          'unit': unit,
          'ok': (weight['holds_to'] or 0) > (unit['holds_to'] or 0),
        }
      )
  return checks


def main(argv):
  del argv
  config = config_lib.SweepConfig(seeds=tuple(int(s) for s in _SEEDS.value))
  result = sweep.sweep(config, log=lambda line: print(line, flush=True))
  paths = results.write_tables(result, _OUT_DIR.value)
  paths += plots.plot(result, _OUT_DIR.value)
  checks = check(result)
  print()
  print(results.format_table(result))
  print(
    f'\nquality bars (dense {100 * result.dense_accuracy:.2f}%, '
    f'{len(config.seeds)} seeds):'
  )
  for c in checks:
    if 'sparsity' in c:
      print(
        f'  {"ok  " if c["ok"] else "MISS"} {c["method"]:<22} '
        f'{100 * c["sparsity"]:g}%: {c["accuracy"]:.2f}% '
        f'(+-{c["accuracy_std"]:.2f}; tfmot {c["tfmot"]:.2f}), '
        f'{c["bar"]}'
      )
    else:
      print(
        f'  {"ok  " if c["ok"] else "MISS"} {c["method"]:<22} '
        f'{c["bar"]}: weight holds to {c["weight"]["holds_to"]}, unit '
        f'to {c["unit"]["holds_to"]}'
      )
  os.makedirs(os.path.dirname(_RESULT.value), exist_ok=True)
  with open(_RESULT.value, 'w') as f:
    json.dump(
      {'checks': checks, 'summary': results.summary(result)}, f, indent=1
    )
  for path in paths + [_RESULT.value]:
    print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)
