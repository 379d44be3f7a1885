"""Tests of graph_prune/export/keras_model.py (`strip_keras`).

Keras 3 Sequential, functional and subclassed models and a tf_keras model
are pruned to 75% by one mask update, then `strip_keras` gives a new Keras
model. Checked: it is a new model of the same Keras package; its kernels are
exactly weight * mask (NumPy), with zeros where the mask is 0, and +0.0 (no
-0.0); the training model's weights are untouched; `predict` equals
`pruned(x)`; `.keras` files load in a fresh Python process that never
imports graph_prune and predict the same there; `summary` and `export`
work; a non-Keras computation is a clear error naming `strip`.
"""

import json
import os
import subprocess
import sys

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
import tf_keras

import graph_prune
from graph_prune import errors

L = keras.layers
HPARAMS = (
  'target_sparsity=0.75,begin_pruning_step=0,end_pruning_step=1,'
  'sparsity_function_end_step=1'
)
X = np.random.RandomState(1).standard_normal((8, 12)).astype(np.float32)


@keras.saving.register_keras_serializable('graph_prune_test')
class TwoLayers(keras.Model):
  def __init__(self, units=16, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.hidden = L.Dense(units, activation='relu')
    self.out = L.Dense(4)

  def call(self, x):
    return self.out(self.hidden(x))

  def get_config(self):
    return {**super().get_config(), 'units': self.units}


def _sequential():
  return keras.Sequential(
    [keras.Input((12,)), L.Dense(16, activation='relu'), L.Dense(4)]
  )


def _functional():
  x = keras.Input((12,), name='features')
  h = L.Dense(16, activation='relu')(x)
  return keras.Model(x, L.Dense(4)(h) + L.Dense(4)(h))


def _subclassed():
  model = TwoLayers()
  model(X)
  return model


def _tf_keras():
  return tf_keras.Sequential(
    [
      tf_keras.layers.Dense(16, activation='relu', input_shape=(12,)),
      tf_keras.layers.Dense(4),
    ]
  )


MODELS = {
  'sequential': (_sequential, keras),
  'functional': (_functional, keras),
  'subclassed': (_subclassed, keras),
  'tf_keras': (_tf_keras, tf_keras),
}
# Loads each .keras file with plain Keras and prints its predictions.
_LOADER = """
import json, sys
import numpy as np
paths, x = json.loads(sys.argv[1]), np.load(sys.argv[2])
out = {}
for name, (path, package) in paths.items():
  if package == 'tf_keras':
    import tf_keras as k
  else:
    import keras as k
  out[name] = k.models.load_model(path).predict(x, verbose=0).tolist()
assert 'graph_prune' not in sys.modules
print(json.dumps(out))
"""


class StripKerasTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = os.path.join(
      os.environ.get('TMPDIR', '/tmp'), f'strip_keras_{os.getpid()}'
    )
    os.makedirs(cls.root, exist_ok=True)
    cls.cases = {}
    for name, (build, package) in MODELS.items():
      keras.utils.set_random_seed(0)
      model = build()
      before = [np.array(w.numpy()) for w in model.weights]
      pruned = graph_prune.apply_pruning(model, HPARAMS)
      pruned.mask_update(1)
      plain = graph_prune.strip_keras(pruned)
      path = os.path.join(cls.root, f'{name}.keras')
      plain.save(path)
      cls.cases[name] = (model, before, pruned, plain, path, package)
    # One fresh process loads every file but the subclassed one (whose
    # class lives in this test module, as any custom class must be importable
    # where it is loaded).
    files = {
      name: (case[4], case[5].__name__)
      for name, case in cls.cases.items()
      if name != 'subclassed'
    }
    x_path = os.path.join(cls.root, 'x.npy')
    np.save(x_path, X)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run(
      [sys.executable, '-c', _LOADER, json.dumps(files), x_path],
      capture_output=True,
      text=True,
      env=env,
      cwd=cls.root,  # not the repository: graph_prune is not importable
      check=False,
    )
    cls.fresh = (result.returncode, result.stdout, result.stderr)

  @parameterized.named_parameters((name, name) for name in MODELS)
  def test_new_model_with_masked_weights(self, name):
    model, before, pruned, plain, _, package = self.cases[name]
    self.assertIsNot(plain, model)
    self.assertIsInstance(plain, package.Model)
    for w, b in zip(model.weights, before):  # training model untouched
      self.assertAllEqual(w.numpy(), b)
    masks = {
      id(_tf_var(w)): m.numpy() for w, m in zip(pruned.weights, pruned.masks)
    }
    masked = 0
    for original, v in zip(model.weights, plain.weights):
      value = v.numpy()
      mask = masks.get(id(_tf_var(original)))
      if mask is None:
        self.assertAllEqual(value, original.numpy())
        continue
      masked += 1
      self.assertAllEqual(value, original.numpy() * mask)
      self.assertAllEqual(value == 0, mask == 0)
      self.assertFalse(np.any(np.signbit(value[value == 0])))  # no -0.0
      self.assertAllClose(np.mean(value == 0), 0.75, atol=0.02)
    self.assertEqual(masked, len(pruned.weights))
    self.assertAllClose(
      plain.predict(X, verbose=0), pruned(tf.constant(X)), atol=1e-5
    )

  @parameterized.named_parameters(
    (name, name) for name in MODELS if name != 'subclassed'
  )
  def test_keras_file_loads_without_graph_prune(self, name):
    code, out, err = self.fresh
    self.assertEqual(code, 0, err[-2000:])
    predictions = json.loads(out.strip().splitlines()[-1])
    _, _, pruned, _, _, _ = self.cases[name]
    self.assertAllClose(predictions[name], pruned(tf.constant(X)), atol=1e-5)

  def test_subclassed_file_loads(self):
    _, _, pruned, _, path, _ = self.cases['subclassed']
    loaded = keras.models.load_model(path)
    self.assertIsInstance(loaded, TwoLayers)
    self.assertAllClose(
      loaded.predict(X, verbose=0), pruned(tf.constant(X)), atol=1e-5
    )

  def test_summary_and_export(self):
    _, _, pruned, plain, _, _ = self.cases['functional']
    lines = []
    plain.summary(print_fn=lines.append)
    self.assertIn('Total params', '\n'.join(lines))
    export_dir = os.path.join(self.root, 'exported')
    plain.export(export_dir, verbose=False)
    loaded = tf.saved_model.load(export_dir)
    self.assertAllClose(
      loaded.serve(tf.constant(X)), pruned(tf.constant(X)), atol=1e-5
    )

  def test_not_keras_is_a_clear_error(self):
    module = tf.Module()
    module.w = tf.Variable(tf.random.normal([12, 4]))
    fn = tf.function(
      lambda x: tf.matmul(x, module.w),
      input_signature=[tf.TensorSpec([None, 12])],
    )
    pruned = graph_prune.apply_pruning(fn, HPARAMS)
    for value in (pruned, object()):
      with self.assertRaisesRegex(
        errors.KerasStripError, r'graph_prune\.strip .*export_saved_model'
      ):
        graph_prune.strip_keras(value)


def _tf_var(variable):
  value = getattr(variable, 'value', None)
  return value if isinstance(value, tf.Variable) else variable


if __name__ == '__main__':
  tf.test.main()
