"""Tests of model/keras_fit: Keras `fit` drives the pruning schedule."""

import os
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import keras
import keras_fit_worker
import numpy as np
import tensorflow as tf
import tf_keras

import graph_prune
from graph_prune import errors

_KERAS = (('keras3', keras), ('tf_keras', tf_keras))
_BATCH = 32
_EXAMPLES = 256  # 8 steps per epoch
_EPOCHS = 4  # 32 steps
# Updates at steps 8, 16, 24 and 32 (the last step of fit), reaching the
# target at 32, so the final masks come from the final weights.
_SPEC = (
  'target_sparsity=0.75,begin_pruning_step=0,end_pruning_step=40,'
  'sparsity_function_begin_step=0,sparsity_function_end_step=32,'
  'pruning_frequency=8'
)


def _mlp(k, seed=0):
  k.utils.set_random_seed(seed)
  return k.Sequential(
    [
      k.Input((20,)),
      k.layers.Dense(32, activation='relu'),
      k.layers.Dense(3),
    ]
  )


def _data():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((_EXAMPLES, 20)).astype(np.float32)
  y = (np.argmax(x[:, :3], axis=1)).astype(np.int32)
  return x, y


def _compile(k, model):
  model.compile(
    optimizer=k.optimizers.Adam(0.01),
    loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
  )


def _fit(model, x, y):
  return model.fit(
    x, y, batch_size=_BATCH, epochs=_EPOCHS, shuffle=False, verbose=0
  ).history['loss']


def _compiled_trainer(k, spec=_SPEC):
  """(model, pruned, trainer): the MLP pruned by `spec`, trainer compiled."""
  model = _mlp(k)
  pruned = graph_prune.apply_pruning(model, spec)
  trainer = graph_prune.keras_trainer(pruned)
  _compile(k, trainer)
  return model, pruned, trainer


def _np_masks(kernels, sparsity):
  """Keeps all but the round(sparsity * n) smallest |w| (stable order)."""
  masks = []
  for w in kernels:
    flat = np.abs(w).ravel()
    mask = np.ones(flat.size, np.float32)
    mask[
      np.argsort(flat, kind='stable')[: int(round(sparsity * flat.size))]
    ] = 0
    masks.append(mask.reshape(w.shape))
  return masks


def _np_forward(x, layers, masks):
  (k1, b1), (k2, b2) = layers
  h = np.maximum(x @ (k1 * masks[0]) + b1, 0)
  return h @ (k2 * masks[1]) + b2


