"""Attention heads and FFN units shrunk away from keras-hub backbones.

BERT, GPT-2, Gemma and Llama backbones (small configurations, random
weights) pruned with `granularity=unit,unit_groups=coupled` at 50% and
shrunk: every attention kernel loses the pruned heads along its heads axis
(query and output: half of the query heads; key and value: half of the
key/value heads, so grouped-query attention keeps its ratio), the
`[heads, head_dim]` biases with them, the FFN kernels lose the pruned units
(gated FFNs: gate and up columns, down rows), and the hidden size of the
residual stream stays. Each shrunk variable equals the masked weight with
the zero slices removed (NumPy), and the outputs equal the pruned model's.
"""

import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
from transformers_test import backbone_inputs  # tests/, beside this
from transformers_test import BACKBONES
from transformers_test import keras_hub
from transformers_test import SEQUENCE
from transformers_test import sequence_output

import graph_prune
from graph_prune import errors

SPEC = (
  'granularity=unit,unit_groups=coupled,begin_pruning_step=0,'
  'end_pruning_step=1,sparsity_function_end_step=1,'
  'do_not_prune=[embeddings,pooled_dense]'
)
HALF = 'target_sparsity=0.5,' + SPEC


def _tf_variable(v):
  return v if isinstance(v, tf.Variable) else v.value


def _name(v):
  return _tf_variable(v).name.split(':')[0]


def _axis(backbone, name):
  """The axis a variable loses slices along, or None if it keeps its shape."""
  parts = name.split('/')
  layer, weight = parts[-2], parts[-1]
  if layer in ('query', 'key', 'value'):
    if weight == 'bias':
      return 0
    return 0 if backbone == 'gemma' else 1
  if layer == 'attention_output' and weight == 'kernel':
    return 0
  if layer in _UP:
    return -1
  if layer in _DOWN and weight == 'kernel':
    return 0
  return None


# The FFNs' up (and gate) kernels lose columns, their down kernels rows.
_UP = (
  'feedforward_intermediate_dense',
  'feedforward_gate_dense',
  'ffw_gating',
  'ffw_gating_2',
)
_DOWN = {
  'feedforward_output_dense': 'feedforward_intermediate_dense',
  'ffw_linear': 'ffw_gating',
}


def _kept(masked, axis):
  """Which slices along `axis` hold a non-zero value."""
  moved = np.moveaxis(masked, axis, 0)
  return moved.reshape(moved.shape[0], -1).any(axis=1)


class ShrinkTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    if keras_hub is None:
      self.skipTest('keras-hub is not installed (pip install -e .[test])')

  def _pruned(self, name, spec=HALF):
    keras.utils.set_random_seed(0)
    model = BACKBONES[name]()
    pruned = graph_prune.apply_pruning(model, spec)
    pruned.mask_update(1)
    return model, pruned

  def _masked(self, model, pruned):
    """Variable name -> its value times its mask (ones when unmasked)."""
    masks = {_name(w): m.numpy() for w, m in zip(pruned.weights, pruned.masks)}
    for p in pruned.unit_params:
      masks[_name(p.weight)] = p.mask.numpy()
    return {
      _name(v): v.numpy() * masks.get(_name(v), 1.0)
      for v in model.variables
      if v.trainable
    }

  def check_shrunk(self, name, model, pruned, shrunk, halves=True):
    masked = self._masked(model, pruned)
    got = {_name(v): v.numpy() for v in shrunk.variables}
    self.assertEqual(set(got), set(masked) - self._unused(name))
    for key, value in got.items():
      axis = _axis(name, key)
      want = masked[key]
      if axis is not None:
        # A bias follows its kernel, the FFN's down rows its units.
        kernel = key.replace('/bias', '/kernel')
        for down, up in _DOWN.items():
          kernel = kernel.replace(f'/{down}/', f'/{up}/')
        kept = _kept(masked[kernel], _axis(name, kernel))
        if halves:
          self.assertEqual(kept.sum() * 2, kept.size, key)
        want = np.compress(kept, want, axis=axis)
      self.assertAllEqual(value, want, msg=key)
    x = backbone_inputs(name)
    self.assertAllClose(
      sequence_output(shrunk(x)), sequence_output(pruned(x)), atol=2e-6
    )

  def check_tflite(self, pruned, x, path):
    """The shrunk TFLite file agrees with `pruned` on `x` and holds 2 of 4
    heads per query kernel."""
    report = graph_prune.export_tflite(
      pruned, path, representative_data=x, shrink=True
    )
    self.assertLess(report.max_abs_diff, 1e-4)
    # The converter keeps each query kernel as [heads * head_dim, hidden]:
    # 2 heads of 4 left of 4, hidden 16.
    queries = [
      tuple(w[1]) for w in report.weights if 'query' in w[0] and len(w[1]) == 2
    ]
    self.assertEqual(queries, [(8, 16), (8, 16)])

  def _unused(self, name):
    # Llama's LM head is no part of the backbone's output.
    return {'token_embedding/reverse_embeddings'} if name == 'llama' else set()

  @parameterized.named_parameters(*[(n, n) for n in BACKBONES])
  def test_heads_and_units_removed(self, name):
    model, pruned = self._pruned(name)
    shrunk = graph_prune.shrink(pruned)
    self.check_shrunk(name, model, pruned, shrunk)
    main = shrunk.shrink_report.main
    removed = sum(v.numpy().size for v in model.variables if v.trainable) - sum(
      v.numpy().size for v in shrunk.variables
    )
    unused = sum(
      v.numpy().size for v in model.variables if _name(v) in self._unused(name)
    )
    self.assertEqual(main.params_before - main.params_after, removed - unused)
    self.assertIn('residual stream (16) stays', ' '.join(main.notes))

  def test_head_pruned_in_one_layer_and_not_another(self):
    spec = (
      'target_sparsity=0.0,'
      + SPEC
      + (',weight_sparsity_map=[transformer_layer_0/self_attention/.*:0.5]')
    )
    model, pruned = self._pruned('gpt2', spec)
    shrunk = graph_prune.shrink(pruned)
    self.check_shrunk('gpt2', model, pruned, shrunk, halves=False)
    heads = {
      _name(v): v.shape[1] for v in shrunk.variables if 'query/kernel' in v.name
    }
    self.assertEqual(
      heads,
      {
        'transformer_layer_0/self_attention/query/kernel': 2,
        'transformer_layer_1/self_attention/query/kernel': 4,
      },
    )

  @parameterized.named_parameters(('bert', 'bert'), ('llama', 'llama'))
  def test_saved_model_and_tflite(self, name):
    _, pruned = self._pruned(name)
    x = backbone_inputs(name)
    want = sequence_output(pruned(x))
    path = os.path.join(self.get_temp_dir(), name)
    graph_prune.export_saved_model(pruned, path, shrink=True)
    loaded = tf.saved_model.load(path)
    self.assertAllClose(sequence_output(loaded(x)), want, atol=2e-6)
    queries = [v for v in loaded.variables if v.name.endswith('query/kernel:0')]
    self.assertLen(queries, 2)
    for v in queries:
      self.assertEqual(v.shape[1], 2)
    tflite = os.path.join(self.get_temp_dir(), f'{name}.tflite')
    if name == 'llama':
      # TFLite's builtins lack Llama's causal-mask StridedSlice over an open
      # sequence length: one line saying what to do, and no file.
      with self.assertRaisesRegex(
        errors.TFLiteExportError,
        r"'tf.StridedSlice' op is neither a custom op nor a flex op\): "
        r'TFLite has no builtin op for it as traced. Give the signature '
        r'fixed shapes[^\n]*$',
      ):
        graph_prune.export_tflite(pruned, tflite, shrink=True)
      self.assertFalse(os.path.exists(tflite))
      return
    self.check_tflite(pruned, x, tflite)

  @parameterized.named_parameters(
    ('bert', 'bert'), ('llama', 'llama'), ('gemma', 'gemma')
  )
  def test_fixed_sequence_length(self, name):
    # With a fixed signature Keras lowers the attention's einsums to
    # reshapes and BatchMatMulV2 (Gemma's after a transpose of the kernel);
    # the heads are followed through them. BERT's and Llama's are removed
    # (Llama's k/v repeat computes its reshape's shape from constants: a new
    # constant shape) and TFLite takes the shrunk model; Gemma's rotary
    # embedding reshapes its heads from a shape the stripped graph does not
    # know, so shrink keeps them and says so.
    keras.utils.set_random_seed(0)
    model = BACKBONES[name]()
    keys = ('token_ids', 'padding_mask')
    if name == 'bert':
      keys += ('segment_ids',)
    spec = {
      key: tf.TensorSpec([2, SEQUENCE], tf.int32, name=key) for key in keys
    }
    pruned = graph_prune.apply_pruning(model, HALF, input_signature=[spec])
    pruned.mask_update(tf.constant(1, tf.int64))
    x = backbone_inputs(name)
    if name == 'gemma':
      masked = self._masked(model, pruned)
      for key, value in masked.items():
        if key.endswith('query/kernel'):  # [heads, hidden, head_dim]
          self.assertEqual((~value.any(axis=(1, 2))).sum(), 2, key)
      shrunk = graph_prune.shrink(pruned)
      self.assertIn('rotary_embedding', shrunk.shrink_report.to_text())
      self.assertAllClose(
        sequence_output(shrunk(x)), sequence_output(pruned(x)), atol=2e-6
      )
      return
    shrunk = graph_prune.shrink(pruned)
    self.check_shrunk(name, model, pruned, shrunk)
    tflite = os.path.join(self.get_temp_dir(), f'{name}_fixed.tflite')
    self.check_tflite(pruned, x, tflite)


if __name__ == '__main__':
  tf.test.main()
