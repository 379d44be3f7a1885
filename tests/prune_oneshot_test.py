"""`graph_prune.prune_oneshot`: the public one-shot entry point.

Masks against NumPy (Wanda's per-output rule, magnitude per layer), the
hparams it honours (weight maps, do_not_prune, N:M), the calibration forms
it reads, the errors it gives and that a failed call changes nothing, and
that the result strips with equal outputs.
"""

import os
import tempfile

import numpy as np
from oneshot_layers_test import _data  # tests/, beside this
from oneshot_layers_test import _mlp
from oneshot_layers_test import _wanda_keep
import tensorflow as tf

import graph_prune


def _masks(pruned):
  return {
    name.split('/')[0]: m.numpy()
    for name, m in zip(pruned.weight_names, pruned.masks)
  }


class PruneOneShotTest(tf.test.TestCase):
  def test_wanda_first_layer_matches_numpy(self):
    model = _mlp()
    x = _data()
    kernel = model.get_layer('d1').kernel.numpy()
    pruned = graph_prune.prune_oneshot(
      model, x, 'prune_option=wanda,target_sparsity=0.5'
    )
    self.assertAllEqual(
      _masks(pruned)['d1'], _wanda_keep(kernel, x, 0.5).astype(np.float32)
    )
    self.assertLen(pruned.report.oneshot, 3)

  def test_weight_is_magnitude_per_layer_at_the_target(self):
    model = _mlp()
    kernel = model.get_layer('d2').kernel.numpy()
    pruned = graph_prune.prune_oneshot(
      model, _data(), 'prune_option=weight,target_sparsity=0.75'
    )
    order = np.argsort(np.abs(kernel), axis=None, kind='stable')
    expected = np.ones(kernel.size, np.float32)
    expected[order[: int(0.75 * kernel.size)]] = 0
    self.assertAllEqual(_masks(pruned)['d2'].reshape(-1), expected)

  def test_sparsegpt_honours_maps_exclusions_and_strips(self):
    model = _mlp()
    x = _data()
    pruned = graph_prune.prune_oneshot(
      model,
      x,
      'prune_option=sparsegpt,target_sparsity=0.5,'
      'weight_sparsity_map=[d2/kernel:0.75],do_not_prune=[d3]',
    )
    masks = _masks(pruned)
    self.assertNotIn('d3', masks)
    self.assertEqual(int((masks['d1'] == 0).sum()), 64)
    self.assertEqual(int((masks['d2'] == 0).sum()), 144)
    errors = {r.name.split('/')[0]: r.error for r in pruned.report.oneshot}
    self.assertGreater(errors['d2'], 0.0)
    stripped = graph_prune.strip(pruned)
    self.assertAllClose(stripped(x), pruned(x), rtol=1e-5, atol=1e-5)

  def test_two_of_four(self):
    pruned = graph_prune.prune_oneshot(
      _mlp(), _data(), 'prune_option=sparsegpt,sparsity_m_by_n=2:4'
    )
    mask = _masks(pruned)['d2']  # 16 inputs
    self.assertAllEqual(
      mask.reshape(4, 4, 12).sum(axis=1), np.full((4, 12), 2.0)
    )

  def test_calibration_forms_give_the_same_masks(self):
    x = _data()
    spec = 'prune_option=wanda,target_sparsity=0.5'
    by_array = _masks(graph_prune.prune_oneshot(_mlp(), x, spec))
    path = os.path.join(tempfile.mkdtemp(), 'calibration.npz')
    np.savez(path, x=x)
    forms = {
      'batches': [x[:32], x[32:]],
      'dataset': tf.data.Dataset.from_tensor_slices(x).batch(16),
      'npz': path,
    }
    for name, data in forms.items():
      masks = _masks(graph_prune.prune_oneshot(_mlp(), data, spec))
      for layer in by_array:
        self.assertAllEqual(masks[layer], by_array[layer], msg=name)


class CalibrationCountTest(tf.test.TestCase):
  def _x(self):
    # 600 examples; feature 0 is loud only after example 512, so the
    # wanda masks of d1 differ between the first 512 and all 600.
    x = _data(rows=600)
    x[:512, 0] *= 1e-3
    x[512:, 0] *= 1e3
    return x

  def test_every_example_is_used_by_default(self):
    model = _mlp()
    x = self._x()
    kernel = model.get_layer('d1').kernel.numpy()
    pruned = graph_prune.prune_oneshot(
      model, x, 'prune_option=wanda,target_sparsity=0.5'
    )
    self.assertEqual([r.rows for r in pruned.report.oneshot], [600] * 3)
    every = _wanda_keep(kernel, x, 0.5)
    self.assertNotAllEqual(every, _wanda_keep(kernel, x[:512], 0.5))
    self.assertAllEqual(_masks(pruned)['d1'], every.astype(np.float32))

  def test_max_examples_takes_the_first(self):
    model = _mlp()
    x = self._x()
    kernel = model.get_layer('d1').kernel.numpy()
    pruned = graph_prune.prune_oneshot(
      model,
      x,
      'prune_option=wanda,target_sparsity=0.5',
      batch_size=50,
      max_examples=100,
    )
    self.assertEqual([r.rows for r in pruned.report.oneshot], [100] * 3)
    self.assertAllEqual(
      _masks(pruned)['d1'], _wanda_keep(kernel, x[:100], 0.5).astype(np.float32)
    )


class ErrorsTest(tf.test.TestCase):
  def _unchanged(self, model, call):
    before = [w.numpy() for w in model.weights]
    with self.assertRaises(ValueError) as raised:
      call()
    for a, b in zip(before, [w.numpy() for w in model.weights]):
      self.assertAllEqual(a, b)
    message = str(raised.exception)
    self.assertNotIn('\n', message)
    return message

  def test_bad_calibration_data_is_one_line_and_changes_nothing(self):
    spec = 'prune_option=sparsegpt,target_sparsity=0.5'
    bad = {
      'empty': (np.zeros((0, 8), np.float32), 'calibration_data'),
      'nan': (np.full((4, 8), np.nan, np.float32), 'NaN'),
      'shape': (np.zeros((4, 5), np.float32), 'dimension 1 is 5, not 8'),
      'missing': ('/nonexistent/calibration.npz', 'calibration.npz'),
      'infinite': (
        tf.data.Dataset.from_tensor_slices(_data()).repeat(),
        'infinite',
      ),
    }
    for name, (data, fragment) in bad.items():
      model = _mlp()
      message = self._unchanged(
        model,
        lambda m=model, d=data: graph_prune.prune_oneshot(m, d, spec),
      )
      self.assertIn(fragment, message, msg=name)

  def test_gradient_options_need_training(self):
    model = _mlp()
    message = self._unchanged(
      model,
      lambda: graph_prune.prune_oneshot(
        model, _data(), 'prune_option=first_order_gradient'
      ),
    )
    self.assertIn('prune_option=weight|wanda|sparsegpt', message)

  def test_apply_pruning_points_one_shot_options_to_prune_oneshot(self):
    with self.assertRaisesRegex(ValueError, 'graph_prune.prune_oneshot'):
      graph_prune.apply_pruning(_mlp(), 'prune_option=wanda')

  def test_structures_need_prune_option_weight(self):
    for spec in ('pruning_scope=global', 'granularity=unit'):
      model = _mlp()
      message = self._unchanged(
        model,
        lambda spec=spec, model=model: graph_prune.prune_oneshot(
          model, _data(), f'prune_option=wanda,{spec}'
        ),
      )
      self.assertIn('prune_option=weight', message)


if __name__ == '__main__':
  tf.test.main()
