"""keras-hub transformer backbones, weight pruning end to end.

BERT, GPT-2, Gemma and Llama backbones in small configurations, built from a
config with random weights (nothing downloaded): `apply_pruning` masks the
embeddings and every attention and feed-forward kernel (the attention
EinsumDense kernels of rank 3 included); three training steps with
`conditional_mask_update` reach the target in every mask and leave the
pruned positions' effective weights zero; the pruned model's outputs equal
the original model's with each weight set to `weight * mask` in NumPy; the
exported SavedModel reloads with the same outputs.
"""

import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import graph_prune

try:
  import keras_hub  # pylint: disable=g-import-not-at-top
except ImportError:  # the test extra is not installed
  keras_hub = None

TARGET = 0.5
HPARAMS = (
  f'target_sparsity={TARGET},begin_pruning_step=0,end_pruning_step=2,'
  'sparsity_function_end_step=2,pruning_frequency=1'
)
VOCABULARY = 50
SEQUENCE = 8


# BERT and GPT-2 take the same configuration.
_ENCODER = dict(
  vocabulary_size=VOCABULARY,
  num_layers=2,
  num_heads=4,
  hidden_dim=16,
  intermediate_dim=32,
  max_sequence_length=SEQUENCE,
)


def bert():
  return keras_hub.models.BertBackbone(**_ENCODER)


def gpt2():
  return keras_hub.models.GPT2Backbone(**_ENCODER)


def gemma():
  return keras_hub.models.GemmaBackbone(
    vocabulary_size=VOCABULARY,
    num_layers=2,
    num_query_heads=4,
    num_key_value_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
    head_dim=4,
  )


def llama():
  return keras_hub.models.LlamaBackbone(
    vocabulary_size=VOCABULARY,
    num_layers=2,
    num_query_heads=4,
    num_key_value_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
  )


BACKBONES = {'bert': bert, 'gpt2': gpt2, 'gemma': gemma, 'llama': llama}


def backbone_inputs(name, batch=2, seed=1):
  """Token ids, a padding mask with padding at the end of the second row,
  and BERT's segment ids."""
  rs = np.random.RandomState(seed)
  padding = np.ones((batch, SEQUENCE), np.int32)
  padding[1:, SEQUENCE - 2 :] = 0
  inputs = {
    'token_ids': tf.constant(
      rs.randint(0, VOCABULARY, (batch, SEQUENCE)).astype(np.int32)
    ),
    'padding_mask': tf.constant(padding),
  }
  if name == 'bert':
    segments = np.zeros((batch, SEQUENCE), np.int32)
    segments[:, SEQUENCE // 2 :] = 1
    inputs['segment_ids'] = tf.constant(segments)
  return inputs


def sequence_output(outputs):
  """BERT returns a dict; the others the sequence output itself."""
  if isinstance(outputs, dict):
    return outputs['sequence_output']
  return outputs


def tf_variable(v):
  """The `tf.Variable` behind a Keras 3 variable."""
  return v if isinstance(v, tf.Variable) else v.value


@parameterized.named_parameters(*[(n, n) for n in BACKBONES])
class WeightPruningTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    if keras_hub is None:
      self.skipTest('keras-hub is not installed (pip install -e .[test])')

  def test_prune_train_export(self, name):
    keras.utils.set_random_seed(0)
    model = BACKBONES[name]()
    pruned = graph_prune.apply_pruning(model, HPARAMS)
    x = backbone_inputs(name)
    # Every attention and feed-forward kernel is masked.
    masked = {w.name.split(':')[0] for w in pruned.weights}
    kernels = {
      tf_variable(v).name.split(':')[0]
      for v in model.trainable_variables
      if v.path.endswith('kernel')
    }
    # Per layer: q, k, v, output and two (gated: three) FFN kernels; BERT's
    # pooler.
    self.assertLen(kernels, {'bert': 13, 'gpt2': 12}.get(name, 14))
    self.assertContainsSubset(kernels, masked)

    variables = list(model.trainable_variables)
    optimizer = keras.optimizers.SGD(0.05)
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def train_step(x):
      with tf.GradientTape() as tape:
        outputs = tf.nest.flatten(pruned(x, training=True))
        loss = tf.add_n([tf.reduce_mean(tf.square(o)) for o in outputs])
      grads = tape.gradient(loss, variables)
      # Llama's reverse embedding (the LM head) is not used by the backbone.
      optimizer.apply_gradients(
        (g, v) for g, v in zip(grads, variables) if g is not None
      )
      pruned.conditional_mask_update(step)
      step.assign_add(1)

    for _ in range(3):
      train_step(x)
    for w, m in zip(pruned.weights, pruned.masks):
      mask = m.numpy()
      self.assertAllClose(
        1.0 - mask.mean(), TARGET, atol=1.0 / mask.size + 1e-6, msg=w.name
      )
      self.assertEqual(np.count_nonzero(w.numpy() * mask * (mask == 0)), 0)

    y = sequence_output(pruned(x))
    self.assertAllClose(y, self.reference_output(model, pruned, x), atol=1e-5)
    path = os.path.join(self.get_temp_dir(), name)
    graph_prune.export_saved_model(pruned, path)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(sequence_output(loaded(x)), y, atol=1e-5)

  def reference_output(self, model, pruned, x):
    """The original model's output at weight * mask (NumPy), restored after."""
    saved = [w.numpy() for w in pruned.weights]
    try:
      for w, m in zip(pruned.weights, pruned.masks):
        w.assign(w.numpy() * m.numpy())
      return sequence_output(model(x, training=False)).numpy()
    finally:
      for w, s in zip(pruned.weights, saved):
        w.assign(s)


if __name__ == '__main__':
  tf.test.main()
