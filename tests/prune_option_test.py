"""Tests of google-research's `prune_option` (masks/saliency.py).

The saliency g of a weight folds in its movement between calls of the mask
update, and masks rank |w| * g. Checked against NumPy: google-research's own
closed form (first order), three calls of the second order, masks of every
path (layer and global scope, units, blocks), the update on a call that does
not update masks, a checkpoint round trip, strip and export, and the
hparams string.
"""

import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import graph_prune
from graph_prune import errors
from graph_prune.config import hparams as hparams_lib
from graph_prune.config import hparams_rules
from graph_prune.export.strip_saved_model import strip_saved_model
from graph_prune.masks import criteria
from graph_prune.masks import saliency
from graph_prune.oneshot import api as oneshot_api
from graph_prune.passes import graph_ir


def _l2n(x):
  return x / np.sqrt(np.sum(x * x))


def _model(spec, shapes=((4, 6),), seed=0):
  """A chain of MatMuls over variables 'w<i>' of `shapes`, pruned by `spec`."""
  rng = np.random.RandomState(seed)
  variables = [
    tf.Variable(rng.standard_normal(s).astype(np.float32), name=f'w{i}')
    for i, s in enumerate(shapes)
  ]

  @tf.function(input_signature=[tf.TensorSpec([None, shapes[0][0]])])
  def fn(x):
    for v in variables:
      x = tf.nn.relu(tf.matmul(x, v))
    return x

  return graph_prune.apply_pruning(fn, spec), variables


def _state(pruned, i=0):
  w = pruned.pruned_weights[i]
  return {
    name: None if v is None else v.numpy()
    for name, v in w.saliency._asdict().items()
  }


class SaliencyMathTest(tf.test.TestCase, parameterized.TestCase):
  def test_first_order_closed_form(self):
    # google-research's test: one saliency update, then the old weight.
    w = np.linspace(1, 10, 10).astype(np.float32)
    zeros = np.zeros_like(w)
    new = saliency.Saliency(1, 0.5).update(w, saliency.State(zeros, zeros))
    self.assertAllClose(new.gradient, 0.5 * _l2n(w), rtol=1e-6)
    self.assertAllEqual(new.old_weight, w)
    self.assertIsNone(new.old_old_weight)

  @parameterized.named_parameters(('eager', False), ('tf_function', True))
  def test_first_order_through_the_model(self, traced):
    pruned, (v,) = _model(
      'prune_option=first_order_gradient,gradient_decay_rate=0.5',
      shapes=((2, 5),),
    )
    w = np.linspace(1, 10, 10).astype(np.float32).reshape(2, 5)
    v.assign(w)
    update = pruned.conditional_mask_update
    if traced:
      update = tf.function(update)
    update(tf.constant(0, tf.int64))
    state = _state(pruned)
    self.assertAllClose(state['gradient'], 0.5 * _l2n(w), rtol=1e-6)
    self.assertAllEqual(state['old_weight'], w)
    self.assertIsNone(state['old_old_weight'])
    self.assertEmpty(pruned.old_old_weights)

  def test_second_order_three_calls(self):
    pruned, (v,) = _model(
      'prune_option=second_order_gradient,gradient_decay_rate=0.7',
      shapes=((3, 4),),
    )
    rng = np.random.RandomState(3)
    d = 0.7
    g = np.zeros((3, 4))
    old = np.zeros((3, 4), np.float32)
    old_old = np.zeros((3, 4), np.float32)
    for step in range(3):
      w = rng.standard_normal((3, 4)).astype(np.float32)
      v.assign(w)
      pruned.conditional_mask_update(step)
      movement = np.abs(w.astype(np.float64) + old_old - 2.0 * old)
      g = d * g + (1 - d) * _l2n(movement)
      old_old, old = old, w
      state = _state(pruned)
      self.assertAllClose(state['gradient'], g, rtol=1e-5, atol=1e-7)
      self.assertAllEqual(state['old_weight'], old)
      self.assertAllEqual(state['old_old_weight'], old_old)

  def test_names_follow_the_naming_contract(self):
    pruned, _ = _model('prune_option=second_order_gradient')
    state = pruned.pruned_weights[0].saliency
    self.assertEqual(
      [graph_ir.variable_name(v) for v in state],
      ['w0/gradient', 'w0/old_weight', 'w0/old_old_weight'],
    )
    for v in state:
      self.assertFalse(v.trainable)

  def test_weight_option_keeps_no_saliency(self):
    pruned, _ = _model('')
    self.assertEmpty(pruned.saliency_variables())
    self.assertIsNone(pruned.pruned_weights[0].saliency)


