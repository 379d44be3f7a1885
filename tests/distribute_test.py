"""Tests of model/distribute: pruning under tf.distribute strategies.

TensorFlow fixes its devices once it is initialized and the rest of the suite
shares this process, so tests here use one device; the two-device
MirroredStrategy run happens in a subprocess (multi_worker_worker.py with
--num_cpu_devices=2) whose results `TwoDeviceMirroredTest` checks against a
single-device run of the same training.
"""

import os
import shutil

from absl.testing import parameterized
import keras
import multi_worker_worker as worker
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.model import distribute
from graph_prune.train import strategies

_STEPS = 200


def _single_device_reference(steps=_STEPS):
  return worker.state(*worker.train(strategies.make_strategy('default'), steps))


def _tiny_model():
  return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _bare(strategy_class):
  # TPU and parameter-server strategies need their hardware or cluster to be
  # built; the check only looks at the class.
  return strategy_class.__new__(strategy_class)


class StrategyCheckTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    ('default', lambda: strategies.make_strategy('default')),
    ('one_device', lambda: tf.distribute.OneDeviceStrategy('/cpu:0')),
    ('mirrored', lambda: tf.distribute.MirroredStrategy(['/cpu:0'])),
  )
  def test_supported(self, make):
    distribute.check_strategy(make())

  @parameterized.named_parameters(
    ('tpu', lambda: _bare(tf.distribute.TPUStrategy), 'TPUStrategy'),
    (
      'parameter_server',
      lambda: _bare(tf.distribute.experimental.ParameterServerStrategy),
      'ParameterServerStrategy',
    ),
    (
      'central_storage',
      lambda: tf.distribute.experimental.CentralStorageStrategy(['/cpu:0']),
      'CentralStorageStrategy',
    ),
  )
  def test_unsupported_names_strategy_and_alternatives(self, make, name):
    with self.assertRaisesRegex(
      errors.UnsupportedStrategyError,
      f'does not support {name}.*use MirroredStrategy, '
      'MultiWorkerMirroredStrategy, OneDeviceStrategy or no strategy',
    ):
      distribute.check_strategy(make())
    self.assertTrue(issubclass(errors.UnsupportedStrategyError, ValueError))
    self.assertTrue(
      issubclass(errors.UnsupportedStrategyError, errors.GraphPruneError)
    )

  def test_apply_pruning_under_unsupported_strategy(self):
    strategy = tf.distribute.experimental.CentralStorageStrategy(['/cpu:0'])
    with strategy.scope():
      model = _tiny_model()
      with self.assertRaisesRegex(
        errors.UnsupportedStrategyError, 'CentralStorageStrategy'
      ):
        graph_prune.apply_pruning(model)

  def test_make_strategy_errors(self):
    with self.assertRaisesRegex(
      errors.StrategyError, "Unknown strategy 'ring'.*mirrored"
    ):
      strategies.make_strategy('ring')
    with self.assertRaisesRegex(
      errors.StrategyError, 'only applies to the mirrored'
    ):
      strategies.make_strategy('multi_worker', num_cpu_devices=2)
    with self.assertRaisesRegex(errors.StrategyError, 'positive int'):
      strategies.configure_cpu_devices(0)

  def test_cpu_devices_after_initialization(self):
    count = len(tf.config.list_logical_devices('CPU'))  # initializes
    with self.assertRaisesRegex(errors.StrategyError, 'already initialized'):
      strategies.make_strategy('mirrored', num_cpu_devices=count + 1)

  def test_default_strategy_inside_a_scope(self):
    with tf.distribute.OneDeviceStrategy('/cpu:0').scope():
      default = strategies.make_strategy('default')
    self.assertFalse(isinstance(default, tf.distribute.OneDeviceStrategy))
    distribute.check_strategy(default)


