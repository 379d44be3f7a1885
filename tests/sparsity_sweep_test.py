"""Tests of the sparsity sweep: the study library and the binary."""

import csv
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.study import config as config_lib
from graph_prune.study import plots
from graph_prune.study import results
from graph_prune.study import sweep
from graph_prune.train import datasets
from graph_prune.train import models

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entries(method, points):
  return [
    {
      'method': method,
      'target_sparsity': k,
      'accuracy': a,
      'nonzeros': int(1000 * (1 - k)),
    }
    for k, a in points
  ]


class MethodTest(parameterized.TestCase):
  def test_parse(self):
    method = config_lib.parse_method('gradual_unit_global')
    self.assertEqual(
      (method.kind, method.granularity, method.scope),
      ('gradual', 'unit', 'global'),
    )
    self.assertEqual(method.name, 'gradual_unit_global')
    h = graph_prune.parse_hparams(method.hparams(0.9, 60, 20))
    self.assertEqual(
      (
        h.target_sparsity,
        h.granularity,
        h.pruning_scope,
        h.do_not_prune,
        h.sparsity_function_end_step,
        h.end_pruning_step,
        h.pruning_frequency,
      ),
      (0.9, 'unit', 'global', ('logits',), 60, 60, 20),
    )

  def test_parse_block_method(self):
    method = config_lib.parse_method('gradual_block4x2_global')
    self.assertEqual(
      (method.granularity, method.block_dims), ('block4x2', (4, 2))
    )
    self.assertIsNone(config_lib.parse_method('oneshot_unit_layer').block_dims)
    h = graph_prune.parse_hparams(method.hparams(0.75, 60, 20))
    self.assertEqual(
      (h.granularity, h.block_height, h.block_width, h.pruning_scope),
      ('weight', 4, 2, 'global'),
    )

  @parameterized.named_parameters(
    ('unit', 'oneshot_unit_layer', 'all', 'none'),
    ('unitkernel', 'oneshot_unitkernel_layer', 'kernel', 'none'),
    ('coupled', 'gradual_unit_coupled', 'all', 'coupled'),
  )
  def test_unit_methods(self, name, params, groups):
    h = graph_prune.parse_hparams(
      config_lib.parse_method(name).hparams(0.5, 60, 20)
    )
    self.assertEqual(
      (h.granularity, h.unit_params, h.unit_groups, h.pruning_scope),
      ('unit', params, groups, 'layer'),
    )

  @parameterized.named_parameters(
    ('wanda', 'oneshot_wanda_layer', 'wanda', 'layer'),
    ('sparsegpt', 'oneshot_sparsegpt_layer', 'sparsegpt', 'layer'),
    (
      'first_order',
      'gradual_first_order_gradient_layer',
      'first_order_gradient',
      'layer',
    ),
    (
      'second_order_global',
      'gradual_second_order_gradient_global',
      'second_order_gradient',
      'global',
    ),
  )
  def test_criterion_methods(self, name, option, scope):
    method = config_lib.parse_method(name)
    self.assertEqual((method.granularity, method.name), (option, name))
    h = graph_prune.parse_hparams(method.hparams(0.5, 60, 20))
    self.assertEqual(
      (h.prune_option, h.granularity, h.pruning_scope, h.block_height),
      (option, 'weight', scope, 1),
    )
    self.assertEqual(
      graph_prune.parse_hparams(
        config_lib.parse_method('gradual_weight_layer').hparams(0.5)
      ).prune_option,
      'weight',
    )

  @parameterized.named_parameters(
    ('gradient_once', 'oneshot_first_order_gradient_layer', 'kind gradual'),
    ('sparsegpt_gradual', 'gradual_sparsegpt_layer', 'kind oneshot'),
    ('wanda_global', 'oneshot_wanda_global', 'scope layer only'),
    ('gradient_coupled', 'gradual_first_order_gradient_coupled', 'coupled'),
    ('unknown', 'oneshot_third_order_gradient_layer', 'KIND_GRANULARITY'),
  )
  def test_bad_criterion_method(self, name, why):
    with self.assertRaisesRegex(errors.SweepConfigError, f"'{name}'.*{why}"):
      config_lib.parse_method(name)

  def test_coupled_needs_units(self):
    with self.assertRaisesRegex(
      errors.SweepConfigError, "'oneshot_weight_coupled'.*unit"
    ):
      config_lib.parse_method('oneshot_weight_coupled')

  @parameterized.named_parameters(
    ('kind', 'lazy_weight_layer'),
    ('granularity', 'oneshot_block_layer'),
    ('block_dims', 'oneshot_block0x4_layer'),
    ('parts', 'oneshot_weight'),
  )
  def test_bad_method(self, name):
    with self.assertRaisesRegex(
      errors.SweepConfigError, f"'{name}'.*KIND_GRANULARITY_SCOPE"
    ):
      config_lib.parse_method(name)

  def test_bad_config(self):
    with self.assertRaisesRegex(errors.SweepConfigError, r'1\.0 is outside'):
      config_lib.SweepConfig(sparsities=(0.5, 1.0))
    with self.assertRaisesRegex(errors.SweepConfigError, 'retrain_steps=0'):
      config_lib.SweepConfig(retrain_steps=0)

  def test_schedule_ends_on_an_update(self):
    config = config_lib.SweepConfig(
      retrain_steps=100, schedule_fraction=0.55, pruning_frequency=20
    )
    self.assertEqual(config.schedule_steps, 40)


