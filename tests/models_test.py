"""Tests of the built-in models and of what pruning finds in them."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.train import models


class ModelsTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    ('mlp', 'mlp', ['dense_1', 'dense_2', 'dense_3', 'dense_4', 'logits']),
    (
      'cnn',
      'cnn',
      ['conv_1', 'depthwise_1', 'pointwise_1', 'dense_1', 'logits'],
    ),
    (
      'lstm',
      'lstm',
      [
        'lstm_1/lstm_cell/kernel',
        'lstm_1/lstm_cell/recurrent_kernel',
        'logits',
      ],
    ),
  )
  def test_builds_logits_and_every_kernel_is_pruned(self, name, layers):
    model = models.build(name, (8, 8), num_classes=10, seed=0)
    x = np.random.RandomState(0).rand(3, 8, 8).astype(np.float32)
    self.assertEqual(tuple(model(x).shape), (3, 10))
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    self.assertLen(pruned.weight_names, len(layers))
    for weight, layer in zip(pruned.weight_names, layers):
      self.assertIn(f'/{layer}', weight)
    self.assertAllClose(pruned(x), model(x), atol=1e-5)

  def test_rescnn_kernels_and_residual_adds(self):
    model = models.build('rescnn', (8, 8), num_classes=10, seed=0)
    x = np.random.RandomState(1).rand(4, 8, 8).astype(np.float32)
    self.assertEqual(tuple(model(x).shape), (4, 10))
    kernels = {
      v.path.split('/')[0]: tuple(v.shape)
      for v in model.weights
      if v.path.endswith('kernel')
    }
    self.assertEqual(
      kernels,
      {
        'stem': (3, 3, 1, 16),
        'block_1_conv_a': (3, 3, 16, 16),
        'block_1_conv_b': (3, 3, 16, 16),
        'block_2_proj': (1, 1, 16, 32),
        'block_2_conv_a': (3, 3, 16, 32),
        'block_2_conv_b': (3, 3, 32, 32),
        'logits': (32, 10),
      },
    )
    adds = [layer.name for layer in model.layers if 'add' in layer.name]
    self.assertEqual(adds, ['block_1_add', 'block_2_add'])
    pruned = graph_prune.apply_pruning(model, 'target_sparsity=0.5')
    self.assertLen(pruned.weight_names, len(kernels))
    self.assertAllClose(pruned(x), model(x), atol=1e-5)
    pruned.mask_update(10**6)  # past the schedule: the target sparsity
    for name, fraction in pruned.sparsity().per_weight.items():
      self.assertAllClose(fraction, 0.5, atol=1e-6, msg=name)  # even sizes

  def test_mlp_is_the_classic_one(self):
    model = models.build('mlp', (28, 28), num_classes=10)
    kernels = [tuple(v.shape) for v in model.weights if 'kernel' in v.path]
    self.assertEqual(
      kernels, [(784, 1000), (1000, 1000), (1000, 500), (500, 200), (200, 10)]
    )

  def test_same_seed_same_weights(self):
    a = models.build('cnn', (8, 8, 1), 10, seed=3).get_weights()
    b = models.build('cnn', (8, 8, 1), 10, seed=3).get_weights()
    c = models.build('cnn', (8, 8, 1), 10, seed=4).get_weights()
    for x, y in zip(a, b):
      self.assertAllEqual(x, y)
    self.assertNotAllClose(a[0], c[0])

  def test_unknown_model(self):
    with self.assertRaisesRegex(
      errors.UnknownModelError, "'resnet'.*mlp, cnn, lstm"
    ):
      models.build('resnet', (8, 8), 10)

  def test_cnn_needs_images(self):
    with self.assertRaisesRegex(ValueError, r'\[64\].*--model=mlp'):
      models.build('cnn', (64,), 10)


if __name__ == '__main__':
  tf.test.main()
