"""MultiWorkerMirroredStrategy: two worker processes on localhost.

`setUpClass` starts two multi_worker_worker.py processes, each with its
`TF_CONFIG` on free localhost ports, and waits for both (killing both on
failure or timeout). They prune a small MLP for a few hundred steps; the
tests check the masks they hold against each other and against a
single-device run of the same training in this process, restore the chief's
checkpoint on one device and compare its stripped export's outputs.
"""

import glob
import os
import shutil
import tempfile

import multi_worker_worker as worker
import numpy as np
import tensorflow as tf

from graph_prune.export import strip
from graph_prune.train import strategies

_STEPS = 200


class MultiWorkerTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.out = worker.launch_in_temp_dir(
      'multi_worker', num_workers=2, args=[f'--steps={_STEPS}']
    )
    cls.workers = [
      dict(np.load(os.path.join(cls.out, f'worker_{i}.npz'))) for i in range(2)
    ]
    cls.reference = worker.state(
      *worker.train(strategies.make_strategy('default'), _STEPS)
    )

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.out, ignore_errors=True)
    super().tearDownClass()

  def test_two_replicas(self):
    for result in self.workers:
      self.assertEqual(int(result['num_replicas']), 2)
      self.assertEqual(int(result['iterations']), _STEPS)

  def test_masks_equal_across_workers_and_to_single_device(self):
    first, second = self.workers
    for result in self.workers:
      self.assertAllEqual(result['updates'], self.reference['updates'])
    for i in range(3):
      self.assertAllEqual(first[f'mask_{i}'], second[f'mask_{i}'])
      self.assertAllEqual(first[f'mask_{i}'], self.reference[f'mask_{i}'])
      self.assertAllClose(
        first[f'threshold_{i}'], self.reference[f'threshold_{i}'], atol=1e-6
      )
    self.assertAllClose(1 - first['mask_0'].mean(), 0.8, atol=0.01)

  def test_weights_equal_single_device(self):
    first, second = self.workers
    for i in range(6):
      self.assertAllEqual(first[f'weight_{i}'], second[f'weight_{i}'])
      self.assertAllClose(
        first[f'weight_{i}'], self.reference[f'weight_{i}'], atol=1e-5
      )

  def test_only_the_chief_keeps_a_checkpoint(self):
    self.assertTrue(str(self.workers[0]['checkpoint']).startswith(self.out))
    self.assertEqual(
      sorted(os.path.basename(p) for p in glob.glob(f'{self.out}/*ckpt*')),
      ['ckpt-1.data-00000-of-00001', 'ckpt-1.index'],
    )
    self.assertEmpty(glob.glob(f'{self.out}/worker_1_tmp*'))

  def test_checkpoint_restores_on_one_device_and_exports(self):
    chief = self.workers[0]
    model, pruned, optimizer = worker.build(strategies.make_strategy('default'))
    worker.checkpoint(model, pruned, optimizer).restore(
      str(chief['checkpoint'])
    ).assert_existing_objects_matched()
    self.assertEqual(int(optimizer.iterations.numpy()), _STEPS)
    for i, mask in enumerate(pruned.masks):
      self.assertAllEqual(mask.numpy()[None], chief[f'mask_{i}'])
    for i, weight in enumerate(model.weights):
      self.assertAllEqual(weight.numpy()[None], chief[f'weight_{i}'])
    x = worker.data()[0][:64]
    self.assertAllClose(pruned(x), chief['outputs'], atol=1e-6)

    # The stripped export: masks folded into constant weights.
    export = os.path.join(tempfile.mkdtemp(), 'export')
    strip.export_saved_model(pruned, export)
    loaded = tf.saved_model.load(export)  # keeps the variables alive
    serve = loaded.signatures['serving_default']
    self.assertAllClose(
      list(serve(tf.constant(x)).values())[0], chief['outputs'], atol=1e-6
    )


if __name__ == '__main__':
  tf.test.main()
