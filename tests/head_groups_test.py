"""Attention heads as coupled groups (`passes/head_groups.py`), training side.

With `granularity=unit,unit_groups=coupled`, each attention layer of the
keras-hub backbones (small configurations, random weights) is one group:
its query, key and value kernels along the heads axis and its output kernel
along axis 0; under grouped-query attention a channel is a key/value head
with the query heads that share it. The mask update zeroes whole heads:
the pruned heads are the lowest by the group score computed here in NumPy
from the kernels' slices, and every member's mask is zero exactly on their
slices.
"""

from absl import logging
from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf
from transformers_test import BACKBONES  # tests/, beside this
from transformers_test import keras_hub

import graph_prune

SPEC = (
  'target_sparsity=0.5,granularity=unit,unit_groups=coupled,'
  'begin_pruning_step=0,end_pruning_step=1,sparsity_function_end_step=1,'
  'do_not_prune=[embeddings,pooled_dense]'
)
KERAS_SPEC = (
  'target_sparsity=0.5,granularity=unit,unit_groups=coupled,'
  'begin_pruning_step=0,end_pruning_step=1,sparsity_function_end_step=1,'
  'do_not_prune=[logits]'
)
# Query and key/value heads of the small configurations.
HEADS = {'bert': (4, 4), 'gpt2': (4, 4), 'gemma': (4, 2), 'llama': (4, 2)}
LAYERS = 2
# Backbone name -> (model, pruned), built once for the tests that read them.
_BUILT = {}


def _role(name):
  """'query', 'key', 'value' or 'attention_output' of a kernel name."""
  return name.split(':')[0].split('/')[-2]


def _heads_axis(backbone, role):
  """The heads axis of an attention kernel (Gemma puts it first)."""
  if role == 'attention_output' or backbone == 'gemma':
    return 0
  return 1


def _head_groups(pruned):
  """Per attention group: {role: (weight index, member)}."""
  names = pruned.weight_names
  found = []
  for group in pruned.unit_groups:
    roles = {_role(names[m.index]): (m.index, m) for m in group.members}
    if 'attention_output' in roles:
      found.append((group, roles))
  return found


def _slices_sq(kernel, axis):
  """Sum of squares of each slice along `axis`."""
  moved = np.moveaxis(np.asarray(kernel, np.float64), axis, 0)
  return (moved.reshape(moved.shape[0], -1) ** 2).sum(axis=1)


class HeadGroupsTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    if keras_hub is None:
      self.skipTest('keras-hub is not installed (pip install -e .[test])')

  def _build(self, name, scale=None):
    if scale is None and name in _BUILT:
      return _BUILT[name]
    keras.utils.set_random_seed(0)
    model = BACKBONES[name]()
    if scale is not None:
      scale(model)
    built = model, graph_prune.apply_pruning(model, SPEC)
    if scale is None:
      _BUILT[name] = built
    return built

  @parameterized.named_parameters(*[(n, n) for n in BACKBONES])
  def test_one_group_per_layer_with_the_gqa_ratio(self, name):
    _, pruned = self._build(name)
    groups = _head_groups(pruned)
    self.assertLen(groups, LAYERS)
    queries, kv = HEADS[name]
    rank = 3
    for group, roles in groups:
      self.assertEqual(
        sorted(roles), ['attention_output', 'key', 'query', 'value']
      )
      self.assertEqual(group.channels, kv)
      for role, (_, member) in roles.items():
        self.assertEqual(member.axis % rank, _heads_axis(name, role))
      # Query head h reads key/value head h // (queries // kv).
      expected = tuple(h // (queries // kv) for h in range(queries))
      self.assertEqual(roles['query'][1].channels, expected)
      self.assertEqual(roles['attention_output'][1].channels, expected)
      self.assertEqual(roles['key'][1].channels, tuple(range(kv)))
      self.assertEqual(roles['value'][1].channels, tuple(range(kv)))

  @parameterized.named_parameters(*[(n, n) for n in BACKBONES])
  def test_update_zeroes_the_lowest_heads(self, name):
    _, pruned = self._build(name)
    pruned.mask_update(1)
    weights = [w.numpy() for w in pruned.weights]
    masks = [m.numpy() for m in pruned.masks]
    for group, roles in _head_groups(pruned):
      score = np.zeros(group.channels)
      for role, (index, member) in roles.items():
        sq = _slices_sq(weights[index], _heads_axis(name, role))
        np.add.at(score, list(member.channels), sq)
      pruned_heads = set(
        np.argsort(score, kind='stable')[: group.channels // 2]
      )
      for role, (index, member) in roles.items():
        axis = _heads_axis(name, role)
        moved = np.moveaxis(masks[index], axis, 0)
        for position, channel in enumerate(member.channels):
          want = 0.0 if channel in pruned_heads else 1.0
          self.assertAllEqual(
            moved[position], np.full_like(moved[position], want)
          )

  @parameterized.named_parameters(('bert', 'bert'), ('gpt2', 'gpt2'))
  def test_biases_are_masked_with_their_heads(self, name):
    _, pruned = self._build(name)
    pruned.mask_update(1)
    names = pruned.weight_names
    kernels = {n.split(':')[0]: m.numpy() for n, m in zip(names, pruned.masks)}
    biases = {p.name: p.mask.numpy() for p in pruned.unit_params}
    heads = [k for k in kernels if _role(k) in ('query', 'key', 'value')]
    self.assertLen(heads, 3 * LAYERS)
    for kernel in heads:
      bias = biases[kernel.replace('/kernel', '/bias')]
      # Head h of the bias [heads, head_dim] goes with the kernel's [:, h, :].
      kept = kernels[kernel].max(axis=(0, 2))
      self.assertAllEqual(bias, np.broadcast_to(kept[:, None], bias.shape))
      self.assertEqual(kept.sum() * 2, kept.size)

  def test_head_pruned_in_one_layer_and_not_another(self):
    # Head 0 is small in layer 0 and large in layer 1.
    def scale(model):
      for layer, factor in ((0, 0.01), (1, 100.0)):
        for v in model.trainable_variables:
          path = v.path
          if f'layer_{layer}/' not in path or 'attention' not in path:
            continue
          if not path.endswith('kernel'):
            continue
          axis = _heads_axis('bert', _role(path))
          value = np.moveaxis(v.numpy(), axis, 0)
          value[0] *= factor
          v.assign(np.moveaxis(value, 0, axis))

    _, pruned = self._build('bert', scale)
    pruned.mask_update(1)
    names = pruned.weight_names
    masks = {
      _role(n) + n.split('/')[0]: m.numpy() for n, m in zip(names, pruned.masks)
    }
    out0 = masks['attention_outputtransformer_layer_0']
    out1 = masks['attention_outputtransformer_layer_1']
    self.assertEqual(out0[0].max(), 0.0)
    self.assertEqual(out1[0].min(), 1.0)
    self.assertEqual(out0.mean(), 0.5)
    self.assertEqual(out1.mean(), 0.5)


class KerasAttentionTest(tf.test.TestCase, parameterized.TestCase):
  """A Keras MultiHeadAttention is one head group whether its sequence
  length is open (einsums) or fixed (Keras lowers the projections to
  Reshape + BatchMatMulV2); a rank-3 projection whose heads reach no output
  kernel is named in a warning."""

  @parameterized.named_parameters(('static', 5), ('open', None))
  def test_one_group_of_heads(self, sequence):
    x = keras.Input((sequence, 12))
    h = keras.layers.MultiHeadAttention(num_heads=4, key_dim=3, name='mha')(
      x, x
    )
    model = keras.Model(x, keras.layers.Dense(2, name='logits')(h))
    with self.assertLogs(level='WARNING') as logs:
      logging.warning('(so that the block logs at least once)')
      pruned = graph_prune.apply_pruning(model, KERAS_SPEC)
    self.assertNotIn('found no attention heads', '\n'.join(logs.output))
    names = pruned.weight_names
    groups = [
      sorted(names[m.index] for m in g.members) for g in pruned.unit_groups
    ]
    kernels = [f'mha/{n}/kernel' for n in ('query', 'key', 'value')]
    self.assertIn(sorted(kernels + ['mha/attention_output/kernel']), groups)
    pruned.mask_update(tf.constant(1, tf.int64))
    # Two whole heads of four zero in every member (NumPy on the masks).
    by_name = {names[i]: w for i, w in enumerate(pruned.pruned_weights)}
    query = by_name['mha/query/kernel'].mask.numpy()  # [12, heads, 3]
    zero = ~query.any(axis=(0, 2))
    self.assertEqual(zero.sum(), 2)
    output = by_name['mha/attention_output/kernel'].mask.numpy()
    self.assertAllEqual(~output.any(axis=(1, 2)), zero)

  def test_heads_that_reach_no_output_kernel_are_named(self):
    x = keras.Input((None, 12))
    heads = keras.layers.EinsumDense(
      'abc,cde->abde', output_shape=(None, 4, 3), name='heads'
    )(x)
    flat = keras.layers.Reshape((-1, 12))(heads)
    model = keras.Model(x, keras.layers.Dense(2, name='logits')(flat))
    with self.assertLogs(level='WARNING') as logs:
      graph_prune.apply_pruning(model, KERAS_SPEC)
    text = '\n'.join(logs.output)
    self.assertRegex(text, 'found no attention heads for heads/kernel;')
    self.assertIn('keras.Input((None, features))', text)

  def test_unit_pruned_embeddings_are_named(self):
    if keras_hub is None:
      self.skipTest('keras-hub is not installed (pip install -e .[test])')
    model = BACKBONES['gpt2']()
    hparams = SPEC.replace('do_not_prune=[embeddings,pooled_dense]', '')
    with self.assertLogs(level='WARNING') as logs:
      graph_prune.apply_pruning(model, hparams.rstrip(','))
    text = '\n'.join(logs.output)
    self.assertRegex(
      text,
      r'token_embedding/embeddings unit-pruned along the hidden size of a '
      r'transformer.*do_not_prune=\[embeddings\]',
    )
    with self.assertLogs(level='WARNING') as logs:
      logging.warning('(so that the block logs at least once)')
      graph_prune.apply_pruning(BACKBONES['gpt2'](), SPEC)
    self.assertNotIn(
      'unit-pruned along the hidden size', '\n'.join(logs.output)
    )


if __name__ == '__main__':
  tf.test.main()
