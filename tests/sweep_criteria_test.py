"""Tests of the sweep's criterion methods: wanda, sparsegpt, gradient saliency.

One-shot rows run on a tiny MLP (what `sweep.one_shot` takes is any trained
Keras model with a `logits` layer); the masks are checked against NumPy
computations from the digits themselves. The gradient method runs the
built-in MLP for a few steps (`sweep.retrain` builds the configured model).
"""

import keras
import numpy as np
import tensorflow as tf

from graph_prune.study import config as config_lib
from graph_prune.study import sweep
from graph_prune.train import datasets
from graph_prune.train import models


def _tiny_mlp():
  init = keras.initializers.GlorotUniform
  return keras.Sequential(
    [
      keras.Input((8, 8), name='images'),
      keras.layers.Flatten(name='flatten'),
      keras.layers.Dense(
        16, 'relu', name='dense_1', kernel_initializer=init(1)
      ),
      keras.layers.Dense(
        12, 'relu', name='dense_2', kernel_initializer=init(2)
      ),
      keras.layers.Dense(10, name='logits', kernel_initializer=init(3)),
    ],
    name='tiny',
  )


def _layers(model):
  """(kernel, bias) of dense_1 and dense_2, as NumPy."""
  return [
    tuple(v.numpy() for v in model.get_layer(name).weights)
    for name in ('dense_1', 'dense_2')
  ]


def _assert_ranked(test, scores, keep, axis):
  """`keep` holds, along `axis`, the largest scores: never a smaller one
  kept while a larger one is dropped (ties at the boundary either way)."""
  kept = np.where(keep == 1, scores, np.inf).min(axis=axis)
  dropped = np.where(keep == 0, scores, -np.inf).max(axis=axis)
  test.assertTrue(np.all(kept >= dropped), (kept, dropped))


class OneShotMethodsTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = datasets.load_digits()
    cls.x = cls.data.x_train.reshape(len(cls.data.x_train), -1)

  def _pruned(self, name, sparsity=0.5):
    model = _tiny_mlp()
    dense = _layers(model)
    # More samples than the training split: every training example.
    pruned = sweep.prune_once(
      model,
      self.data,
      config_lib.parse_method(name),
      sparsity,
      calibration_samples=10**6,
    )
    masks = {
      n.split('/')[-2]: m.numpy()
      for n, m in zip(pruned.weight_names, pruned.masks)
    }
    self.assertEqual(sorted(masks), ['dense_1', 'dense_2'])  # logits dense
    return model, dense, pruned, masks

  def test_wanda_keeps_each_outputs_largest_weight_times_input_norm(self):
    model, dense, _, masks = self._pruned('oneshot_wanda_layer')
    (w1, b1), (w2, _) = dense
    # wanda changes no weight.
    for (w, b), (w_after, b_after) in zip(dense, _layers(model)):
      self.assertAllEqual(w_after, w)
      self.assertAllEqual(b_after, b)
    # dense_2 sees dense_1's output once dense_1 is pruned.
    h1 = np.maximum(self.x @ (w1 * masks['dense_1']) + b1, 0)
    for w, m, x in ((w1, masks['dense_1'], self.x), (w2, masks['dense_2'], h1)):
      norms = np.sqrt((x.astype(np.float64) ** 2).sum(axis=0))
      # Each output (column) keeps half of its inputs.
      self.assertAllEqual(m.sum(axis=0), np.full(w.shape[1], w.shape[0] // 2))
      _assert_ranked(self, np.abs(w) * norms[:, None], m, axis=0)

  def test_sparsegpt_zeroes_the_pruned_and_reconstructs_with_the_kept(self):
    model, dense, pruned, masks = self._pruned('oneshot_sparsegpt_layer')
    (w1, b1), _ = dense
    after = _layers(model)
    for (w, _), (w_new, _), m in zip(
      dense, after, (masks['dense_1'], masks['dense_2'])
    ):
      self.assertEqual(m.sum(), w.size // 2)
      self.assertAllEqual(w_new[m == 0], np.zeros(w.size // 2, np.float32))
      self.assertGreater(np.abs(w_new - w)[m == 1].max(), 1e-4)
    # The first layer's output error on the calibration inputs, in NumPy:
    # the report's, and below magnitude pruning's of the same sparsity.
    x = self.x.astype(np.float64)

    def error(w_pruned):
      return np.linalg.norm(x @ w1 - x @ w_pruned) / np.linalg.norm(x @ w1)

    got = error(after[0][0] * masks['dense_1'])
    (first, *_) = pruned.report.oneshot
    self.assertEndsWith(first.name, 'dense_1/kernel')
    self.assertAllClose(first.error, got, rtol=1e-4)
    magnitude = np.abs(w1) >= np.median(np.abs(w1))
    self.assertLess(got, 0.8 * error(w1 * magnitude))

  def test_one_shot_rows_measure_the_masks_and_restore_the_weights(self):
    for name in ('oneshot_wanda_layer', 'oneshot_sparsegpt_layer'):
      with self.subTest(name):
        model, dense, _, masks = self._pruned(name, 0.75)
        zeros = sum((m == 0).sum() for m in masks.values())
        size = sum(m.size for m in masks.values())
        self.assertEqual(zeros, 0.75 * size)  # 16 and 12 inputs: exact
        model = _tiny_mlp()
        row = sweep.one_shot(
          model,
          self.data,
          config_lib.parse_method(name),
          0.75,
          calibration_samples=10**6,
        )
        self.assertEqual(row.method, name)
        self.assertAllClose(row.sparsity, zeros / size, atol=1e-7)
        self.assertGreater(row.reconstruction_error, 0)
        for (w, b), (w_after, b_after) in zip(dense, _layers(model)):
          self.assertAllEqual(w_after, w)
          self.assertAllEqual(b_after, b)

  def test_calibration_samples_are_a_seeded_subset(self):
    model = _tiny_mlp()
    method = config_lib.parse_method('oneshot_wanda_layer')
    masks = [
      [
        m.numpy()
        for m in sweep.prune_once(model, self.data, method, 0.5, seed, n).masks
      ]
      for seed, n in ((0, 40), (0, 40), (1, 40))
    ]
    for a, b in zip(masks[0], masks[1]):
      self.assertAllEqual(a, b)
    self.assertFalse(
      all(np.array_equal(a, b) for a, b in zip(masks[0], masks[2]))
    )


class GradientMethodTest(tf.test.TestCase):
  def test_first_order_gradient_ranks_weight_times_saliency(self):
    data = datasets.load_digits()
    config = config_lib.SweepConfig(
      methods=('gradual_first_order_gradient_layer',),
      retrain_steps=10,
      pruning_frequency=5,
      schedule_fraction=1.0,  # the last mask update is the last step
      batch_size=32,
    )
    self.assertEqual(config.schedule_steps, 10)
    dense = models.build('mlp', (8, 8), 10, seed=0).get_weights()
    method = config_lib.parse_method(config.methods[0])
    _, pruned = sweep.retrain(config, dense, data, method, 0.5)
    self.assertLen(pruned.masks, 4)  # the logits stay dense
    for weight, mask, state in zip(
      pruned.weights,
      pruned.masks,
      [p.saliency for p in pruned.pruned_weights],
    ):
      w, m, g = weight.numpy(), mask.numpy(), state.gradient.numpy()
      self.assertEqual(m.sum(), m.size // 2)
      _assert_ranked(self, (np.abs(w) * g).ravel(), m.ravel(), axis=0)
      # Not |w|'s mask: some kept weight is smaller than a dropped one.
      self.assertLess(
        np.abs(w)[m == 1].min(), np.abs(w)[m == 0].max(), weight.name
      )


if __name__ == '__main__':
  tf.test.main()