class AnalysisTest(tf.test.TestCase):
  def test_pareto_frontier(self):
    entries = _entries('a', [(0.0, 0.98), (0.5, 0.97), (0.9, 0.90)]) + _entries(
      'b', [(0.5, 0.975), (0.9, 0.85), (0.99, 0.5)]
    )
    frontier = results.pareto_frontier(entries)
    self.assertEqual(
      [(e['method'], e['target_sparsity']) for e in frontier],
      [('b', 0.99), ('a', 0.9), ('b', 0.5), ('a', 0.0)],
    )

  def test_holds(self):
    entries = _entries(
      'a', [(0.0, 0.98), (0.5, 0.965), (0.9, 0.95), (0.95, 0.97)]
    ) + _entries('b', [(0.0, 0.98), (0.5, 0.97)])
    self.assertEqual(
      results.holds(entries, 0.98),
      {
        'a': {'holds_to': 0.5, 'drops_at': 0.9},
        'b': {'holds_to': 0.5, 'drops_at': None},
      },
    )


class SweepTest(tf.test.TestCase):
  def test_reduced_sweep_writes_table_and_plots(self):
    config = config_lib.SweepConfig(
      methods=(
        'oneshot_weight_layer',
        'oneshot_unit_global',
        'gradual_weight_global',
      ),
      sparsities=(0.5, 0.9),
      dense_steps=30,
      retrain_steps=10,
      pruning_frequency=2,
      batch_size=32,
      latency_batch=0,
    )
    lines = []
    result = sweep.sweep(config, log=lines.append)
    self.assertLen(result.rows, 6)
    self.assertLen(lines, 7)
    dense = result.dense[0]
    self.assertEqual(dense.params, 1668710)
    for row in result.rows:
      if row.method != 'oneshot_unit_global':
        # The output layer (2010 weights) stays dense.
        self.assertAllClose(row.sparsity, row.target_sparsity, atol=1e-3)
        self.assertAllClose(
          row.nonzeros / dense.params, 1 - row.target_sparsity, atol=0.01
        )
    # One-shot rows prune the trained weights themselves, unchanged.
    by_key = {(r.method, r.target_sparsity): r for r in result.rows}
    self.assertLess(
      by_key[('oneshot_weight_layer', 0.9)].accuracy, dense.accuracy + 1e-6
    )

    out_dir = tempfile.mkdtemp()
    csv_path, json_path = results.write_tables(result, out_dir)
    with open(csv_path) as f:
      table = list(csv.DictReader(f))
    self.assertEqual(
      [(r['method'], float(r['target_sparsity'])) for r in table],
      [(m, k) for m in config.methods for k in (0.5, 0.9)],
    )
    self.assertAllClose(
      float(table[0]['accuracy']),
      by_key[('oneshot_weight_layer', 0.5)].accuracy,
      atol=1e-6,
    )
    with open(json_path) as f:
      summary = json.load(f)
    self.assertEqual(set(summary['holds']), set(config.methods))
    self.assertTrue(summary['pareto'])
    self.assertIn('oneshot_unit_global', results.format_table(result))

    paths = plots.plot(result, out_dir)
    if plots.available():
      self.assertEqual(
        [os.path.basename(p) for p in paths],
        ['accuracy.png', 'loss.png', 'pareto.png'],
      )
      for path in paths:
        with open(path, 'rb') as f:
          self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    else:
      self.assertEqual(paths, [])

  def test_block_method_prunes_blocks_of_smallest_mean_magnitude(self):
    model = models.build('mlp', (8, 8), 10)
    method = config_lib.parse_method('oneshot_block4x4_layer')
    pruned = graph_prune.apply_pruning(model, method.hparams(0.5))
    pruned.mask_update(1)
    self.assertLen(pruned.masks, 4)  # the logits stay dense
    for weight, mask in zip(pruned.weights, pruned.masks):
      w = np.abs(weight.numpy())
      rows, cols = w.shape[0] // 4, w.shape[1] // 4
      means = w.reshape(rows, 4, cols, 4).mean(axis=(1, 3)).ravel()
      keep = np.ones(means.size, np.float32)
      keep[np.argsort(means, kind='stable')[: round(0.5 * means.size)]] = 0
      want = np.repeat(
        np.repeat(keep.reshape(rows, cols), 4, axis=0), 4, axis=1
      )
      self.assertAllEqual(mask.numpy(), want)

  def test_one_shot_unit_pruning_removes_whole_units(self):
    data = datasets.load_digits()
    model = models.build('mlp', (8, 8), 10)
    row = sweep.one_shot(
      model,
      data,
      config_lib.parse_method('oneshot_unit_layer'),
      0.5,
      latency_batch=8,
    )
    self.assertAllClose(row.sparsity, 0.5, atol=1e-3)
    # Shrunk: every hidden layer keeps half its units (the biases are zero,
    # so a removed ReLU unit emits 0); the logits keep their 10.
    widths = [64, 1000, 1000, 500, 200]
    self.assertEqual(
      row.macs, sum(a * b for a, b in zip(widths, widths[1:] + [10]))
    )
    half = [64] + [w // 2 for w in widths[1:]]
    self.assertEqual(
      row.shrunk_macs, sum(a * b for a, b in zip(half, half[1:] + [10]))
    )
    self.assertGreater(row.latency_ratio, 0)


class ProgressTest(tf.test.TestCase):
  def test_time_left_counts_each_kind_of_work_at_its_rate(self):
    config = config_lib.SweepConfig(
      methods=('oneshot_weight_layer', 'gradual_weight_layer'),
      sparsities=(0.5, 0.9),
      seeds=(0, 1),
      dense_steps=100,
      retrain_steps=50,
    )
    methods = [config_lib.parse_method(m) for m in config.methods]
    work = sweep._Work(config, methods)  # pylint: disable=protected-access
    # Seed 0's dense model: 0.1 s per step; retraining not timed yet counts
    # at that rate: 2 seeds x 2 sparsities x 50 steps, one dense model more.
    work.done('dense', 100, 10.0)
    self.assertRegex(work.status(), r'^\[0/8 rows, .* elapsed, ~30 s left\]$')
    work.done('oneshot', 1, 2.0)
    work.done('oneshot', 1, 2.0)
    work.done('retrain', 50, 4.0)  # 0.08 s per step from now on
    # Left: 1 dense (10 s), 3 retrainings (3 x 50 x 0.08 = 12 s), 2 one-shot
    # rows (2 x 2 s).
    self.assertRegex(work.status(), r'^\[3/8 rows, .* elapsed, ~26 s left\]$')


class BinaryTest(tf.test.TestCase):
  def test_reduced_binary_run(self):
    out_dir = os.path.join(tempfile.mkdtemp(), 'out')
    cmd = [
      sys.executable,
      os.path.join(_ROOT, 'tools', 'sparsity_sweep'),
      f'--out_dir={out_dir}',
      '--sparsities=0,95',
      '--methods=oneshot_weight_global,gradual_weight_layer',
      '--dense_steps=10',
      '--retrain_steps=6',
      '--pruning_frequency=2',
      '--batch_size=16',
      '--latency_batch=0',  # shrunk models are not timed (saves seconds)
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    done = subprocess.run(
      cmd, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertIn('gradual_weight_layer', done.stdout)
    self.assertIn('drops at', done.stdout)
    expected = {'sweep.csv', 'sweep.json'}
    if plots.available():
      expected |= {'accuracy.png', 'loss.png', 'pareto.png'}
    else:
      self.assertIn('plots skipped', done.stdout)
    self.assertEqual(set(os.listdir(out_dir)), expected)
    with open(os.path.join(out_dir, 'sweep.json')) as f:
      summary = json.load(f)
    self.assertEqual(summary['config']['sparsities'], [0.0, 0.95])
    self.assertLen(summary['rows'], 4)


if __name__ == '__main__':
  tf.test.main()