def _numpy_keep(scores, prune):
  """Keeps all but the `prune` smallest of `scores` (no ties in the tests)."""
  flat = scores.ravel()
  keep = np.ones(flat.shape, np.float32)
  keep[np.argsort(flat, kind='stable')[:prune]] = 0
  return keep.reshape(scores.shape)


def _block_pool(scores, bh, bw):
  h, w = scores.shape
  return scores.reshape(h // bh, bh, w // bw, bw).mean(axis=(1, 3))


_BASE = (
  'gradient_decay_rate=1.0,initial_sparsity=0.5,target_sparsity=0.5,'
  'prune_option=first_order_gradient'
)


class MaskRankingTest(tf.test.TestCase, parameterized.TestCase):
  """Masks rank |w| * g: with decay 1 the update keeps g as set."""

  def _pruned_with_g(self, spec, shapes):
    pruned, variables = _model(f'{_BASE},{spec}' if spec else _BASE, shapes)
    rng = np.random.RandomState(7)
    ws, gs = [], []
    for w_var, state in zip(
      variables, [p.saliency for p in pruned.pruned_weights]
    ):
      g = np.exp(2.0 * rng.standard_normal(w_var.shape)).astype(np.float32)
      state.gradient.assign(g)
      ws.append(w_var.numpy())
      gs.append(g)
    pruned.mask_update(0)
    for g, state in zip(gs, [p.saliency for p in pruned.pruned_weights]):
      self.assertAllEqual(state.gradient.numpy(), g)  # decay 1: unchanged
    return pruned, ws, gs

  def test_layer_scope(self):
    pruned, (w,), (g,) = self._pruned_with_g('', [(4, 6)])
    expected = _numpy_keep(np.abs(w) * g, 12)
    self.assertNotAllEqual(expected, _numpy_keep(np.abs(w), 12))
    self.assertAllEqual(pruned.masks[0].numpy(), expected)

  def test_global_scope(self):
    pruned, ws, gs = self._pruned_with_g(
      'pruning_scope=global', [(4, 6), (6, 5)]
    )
    scores = np.concatenate([(np.abs(w) * g).ravel() for w, g in zip(ws, gs)])
    magnitudes = np.concatenate([np.abs(w).ravel() for w in ws])
    expected = _numpy_keep(scores, 27)
    self.assertNotAllEqual(expected, _numpy_keep(magnitudes, 27))
    got = np.concatenate([m.numpy().ravel() for m in pruned.masks])
    self.assertAllEqual(got, expected)

  def test_units(self):
    pruned, (w,), (g,) = self._pruned_with_g(
      'granularity=unit,unit_params=kernel', [(4, 6)]
    )
    norms = np.sqrt(np.sum((np.abs(w) * g) ** 2, axis=0))
    keep = _numpy_keep(norms, 3)
    self.assertNotAllEqual(keep, _numpy_keep(np.sqrt(np.sum(w**2, axis=0)), 3))
    expected = np.broadcast_to(keep, w.shape)
    self.assertAllEqual(pruned.masks[0].numpy(), expected)

  @parameterized.named_parameters(('avg', 'AVG'), ('max', 'MAX'))
  def test_blocks(self, pooling):
    pruned, (w,), (g,) = self._pruned_with_g(
      f'block_height=2,block_width=2,block_pooling_function={pooling}',
      [(4, 8)],
    )

    def pool(x):
      blocks = x.reshape(2, 2, 4, 2)
      return (
        blocks.mean(axis=(1, 3))
        if pooling == 'AVG'
        else (blocks.max(axis=(1, 3)))
      )

    keep = _numpy_keep(pool(np.abs(w) * g), 4)
    self.assertNotAllEqual(keep, _numpy_keep(pool(np.abs(w)), 4))
    expected = np.kron(keep, np.ones((2, 2), np.float32))
    self.assertAllEqual(pruned.masks[0].numpy(), expected)

  def test_criteria_rows(self):
    # Every choice is a gradual criterion or a one-shot method.
    self.assertEqual(
      set(hparams_rules.CHOICES['prune_option']),
      set(criteria.PRUNE_OPTIONS) | set(oneshot_api.ONE_SHOT_OPTIONS),
    )
    for option in ('first_order_gradient', 'second_order_gradient'):
      criterion = criteria.PRUNE_OPTIONS[option]
      self.assertIs(criteria.resolve(option), criterion)
      self.assertEqual(
        criterion.inputs, (criteria.CriterionInput(criteria.GRADIENT),)
      )
    self.assertIs(criteria.PRUNE_OPTIONS['weight'], criteria.MAGNITUDE)


class UpdateTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(('eager', False), ('tf_function', True))
  def test_non_updating_call_advances_the_saliency(self, traced):
    pruned, (v,) = _model(
      'prune_option=first_order_gradient,gradient_decay_rate=0.5,'
      'begin_pruning_step=100'
    )
    w = v.numpy()
    update = pruned.conditional_mask_update
    if traced:
      update = tf.function(update)
    self.assertFalse(bool(update(tf.constant(5, tf.int64))))
    self.assertAllEqual(pruned.masks[0].numpy(), np.ones_like(w))
    self.assertEqual(int(pruned.last_mask_update_step.numpy()), 0)
    self.assertAllClose(
      _state(pruned)['gradient'], 0.5 * _l2n(np.abs(w)), rtol=1e-6
    )
    self.assertAllEqual(_state(pruned)['old_weight'], w)

  @parameterized.named_parameters(
    ('mask_update', 'mask_update', 20),
    ('updating', 'conditional_mask_update', 20),
    ('not_updating', 'conditional_mask_update', 1),
  )
  def test_a_failed_update_changes_nothing(self, method, step):
    pruned, (v,) = _model('prune_option=second_order_gradient')
    pruned.conditional_mask_update(1)
    before = _state(pruned)
    bad = v.numpy()
    bad[0, 0] = np.nan
    v.assign(bad)
    with self.assertRaises(errors.NonFiniteWeightError):
      getattr(pruned, method)(step)
    after = _state(pruned)
    for key in before:
      self.assertAllEqual(after[key], before[key])

  def test_checkpoint_round_trip_resumes_exactly(self):
    spec = 'prune_option=second_order_gradient,gradient_decay_rate=0.6'
    pruned, (v,) = _model(spec, seed=1)
    for step in range(2):
      v.assign_add(tf.fill(v.shape, 0.25 * (step + 1)))
      pruned.conditional_mask_update(step)
    path = tf.train.Checkpoint(pruned=pruned).write(
      os.path.join(self.get_temp_dir(), 'ckpt')
    )
    restored, (v2,) = _model(spec, seed=2)
    tf.train.Checkpoint(pruned=restored).read(path).assert_consumed()
    self.assertAllEqual(v2.numpy(), v.numpy())
    for key, value in _state(pruned).items():
      self.assertAllEqual(_state(restored)[key], value)
    # Resumed: one more call gives the same state on both.
    v.assign_add(tf.fill(v.shape, 1.0))
    v2.assign(v)
    pruned.conditional_mask_update(20)
    restored.conditional_mask_update(20)
    for key, value in _state(pruned).items():
      self.assertAllEqual(_state(restored)[key], value)
    self.assertAllEqual(restored.masks[0].numpy(), pruned.masks[0].numpy())


class StripTest(tf.test.TestCase, parameterized.TestCase):
  def _trained(self, option):
    pruned, variables = _model(
      f'prune_option={option},initial_sparsity=0.5,target_sparsity=0.5',
      shapes=((4, 6), (6, 3)),
    )
    for step in range(3):
      for v in variables:
        v.assign_add(tf.fill(v.shape, 0.1 * step))
      pruned.conditional_mask_update(step)
    pruned.mask_update(5)
    self.assertLen(pruned.saliency_variables(), 4 if option[0] == 'f' else 6)
    return pruned

  @parameterized.named_parameters(
    ('first', 'first_order_gradient'), ('second', 'second_order_gradient')
  )
  def test_strip_and_export_leave_no_saliency(self, option):
    pruned = self._trained(option)
    x = tf.constant(
      np.random.RandomState(0).standard_normal((5, 4)), tf.float32
    )
    expected = pruned(x).numpy()
    stripped = graph_prune.strip(pruned)
    self.assertAllClose(stripped(x), expected, rtol=1e-6)
    suffixes = (
      graph_ir.GRADIENT_SUFFIX,
      graph_ir.OLD_WEIGHT_SUFFIX,
      graph_ir.OLD_OLD_WEIGHT_SUFFIX,
      graph_ir.MASK_SUFFIX,
    )
    for v in stripped.variables:
      self.assertFalse(graph_ir.variable_name(v).endswith(suffixes), v.name)
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'stripped')
      graph_prune.export_saved_model(pruned, path)
      loaded = tf.saved_model.load(path)
      self.assertAllClose(loaded(x), expected, rtol=1e-6)
      saved = {graph_ir.variable_name(v) for v in loaded.variables}
      self.assertFalse(any(n.endswith(suffixes) for n in saved), saved)
      # A SavedModel of the PrunedModel itself keeps the saliency (it is the
      # pruning state) and strip_saved_model drops it.
      full = os.path.join(tmp, 'pruned')
      tf.saved_model.save(pruned, full)
      names = {
        graph_ir.variable_name(v) for v in tf.saved_model.load(full).variables
      }
      self.assertIn('w0/gradient', names)
      out = os.path.join(tmp, 'out')
      strip_saved_model(full, out)
      reloaded = tf.saved_model.load(out)
      self.assertAllClose(
        reloaded.signatures['serving_default'](x)['output_0'],
        expected,
        rtol=1e-6,
      )
      names = {graph_ir.variable_name(v) for v in reloaded.variables}
      self.assertFalse(any(n.endswith(suffixes) for n in names), names)


class HParamsTest(tf.test.TestCase):
  def test_parses_google_research_string(self):
    h = hparams_lib.parse_hparams(
      'prune_option=first_order_gradient,gradient_decay_rate=0.5'
    )
    self.assertEqual(h.prune_option, 'first_order_gradient')
    self.assertEqual(h.gradient_decay_rate, 0.5)
    self.assertEqual(hparams_lib.parse_hparams(h.to_string()), h)
    default = hparams_lib.PruningHParams()
    self.assertEqual(default.prune_option, 'weight')
    self.assertEqual(default.gradient_decay_rate, 0.99)

  def test_rejects_unknown_option(self):
    with self.assertRaises(errors.HParamsError) as caught:
      hparams_lib.parse_hparams('prune_option=foo')
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    for word in (
      'foo',
      'weight',
      'first_order_gradient',
      'second_order_gradient',
    ):
      self.assertIn(word, message)

  def test_rejects_decay_out_of_range(self):
    for value in ('-0.1', '1.5'):
      with self.assertRaisesRegex(errors.HParamsError, 'gradient_decay_rate'):
        hparams_lib.parse_hparams(f'gradient_decay_rate={value}')


if __name__ == '__main__':
  tf.test.main()
