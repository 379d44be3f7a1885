"""PNG plots of a sparsity sweep; matplotlib is optional.

    paths = plots.plot(result, out_dir)   # [] without matplotlib

Three figures: test accuracy against sparsity and test loss against sparsity
(one line per method, the dense model as a dashed line), and accuracy against
non-zero parameters (log scale) with the Pareto frontier over all methods.
Install matplotlib with `pip install graph_prune[plots]`.
"""

import collections
import importlib.util
import os
from typing import List

from graph_prune.study import config as config_lib
from graph_prune.study import results


def available() -> bool:
  """True when matplotlib can be imported."""
  return importlib.util.find_spec('matplotlib') is not None


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')  # Files only; no display needed.
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  return pyplot


def _by_method(means):
  groups = collections.OrderedDict()
  for entry in sorted(means, key=lambda e: e['target_sparsity']):
    groups.setdefault(entry['method'], []).append(entry)
  return groups


# GRANULARITY part of a method -> its marker; units and blocks are squares.
_MARKERS = {
  'weight': 'o',
  'wanda': '^',
  'sparsegpt': 'v',
  'first_order_gradient': 'D',
  'second_order_gradient': 'P',
}


def _style(method: str) -> dict:
  granularity = config_lib.parse_method(method).granularity
  return {
    'linestyle': '-' if method.startswith('gradual') else '--',
    'marker': _MARKERS.get(granularity, 's'),
  }


def plot(result: results.SweepResult, out_dir: str) -> List[str]:
  """Writes accuracy.png, loss.png and pareto.png to `out_dir`.

  Args:
    result: a sweep's result.
    out_dir: the directory (created if missing).

  Returns:
    The paths written; [] when matplotlib is not installed.
  """
  if not available():
    return []
  plt = _pyplot()
  os.makedirs(out_dir, exist_ok=True)
  means = result.mean_rows()
  groups = _by_method(means)
  paths = []
  for field, label, dense in (
    ('accuracy', 'test accuracy (%)', result.dense_accuracy),
    ('loss', 'test cross-entropy', result.dense_loss),
  ):
    fig = _plot_against_sparsity(plt, result, groups, field, label, dense)
    paths.append(_save(plt, fig, os.path.join(out_dir, f'{field}.png')))
  fig = _plot_pareto(plt, groups, results.pareto_frontier(means))
  paths.append(_save(plt, fig, os.path.join(out_dir, 'pareto.png')))
  return paths


def _plot_against_sparsity(plt, result, groups, field, label, dense):
  """One line per method of `field` against the target sparsity."""
  scale = 100.0 if field == 'accuracy' else 1.0
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for method, rows in groups.items():
    ax.plot(
      [100 * r['target_sparsity'] for r in rows],
      [scale * r[field] for r in rows],
      label=method,
      **_style(method),
    )
  ax.axhline(scale * dense, color='gray', linestyle=':', label='dense')
  ax.set_xlabel('target sparsity (%)')
  ax.set_ylabel(label)
  ax.set_title(
    f'{label} vs sparsity ({result.config.model}, {len(result.dense)} seed(s))'
  )
  if field == 'loss':
    ax.set_yscale('log')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def _plot_pareto(plt, groups, frontier):
  """Accuracy against non-zeros per method, with the Pareto frontier."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for method, rows in groups.items():
    ax.plot(
      [r['nonzeros'] for r in rows],
      [100 * r['accuracy'] for r in rows],
      label=method,
      alpha=0.6,
      **_style(method),
    )
  ax.step(
    [e['nonzeros'] for e in frontier],
    [100 * e['accuracy'] for e in frontier],
    where='post',
    color='black',
    linewidth=1.5,
    marker='*',
    markersize=9,
    label='Pareto frontier',
  )
  ax.set_xscale('log')
  ax.set_xlabel('non-zero parameters')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('accuracy vs non-zero parameters')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def _save(plt, fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