class KerasTrainerTest(parameterized.TestCase, tf.test.TestCase):
  def assertSameTraining(self, got, want):
    """(model, pruned) pairs: equal masks, weights within 1e-5."""
    for got_mask, want_mask in zip(got[1].masks, want[1].masks):
      self.assertAllEqual(got_mask.numpy(), want_mask.numpy())
    for got_weight, want_weight in zip(
      got[0].get_weights(), want[0].get_weights()
    ):
      self.assertAllClose(got_weight, want_weight, atol=1e-5)

  @parameterized.named_parameters(*_KERAS)
  def test_trains_like_the_model_while_masks_are_ones(self, k):
    x, y = _data()
    reference = _mlp(k)
    _compile(k, reference)
    expected = _fit(reference, x, y)

    model = _mlp(k)
    pruned = graph_prune.apply_pruning(
      model, 'target_sparsity=0.5,begin_pruning_step=1000,end_pruning_step=2000'
    )
    trainer = graph_prune.keras_trainer(pruned)
    _compile(k, trainer)
    self.assertAllClose(_fit(trainer, x, y), expected, rtol=1e-5)
    for got, want in zip(model.get_weights(), reference.get_weights()):
      self.assertAllClose(got, want, atol=1e-5)
    self.assertAllEqual([m.numpy().min() for m in pruned.masks], [1.0, 1.0])
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 0)

  @parameterized.named_parameters(*_KERAS)
  def test_fit_follows_the_schedule(self, k):
    x, y = _data()
    model, pruned, trainer = _compiled_trainer(k)
    losses = _fit(trainer, x, y)
    self.assertLess(losses[-1], losses[0])
    self.assertEqual(int(trainer.optimizer.iterations.numpy()), 32)
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 32)
    kernels = [layer.kernel.numpy() for layer in model.layers]
    # The last update ran after the last optimizer step, on these weights.
    for got, want in zip(pruned.masks, _np_masks(kernels, 0.75)):
      self.assertAllEqual(got.numpy(), want)

    layers = [
      (layer.kernel.numpy(), layer.bias.numpy()) for layer in model.layers
    ]
    masks = [m.numpy() for m in pruned.masks]
    self.assertAllClose(
      trainer.predict(x[:16], verbose=0),
      _np_forward(x[:16], layers, masks),
      atol=1e-5,
    )
    logits = _np_forward(x, layers, masks)
    loss = trainer.evaluate(x, y, batch_size=_EXAMPLES, verbose=0)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    self.assertAllClose(
      loss, -log_softmax[np.arange(_EXAMPLES), y].mean(), rtol=1e-5
    )

  @parameterized.named_parameters(*_KERAS)
  def test_trainer_weights_are_the_models(self, k):
    model = _mlp(k)
    trainer = graph_prune.keras_trainer(graph_prune.apply_pruning(model))
    self.assertEqual(
      {id(w) for w in trainer.trainable_weights},
      {id(w) for w in model.trainable_weights},
    )
    self.assertLen(trainer.trainable_weights, 4)

  def test_mirrored_fit_matches_single_device_fit(self):
    x, y = _data()
    model, pruned, trainer = _compiled_trainer(keras)
    _fit(trainer, x, y)

    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    with strategy.scope():
      mirrored_model, mirrored, mirrored_trainer = _compiled_trainer(keras)
    _fit(mirrored_trainer, x, y)
    self.assertEqual(int(mirrored.last_mask_update_step.numpy()), 32)
    self.assertSameTraining((mirrored_model, mirrored), (model, pruned))

  @parameterized.named_parameters(*_KERAS)
  def test_checkpoint_resume_equals_uninterrupted_fit(self, k):
    x, y = _data()
    model, pruned, trainer = _compiled_trainer(k)
    _fit(trainer, x, y)

    first_model, first_pruned, first = _compiled_trainer(k)
    first.fit(x, y, batch_size=_BATCH, epochs=2, shuffle=False, verbose=0)
    self.assertEqual(int(first_pruned.last_mask_update_step.numpy()), 16)
    path = tf.train.Checkpoint(trainer=first).save(
      os.path.join(tempfile.mkdtemp(), 'ckpt')
    )
    del first_model, first_pruned, first

    resumed_model, resumed_pruned, resumed = _compiled_trainer(k)
    tf.train.Checkpoint(trainer=resumed).restore(path)
    self.assertEqual(int(resumed_pruned.last_mask_update_step.numpy()), 16)
    resumed.fit(
      x,
      y,
      batch_size=_BATCH,
      epochs=4,
      initial_epoch=2,
      shuffle=False,
      verbose=0,
    )
    self.assertEqual(int(resumed.optimizer.iterations.numpy()), 32)
    self.assertSameTraining((resumed_model, resumed_pruned), (model, pruned))

  @parameterized.named_parameters(*_KERAS)
  def test_save_names_the_exports_that_work(self, k):
    trainer = graph_prune.keras_trainer(graph_prune.apply_pruning(_mlp(k)))
    path = os.path.join(tempfile.mkdtemp(), 'model.keras')
    with self.assertRaisesRegex(
      errors.StripError,
      r"cannot be saved as a Keras model \('.*model.keras'\).*"
      'graph_prune.export_saved_model.*tf.train.Checkpoint',
    ):
      trainer.save(path)
    self.assertIsInstance(errors.StripError('x'), ValueError)

  @parameterized.named_parameters(*_KERAS)
  def test_two_input_functional_and_subclassed_models(self, k):
    rng = np.random.default_rng(1)
    xa = rng.random((64, 4), dtype=np.float32)
    xb = rng.random((64, 3), dtype=np.float32)
    y = rng.random((64, 2), dtype=np.float32)
    a, b = k.Input((4,)), k.Input((3,))
    joined = k.layers.Concatenate()(
      [k.layers.Dense(8)(a), k.layers.Dense(8)(b)]
    )
    two_input = k.Model([a, b], k.layers.Dense(2)(joined))

    class Subclassed(k.Model):
      def __init__(self):
        super().__init__()
        self.hidden = k.layers.Dense(8, activation='relu')
        self.out = k.layers.Dense(2)

      def call(self, x, training=False):
        return self.out(self.hidden(x))

    subclassed = Subclassed()
    subclassed(xa)
    spec = (
      'target_sparsity=0.5,begin_pruning_step=0,end_pruning_step=8,'
      'sparsity_function_end_step=8,pruning_frequency=4'
    )
    for model, x in ((two_input, [xa, xb]), (subclassed, xa)):
      pruned = graph_prune.apply_pruning(model, spec)
      trainer = graph_prune.keras_trainer(pruned)
      trainer.compile(optimizer='adam', loss='mse')
      trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
      self.assertEqual(int(pruned.last_mask_update_step.numpy()), 8)
      for mask in pruned.masks:
        self.assertEqual(
          int((mask.numpy() == 0).sum()), round(0.5 * mask.shape.num_elements())
        )
      self.assertAllClose(trainer.predict(x, verbose=0), pruned(x))
    with self.assertRaisesRegex(
      errors.UntraceableError,
      'got 1 input tensors, but the pruned model takes 2',
    ):
      graph_prune.keras_trainer(graph_prune.apply_pruning(two_input))((xa,))

  @parameterized.named_parameters(*_KERAS)
  def test_training_mode_must_be_static(self, k):
    x, _ = _data()
    model = _mlp(k)
    pruned = graph_prune.apply_pruning(model)
    trainer = graph_prune.keras_trainer(pruned)
    self.assertAllClose(
      trainer(x[:4], training=tf.constant(True)), pruned(x[:4], training=True)
    )
    mode = tf.function(
      lambda x, t: trainer(x, training=t),
      input_signature=[tf.TensorSpec([None, 20]), tf.TensorSpec([], tf.bool)],
      autograph=False,
    )
    with self.assertRaisesRegex(
      errors.UntraceableError, 'known when Keras traces its step'
    ):
      mode.get_concrete_function()

  def test_two_replica_fit_matches_single_device_fit(self):
    out = os.path.join(tempfile.mkdtemp(), 'two.npz')
    subprocess.run(
      [
        sys.executable,
        keras_fit_worker.__file__,
        '--num_cpu_devices=2',
        f'--out={out}',
      ],
      check=True,
      timeout=300,
      capture_output=True,
    )
    two = dict(np.load(out))
    one = keras_fit_worker.fit_and_record(tf.distribute.get_strategy())
    self.assertEqual(int(two['num_replicas']), 2)
    self.assertEqual(int(two['last_update']), 32)
    for i in range(2):
      copies = two[f'mask_{i}']
      self.assertLen(copies, 2)
      self.assertAllEqual(copies[0], copies[1])
      self.assertAllEqual(copies[0], one[f'mask_{i}'][0])
      self.assertEqual(
        int((copies[0] == 0).sum()), round(0.75 * copies[0].size)
      )
    for i in range(4):
      self.assertAllClose(two[f'weight_{i}'], one[f'weight_{i}'], atol=1e-5)

  def test_needs_a_keras_model(self):
    module = tf.Module()
    module.w = tf.Variable(tf.ones([4, 3]))
    fn = tf.function(
      lambda x: tf.matmul(x, module.w),
      input_signature=[tf.TensorSpec([None, 4])],
    )
    pruned = graph_prune.apply_pruning(fn)
    with self.assertRaisesRegex(
      errors.UntraceableError,
      'needs a PrunedModel made by apply_pruning from a Keras model.*'
      'conditional_mask_update',
    ):
      graph_prune.keras_trainer(pruned)
    with self.assertRaises(ValueError):
      graph_prune.keras_trainer(object())


if __name__ == '__main__':
  tf.test.main()
