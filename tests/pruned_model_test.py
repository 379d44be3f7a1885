"""End-to-end tests of apply_pruning and the PrunedModel it returns."""

import glob
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors


def _mlp(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential(
    [
      keras.Input((12,)),
      keras.layers.Dense(16, activation='relu', name='d1'),
      keras.layers.Dense(8, activation='relu', name='d2'),
      keras.layers.Dense(4, name='out'),
    ]
  )


def _np_forward(x, params, masks):
  """The MLP in NumPy with every kernel multiplied by its mask."""
  (k1, b1), (k2, b2), (k3, b3) = params
  m1, m2, m3 = masks
  h = np.maximum(x @ (k1 * m1) + b1, 0)
  h = np.maximum(h @ (k2 * m2) + b2, 0)
  return h @ (k3 * m3) + b3


def _params(model):
  return [(layer.kernel.numpy(), layer.bias.numpy()) for layer in model.layers]


def _random_masks(pruned, seed=1, keep=0.5):
  rng = np.random.RandomState(seed)
  masks = []
  for mask in pruned.masks:
    value = (rng.rand(*mask.shape) < keep).astype(np.float32)
    mask.assign(value)
    masks.append(value)
  return masks


def _data(n=64, seed=0):
  rng = np.random.RandomState(seed)
  return (
    rng.standard_normal((n, 12)).astype(np.float32),
    rng.randint(0, 4, n).astype(np.int32),
  )


_SPEC = (
  'target_sparsity=0.75,begin_pruning_step=0,end_pruning_step=40,'
  'sparsity_function_begin_step=0,sparsity_function_end_step=30,'
  'pruning_frequency=5'
)


class ApplyPruningTest(tf.test.TestCase):
  def test_masks_kernels_only(self):
    pruned = graph_prune.apply_pruning(_mlp(), _SPEC)
    self.assertLen(pruned.masks, 3)
    self.assertEqual(
      [tuple(m.shape) for m in pruned.masks], [(12, 16), (16, 8), (8, 4)]
    )
    for name in pruned.weight_names:
      self.assertRegex(name, r'kernel$')
    self.assertLen(pruned.thresholds, 3)
    self.assertEqual(pruned.hparams.target_sparsity, 0.75)

  def test_output_equals_numpy_masked_computation(self):
    model = _mlp()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    x, _ = _data()
    self.assertAllClose(pruned(x), model(x), atol=1e-6)
    masks = _random_masks(pruned)
    self.assertAllClose(
      pruned(x), _np_forward(x, _params(model), masks), atol=1e-5
    )

  def test_gradients_equal_hand_written_masked_computation(self):
    model = _mlp()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    masks = _random_masks(pruned)
    x, y = _data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
      loss = loss_fn(y, pruned(x))
    grads = tape.gradient(loss, model.trainable_variables)
    self.assertNotIn(None, grads)

    params = [tf.constant(v) for pair in _params(model) for v in pair]
    with tf.GradientTape() as tape:
      tape.watch(params)
      h = x
      for i in range(3):
        h = tf.matmul(h, params[2 * i] * masks[i]) + params[2 * i + 1]
        if i < 2:
          h = tf.nn.relu(h)
      expected_loss = loss_fn(y, h)
    expected = tape.gradient(expected_loss, params)
    self.assertAllClose(loss, expected_loss, atol=1e-6)
    for got, want in zip(grads, expected):
      self.assertAllClose(got, want, atol=1e-5)
    for grad, mask in zip(grads[::2], masks):
      self.assertAllEqual(
        np.asarray(grad)[mask == 0], np.zeros(int((mask == 0).sum()))
      )

  def test_training_reaches_schedule_and_pruned_stay_pruned(self):
    model = _mlp()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    optimizer = keras.optimizers.Adam(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = _data(256)

    @tf.function
    def train_step(xb, yb):
      with tf.GradientTape() as tape:
        loss = loss_fn(yb, pruned(xb))
      variables = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return pruned.conditional_mask_update(optimizer.iterations)

    updates = []
    for step in range(1, 46):
      i = (step * 32) % 256
      if bool(train_step(x[i : i + 32], y[i : i + 32])):
        updates.append(step)
    self.assertEqual(updates, [5, 10, 15, 20, 25, 30, 35, 40])
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 40)
    sparsity = pruned.sparsity()
    for name in pruned.weight_names:
      self.assertAllClose(sparsity.per_weight[name], 0.75, atol=0.02)
    self.assertAllClose(sparsity.overall, 0.75, atol=0.01)
    # Each mask is exactly the top |w| of its kernel as of the last update;
    # positions with mask 0 contribute nothing to the output.
    params = _params(model)
    masks = [m.numpy() for m in pruned.masks]
    noisy = [(k + (m == 0) * 7.0, b) for (k, b), m in zip(params, masks)]
    self.assertAllClose(pruned(x), _np_forward(x, noisy, masks), atol=1e-4)
    self.assertAllClose(pruned(x), _np_forward(x, params, masks), atol=1e-4)

  def test_mask_update_matches_numpy_top_k(self):
    model = _mlp()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    pruned.mask_update(30)  # schedule end: 0.75
    for (kernel, _), mask in zip(_params(model), pruned.masks):
      n = kernel.size
      keep = max(1, int(np.round(n * 0.25)))
      order = np.argsort(np.abs(kernel).ravel(), kind='stable')
      expected = np.ones(n)
      expected[order[: n - keep]] = 0
      self.assertAllEqual(mask.numpy().ravel(), expected)
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 30)

  def test_eager_conditional_update(self):
    pruned = graph_prune.apply_pruning(_mlp(), _SPEC)
    self.assertFalse(bool(pruned.conditional_mask_update(3)))
    self.assertTrue(bool(pruned.conditional_mask_update(5)))
    self.assertFalse(bool(pruned.conditional_mask_update(6)))
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 5)

  def test_checkpoint_resume_gives_identical_masks(self):
    x, y = _data(256, seed=3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def make():
      model = _mlp(seed=5)
      pruned = graph_prune.apply_pruning(model, _SPEC)
      optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
      optimizer.build(model.trainable_variables)

      @tf.function
      def train_step(xb, yb):
        with tf.GradientTape() as tape:
          loss = loss_fn(yb, pruned(xb))
        variables = model.trainable_variables
        optimizer.apply_gradients(
          zip(tape.gradient(loss, variables), variables)
        )
        pruned.conditional_mask_update(optimizer.iterations)

      ckpt = tf.train.Checkpoint(
        model=model, optimizer=optimizer, pruned=pruned
      )
      return pruned, optimizer, train_step, ckpt

    def run(train_step, optimizer, until):
      while int(optimizer.iterations.numpy()) < until:
        i = (int(optimizer.iterations.numpy()) * 32) % 256
        train_step(x[i : i + 32], y[i : i + 32])

    pruned_a, opt_a, step_a, _ = make()
    run(step_a, opt_a, 42)

    pruned_b, opt_b, step_b, ckpt_b = make()
    run(step_b, opt_b, 17)
    path = ckpt_b.save(os.path.join(tempfile.mkdtemp(), 'ckpt'))
    pruned_c, opt_c, step_c, ckpt_c = make()
    ckpt_c.restore(path).assert_existing_objects_matched()
    self.assertEqual(int(pruned_c.last_mask_update_step.numpy()), 15)
    run(step_c, opt_c, 42)
    for a, c in zip(pruned_a.masks, pruned_c.masks):
      self.assertAllEqual(a, c)
    for a, c in zip(pruned_a.weights, pruned_c.weights):
      self.assertAllClose(a, c, atol=1e-6)
    for a, c in zip(pruned_a.thresholds, pruned_c.thresholds):
      self.assertAllClose(a, c)

  def test_checkpoint_stores_each_weight_once(self):
    model = _mlp()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    path = tf.train.Checkpoint(
      model=model, pruned=pruned, optimizer=optimizer
    ).save(os.path.join(tempfile.mkdtemp(), 'ckpt'))
    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    stored = sum(
      int(np.prod(shape))
      for key, shape in shapes.items()
      if key != '_CHECKPOINTABLE_OBJECT_GRAPH'
    )
    weights = sum(int(np.prod(v.shape)) for v in model.weights)
    kernels = sum(int(np.prod(w.shape)) for w in pruned.weights)
    # The weights, Adam's two slots each, a mask per kernel, plus scalars
    # (thresholds, steps, learning rate, save counter).
    scalars = len(pruned.thresholds) + 4
    self.assertEqual(stored, 3 * weights + kernels + scalars)

  def test_checkpoint_of_the_pruned_module_alone_restores_weights(self):
    pruned = graph_prune.apply_pruning(_mlp(seed=0), _SPEC)
    _random_masks(pruned)
    path = tf.train.Checkpoint(pruned=pruned).save(
      os.path.join(tempfile.mkdtemp(), 'ckpt')
    )
    other = graph_prune.apply_pruning(_mlp(seed=5), _SPEC)
    x, _ = _data()
    self.assertNotAllClose(other(x), pruned(x))
    tf.train.Checkpoint(pruned=other).restore(path).assert_consumed()
    self.assertAllClose(other(x), pruned(x), atol=1e-6)

  def test_saved_model_round_trip(self):
    model = _mlp()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    _random_masks(pruned)
    x, _ = _data()
    export = os.path.join(tempfile.mkdtemp(), 'saved')
    tf.saved_model.save(pruned, export)
    loaded = tf.saved_model.load(export)
    self.assertIn('serving_default', loaded.signatures)
    self.assertAllClose(loaded(x), pruned(x), atol=1e-6)
    outputs = loaded.signatures['serving_default'](tf.constant(x))
    self.assertAllClose(list(outputs.values())[0], pruned(x), atol=1e-6)

  def test_write_summaries(self):
    pruned = graph_prune.apply_pruning(_mlp(), _SPEC)
    pruned.mask_update(30)
    logdir = tempfile.mkdtemp()
    with tf.summary.create_file_writer(logdir).as_default():
      pruned.write_summaries(30)
    tags = {}
    for path in glob.glob(os.path.join(logdir, 'events*')):
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          tags[value.tag] = float(tf.make_ndarray(value.tensor))
          # TensorBoard shows it as a scalar.
          self.assertEqual(value.metadata.plugin_data.plugin_name, 'scalars')
    for name in pruned.weight_names:
      self.assertAllClose(tags[f'{name}/sparsity'], 0.75, atol=0.02)
      self.assertIn(f'{name}/threshold', tags)
    self.assertAllClose(tags['model_pruning/sparsity'], 0.75)
    self.assertEqual(tags['model_pruning/last_mask_update_step'], 30)


def _bn_dropout_model(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential(
    [
      keras.Input((12,)),
      keras.layers.Dense(16, name='d1'),
      keras.layers.BatchNormalization(name='bn'),
      keras.layers.ReLU(),
      keras.layers.Dropout(0.5, name='drop'),
      keras.layers.Dense(4, name='out'),
    ]
  )


class TrainingModeTest(tf.test.TestCase):
  """`pruned(x, training=True)`: the Keras model's training graph, masked.

  The reference is a twin Keras model holding `kernel * mask` as its kernels
  and a copy of every other variable (batch norm statistics, the dropout seed
  generator's state), so that both draw the same dropout mask.
  """

  def _pruned_and_twin(self, training=False):
    model = _bn_dropout_model()
    pruned = graph_prune.apply_pruning(model, _SPEC, training=training)
    masks = _random_masks(pruned)
    twin = _bn_dropout_model(seed=1)
    return model, pruned, masks, twin

  def _sync(self, model, pruned, masks, twin):
    """Copies model into twin, kernels multiplied by their masks."""
    mask_of = {id(w): m for w, m in zip(pruned.weights, masks)}
    self.assertEqual(
      [(v.name, v.shape) for v in model.variables],
      [(v.name, v.shape) for v in twin.variables],
    )
    for source, target in zip(model.variables, twin.variables):
      value = source.numpy()
      mask = mask_of.get(id(source.value))
      target.assign(value if mask is None else value * mask)

  def test_outputs_and_batch_norm_updates_follow_keras_in_both_modes(self):
    model, pruned, masks, twin = self._pruned_and_twin()
    x, _ = _data()
    bn = model.get_layer('bn')
    for training in (False, True):
      self._sync(model, pruned, masks, twin)
      mean = bn.moving_mean.numpy()
      got = pruned(x, training=training)
      want = twin(x, training=training)
      self.assertAllClose(got, want, atol=1e-5, msg=f'training={training}')
      # Batch norm's moving statistics move in training mode only, as the
      # twin's do.
      twin_bn = twin.get_layer('bn')
      self.assertAllClose(bn.moving_mean, twin_bn.moving_mean, atol=1e-6)
      self.assertAllClose(
        bn.moving_variance, twin_bn.moving_variance, atol=1e-6
      )
      self.assertEqual(bool(np.any(bn.moving_mean.numpy() != mean)), training)
    self.assertAllClose(pruned(x), pruned(x, training=False))
    # Dropout and batch statistics: the modes differ as Keras' do.
    self.assertNotAllClose(pruned(x, training=True), pruned(x))
    self.assertNotAllClose(
      pruned(x, training=True), pruned(x, training=True)
    )  # a new dropout mask

  def test_gradients_in_training_mode(self):
    model, pruned, masks, twin = self._pruned_and_twin()
    x, y = _data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    self._sync(model, pruned, masks, twin)
    with tf.GradientTape() as tape:
      loss = loss_fn(y, pruned(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    with tf.GradientTape() as tape:
      twin_loss = loss_fn(y, twin(x, training=True))
    twin_grads = tape.gradient(twin_loss, twin.trainable_variables)
    self.assertAllClose(loss, twin_loss, atol=1e-6)
    mask_of = {id(w): m for w, m in zip(pruned.weights, masks)}
    for variable, grad, twin_grad in zip(
      model.trainable_variables, grads, twin_grads
    ):
      self.assertIsNotNone(grad, variable.path)
      # d loss / d kernel = d loss / d (kernel * mask) * mask.
      mask = mask_of.get(id(variable.value), 1.0)
      self.assertAllClose(grad, twin_grad * mask, atol=1e-5, msg=variable.path)

  def test_traced_in_training_mode(self):
    model, pruned, masks, twin = self._pruned_and_twin(training=True)
    x, _ = _data()
    self._sync(model, pruned, masks, twin)
    self.assertAllClose(pruned(x), twin(x, training=True), atol=1e-5)
    self.assertAllClose(
      pruned(x, training=False), twin(x, training=False), atol=1e-5
    )

  def test_train_step_prunes_and_updates_statistics(self):
    model = _bn_dropout_model()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    optimizer = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = _data(256)

    @tf.function
    def train_step(xb, yb):
      with tf.GradientTape() as tape:
        loss = loss_fn(yb, pruned(xb, training=True))
      variables = model.trainable_variables
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))
      pruned.conditional_mask_update(optimizer.iterations)
      return grads[0]

    mean = model.get_layer('bn').moving_mean.numpy()
    for step in range(1, 46):  # the last update is at step 40
      i = (step * 32) % 256
      grad = train_step(x[i : i + 32], y[i : i + 32])
    self.assertNotAllClose(model.get_layer('bn').moving_mean, mean)
    self.assertAllClose(pruned.sparsity().overall, 0.75, atol=0.01)
    # Pruned positions of the first kernel get no gradient.
    mask = pruned.masks[0].numpy()
    self.assertAllEqual(
      grad.numpy()[mask == 0], np.zeros(int((mask == 0).sum()))
    )

  def test_training_graph_is_not_exported_or_checkpointed(self):
    model = _bn_dropout_model()
    pruned = graph_prune.apply_pruning(model, _SPEC)
    x, _ = _data()
    directory = tempfile.mkdtemp()
    before = tf.train.list_variables(
      tf.train.Checkpoint(pruned=pruned).save(os.path.join(directory, 'a'))
    )
    pruned(x, training=True)
    after = tf.train.list_variables(
      tf.train.Checkpoint(pruned=pruned).save(os.path.join(directory, 'b'))
    )
    self.assertEqual([name for name, _ in before], [name for name, _ in after])
    export = os.path.join(directory, 'saved')
    tf.saved_model.save(pruned, export)
    loaded = tf.saved_model.load(export)
    self.assertEqual(list(loaded.signatures), ['serving_default'])
    outputs = loaded.signatures['serving_default'](tf.constant(x))
    self.assertAllClose(list(outputs.values())[0], pruned(x), atol=1e-6)

  def test_training_argument_errors(self):
    v = tf.Variable(tf.ones([2, 2]), name='kernel')

    @tf.function(input_signature=[tf.TensorSpec([None, 2])])
    def fn(x):
      return tf.matmul(x, v)

    pruned = graph_prune.apply_pruning(fn, 'target_sparsity=0.5')
    x = tf.ones([1, 2])
    self.assertAllClose(pruned(x, training=None), pruned(x))
    with self.assertRaisesRegex(errors.UntraceableError, 'not traced from one'):
      pruned(x, training=True)
    keras_pruned = graph_prune.apply_pruning(_bn_dropout_model(), _SPEC)
    with self.assertRaisesRegex(errors.UntraceableError, 'Python bool'):
      keras_pruned(_data()[0], training=tf.constant(True))


class ErrorsTest(tf.test.TestCase):
  def test_no_prunable_weight_lists_what_was_seen(self):
    v = tf.Variable([1.0, 2.0], name='bias_only')

    @tf.function(input_signature=[tf.TensorSpec([None, 2])])
    def fn(x):
      return x + v

    with self.assertRaisesRegex(
      errors.NoPrunableWeightsError, r'no prunable weight.*bias_only'
    ):
      graph_prune.apply_pruning(fn, 'target_sparsity=0.5')

  def test_polymorphic_function_without_signature(self):
    @tf.function
    def fn(x):
      return x

    with self.assertRaisesRegex(errors.UntraceableError, 'input_signature'):
      graph_prune.apply_pruning(fn, '')

  def test_bad_hparams(self):
    with self.assertRaisesRegex(errors.UnknownHParamError, 'did you mean'):
      graph_prune.apply_pruning(_mlp(), 'target_sparsty=0.5')
    with self.assertRaisesRegex(errors.HParamTypeError, 'PruningHParams'):
      graph_prune.apply_pruning(_mlp(), {'target_sparsity': 0.5})

  def test_two_map_entries_matching_one_weight(self):
    with self.assertRaises(errors.WeightMatchError):
      graph_prune.apply_pruning(
        _mlp(), 'weight_sparsity_map=[d1:0.5,kernel:0.6]'
      )

  def test_unmatched_map_entry_warns(self):
    with self.assertLogs(level='WARNING') as logs:
      graph_prune.apply_pruning(_mlp(), 'weight_sparsity_map=[nothing:0.5]')
    self.assertTrue(any('nothing:0.5' in line for line in logs.output))


class AllOrNothingUpdateTest(tf.test.TestCase, parameterized.TestCase):
  """A mask update that fails (a NaN in a weight) changes no state."""

  def _pruned_with_nan_in_second_weight(self, scope):
    model = _mlp()
    pruned = graph_prune.apply_pruning(
      model,
      f'target_sparsity=0.5,begin_pruning_step=0,end_pruning_step=100,'
      f'pruning_frequency=1,pruning_scope={scope}',
    )
    pruned.mask_update(0)  # at step 0 the schedule prunes nothing
    kernel = model.layers[1].kernel.numpy()
    kernel[3, 2] = np.nan
    model.layers[1].kernel.assign(kernel)
    return pruned

  def _state(self, pruned):
    return (
      [m.numpy().copy() for m in pruned.masks],
      [t.numpy().copy() for t in pruned.thresholds],
      int(pruned.last_mask_update_step.numpy()),
    )

  @parameterized.named_parameters(
    ('eager_layer', 'layer', 'eager'),
    ('eager_global', 'global', 'eager'),
    ('conditional_layer', 'layer', 'conditional'),
    ('tf_function_layer', 'layer', 'tf_function'),
  )
  def test_nan_in_second_weight_changes_no_mask_threshold_or_step(
    self, scope, how
  ):
    pruned = self._pruned_with_nan_in_second_weight(scope)
    masks, thresholds, step = self._state(pruned)
    # Every mask is all ones and the step is 0 before the failed update.
    self.assertEqual(step, 0)
    for mask in masks:
      self.assertAllEqual(mask, np.ones_like(mask))
    if how == 'eager':
      with self.assertRaisesRegex(
        errors.NonFiniteWeightError,
        r"weight '[\w/]*d2/kernel' holds NaN or Inf",
      ):
        pruned.mask_update(50)
    elif how == 'conditional':
      with self.assertRaisesRegex(
        errors.NonFiniteWeightError,
        r"weight '[\w/]*d2/kernel' holds NaN or Inf",
      ):
        pruned.conditional_mask_update(50)
    else:
      update = tf.function(lambda s: pruned.conditional_mask_update(s))
      with self.assertRaisesRegex(
        tf.errors.InvalidArgumentError,
        r"weight \\?'[\w/]*d2/kernel\\?' holds NaN or Inf",
      ):
        update(tf.constant(50, tf.int64))
    new_masks, new_thresholds, new_step = self._state(pruned)
    self.assertEqual(new_step, 0)
    for old, new in zip(masks + thresholds, new_masks + new_thresholds):
      self.assertAllEqual(new, old)


if __name__ == '__main__':
  tf.test.main()