class OneDeviceStrategiesTest(parameterized.TestCase, tf.test.TestCase):
  """The replica-context paths, with one replica, in this process."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.reference = _single_device_reference(60)

  @parameterized.named_parameters(
    ('mirrored', lambda: tf.distribute.MirroredStrategy(['/cpu:0'])),
    ('one_device', lambda: tf.distribute.OneDeviceStrategy('/cpu:0')),
  )
  def test_training_equals_no_strategy(self, make):
    result = worker.state(*worker.train(make(), 60))
    self.assertAllEqual(result['updates'], self.reference['updates'])
    for key, want in self.reference.items():
      if key.startswith('mask'):
        self.assertAllEqual(result[key], want, msg=key)
      elif key.startswith(('weight', 'threshold')):
        self.assertAllClose(result[key], want, atol=1e-6, msg=key)

  def test_make_train_step_equals_hand_written_step(self):
    strategy = strategies.make_strategy('default')
    model, pruned, optimizer = worker.build(strategy)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
      with tf.GradientTape() as tape:
        loss = loss_fn(yb, pruned(xb))
      variables = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return pruned.conditional_mask_update(optimizer.iterations)

    x, y = worker.data()
    updates = []
    for i in range(60):
      b = slice(i * 32 % len(x), i * 32 % len(x) + 32)
      if bool(step(x[b], y[b])):
        updates.append(i + 1)
    self.assertAllEqual(updates, self.reference['updates'])
    for i, weight in enumerate(model.weights):
      self.assertAllClose(
        weight.numpy()[None], self.reference[f'weight_{i}'], atol=1e-5
      )
    for i, mask in enumerate(pruned.masks):
      self.assertAllEqual(mask.numpy()[None], self.reference[f'mask_{i}'])

  def test_mask_update_inside_run(self):
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    _, pruned, _ = worker.build(strategy)

    @tf.function
    def update():
      strategy.run(pruned.mask_update, (100,))

    update()
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 100)
    self.assertAllClose(pruned.sparsity().overall, 0.8, atol=0.01)

  def test_update_inside_a_cond_of_the_replica_function(self):
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    _, pruned, _ = worker.build(strategy)

    @tf.function(autograph=False)
    def step(flag):
      return strategy.run(
        lambda f: tf.cond(
          f,
          lambda: pruned.conditional_mask_update(10),
          lambda: tf.constant(False),
        ),
        (flag,),
      )

    with self.assertRaisesRegex(
      errors.StrategyError,
      'conditional_mask_update was called inside a tf.cond, tf.while_loop '
      'or nested tf.function.*call it directly',
    ):
      step(tf.constant(True))
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 0)

  def test_eager_run(self):
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    _, pruned, _ = worker.build(strategy)
    updated = strategy.run(pruned.conditional_mask_update, (10,))
    self.assertTrue(bool(updated))
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 10)

  def test_apply_pruning_enters_the_weights_strategy(self):
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    with strategy.scope():
      model = _tiny_model()
    pruned = graph_prune.apply_pruning(model)
    for v in pruned.masks + pruned.thresholds + [pruned.weights[0]]:
      self.assertIsInstance(v, tf.distribute.DistributedValues)
    self.assertEqual(
      pruned.masks[0].synchronization, tf.VariableSynchronization.ON_WRITE
    )
    self.assertEqual(
      pruned.masks[0].aggregation, tf.VariableAggregation.ONLY_FIRST_REPLICA
    )
    self.assertFalse(pruned.masks[0].trainable)

  def test_apply_pruning_inside_run(self):
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    with strategy.scope():
      model = _tiny_model()
    with self.assertRaisesRegex(errors.StrategyError, 'inside strategy.run'):
      strategy.run(lambda: graph_prune.apply_pruning(model))

  def test_weights_of_another_strategy(self):
    with tf.distribute.MirroredStrategy(['/cpu:0']).scope():
      model = _tiny_model()
    with (
      tf.distribute.OneDeviceStrategy('/cpu:0').scope(),
      self.assertRaisesRegex(
        errors.StrategyError, 'created under another MirroredStrategy'
      ),
    ):
      graph_prune.apply_pruning(model)


def _forward(x, weights, masks):
  """The pruned MLP in NumPy: weights (k, b) * 3 and a mask per kernel."""
  h = x
  for i in range(3):
    h = h @ (weights[2 * i] * masks[i]) + weights[2 * i + 1]
    if i < 2:
      h = np.maximum(h, 0)
  return h


class TwoDeviceMirroredTest(tf.test.TestCase):
  """MirroredStrategy on two logical CPU devices, run in a subprocess."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.out = worker.launch_in_temp_dir(
      'mirrored',
      args=[
        '--num_cpu_devices=2',
        f'--steps={_STEPS}',
        f'--resume_at={_STEPS // 2}',
      ],
    )
    cls.result = dict(np.load(os.path.join(cls.out, 'local.npz')))
    cls.reference = _single_device_reference()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.out, ignore_errors=True)
    super().tearDownClass()

  def test_two_replicas(self):
    self.assertEqual(int(self.result['num_replicas']), 2)
    self.assertLen(self.result['mask_0'], 2)  # a copy per device

  def test_masks_equal_across_replicas_and_to_single_device(self):
    self.assertAllEqual(self.result['updates'], self.reference['updates'])
    for i in range(3):
      copies = self.result[f'mask_{i}']
      self.assertAllEqual(copies[0], copies[1])
      self.assertAllEqual(copies[:1], self.reference[f'mask_{i}'])
      self.assertAllClose(
        self.result[f'threshold_{i}'][:1],
        self.reference[f'threshold_{i}'],
        atol=1e-6,
      )
    self.assertAllClose(1 - self.result['mask_0'].mean(), 0.8, atol=0.01)

  def test_weights_equal_single_device(self):
    for i in range(6):
      copies = self.result[f'weight_{i}']
      self.assertAllEqual(copies[0], copies[1])
      self.assertAllClose(copies[:1], self.reference[f'weight_{i}'], atol=1e-5)
    self.assertAllClose(
      self.result['outputs'], self.reference['outputs'], atol=1e-5
    )

  def test_checkpoint_resumes_under_the_strategy(self):
    for key in (
      'mask_0',
      'mask_1',
      'mask_2',
      'weight_0',
      'weight_5',
      'threshold_0',
      'iterations',
    ):
      self.assertAllEqual(
        self.result[f'resumed_{key}'], self.result[key], msg=key
      )

  def test_checkpoint_restores_on_one_device(self):
    model, pruned, optimizer = worker.build(strategies.make_strategy('default'))
    worker.checkpoint(model, pruned, optimizer).restore(
      str(self.result['checkpoint'])
    ).assert_existing_objects_matched()
    for i, mask in enumerate(pruned.masks):
      self.assertAllEqual(mask.numpy(), self.result[f'mask_{i}'][0])
    for i, weight in enumerate(model.weights):
      self.assertAllEqual(weight.numpy(), self.result[f'weight_{i}'][0])
    self.assertEqual(int(optimizer.iterations.numpy()), _STEPS)
    self.assertAllClose(
      pruned(worker.data()[0][:64]), self.result['outputs'], atol=1e-6
    )

  def test_each_replica_reads_its_own_copies(self):
    # The subprocess made replica 1's copies of a kernel, its mask and a bias
    # differ from replica 0's before running the pruned model per replica.
    x, _ = worker.data()
    outputs = self.result['check_outputs']
    for r in range(2):
      weights = [self.result[f'check_weight_{i}'][r] for i in range(6)]
      masks = [self.result[f'check_mask_{i}'][r] for i in range(3)]
      self.assertAllClose(
        outputs[r],
        _forward(x[16 * r : 16 * (r + 1)], weights, masks),
        atol=1e-5,
      )
    self.assertNotAllClose(
      self.result['check_weight_0'][0], self.result['check_weight_0'][1]
    )
    self.assertNotAllClose(
      self.result['check_mask_0'][0], self.result['check_mask_0'][1]
    )

  def test_gradients_per_replica(self):
    x, y = worker.data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction='sum'
    )
    for r in range(2):
      params = [
        tf.constant(self.result[f'check_weight_{i}'][r]) for i in range(6)
      ]
      masks = [self.result[f'check_mask_{i}'][r] for i in range(3)]
      with tf.GradientTape() as tape:
        tape.watch(params)
        h = x[16 * r : 16 * (r + 1)]
        for i in range(3):
          h = tf.matmul(h, params[2 * i] * masks[i]) + params[2 * i + 1]
          if i < 2:
            h = tf.nn.relu(h)
        loss = loss_fn(y[16 * r : 16 * (r + 1)], h)
      for i, want in enumerate(tape.gradient(loss, params)):
        self.assertAllClose(
          self.result[f'check_grad_{i}'][r],
          want,
          atol=1e-4,
          msg=f'replica {r} gradient {i}',
        )
      for i in range(3):  # pruned positions get no gradient
        grad = self.result[f'check_grad_{2 * i}'][r]
        self.assertAllEqual(
          grad[masks[i] == 0], np.zeros(int((masks[i] == 0).sum()))
        )

  def test_weights_created_outside_the_scope(self):
    self.assertRegex(
      str(self.result['outside_scope_error']),
      r'created outside MirroredStrategy\.scope\(\)',
    )


if __name__ == '__main__':
  tf.test.main()
