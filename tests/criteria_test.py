"""Tests of masks/criteria: every mask path ranks the criterion's scores.

The guard: test-only criteria whose scores are not |w| (a given signed score
tensor; |w| times a per-input vector, Wanda's shape) go through
`plans.compute_masks` down each path it takes (layer scope alone, its fast
path, blocks, units, N:M, the batched small weights, the per-shape traced
weights, global scope, coupled channel groups), and each mask must equal a
NumPy selection on that score. A path that kept ranking |w| fails, since
each case also checks that |w| would have chosen another mask.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from graph_prune import errors
from graph_prune.masks import batched_masks
from graph_prune.masks import criteria
from graph_prune.masks import masking
from graph_prune.masks import unit_groups as ug
from graph_prune.masks.mask_structure import MaskStructure
from graph_prune.model import plans as plans_lib

# Score = |given|, a tensor of the weight's shape unrelated to the weight.
GIVEN = criteria.Criterion(
  'given',
  lambda w, x: x['score'],
  inputs=(criteria.CriterionInput('score'),),
)
# Score = |w| * norm[j], j the input axis (-2): Wanda's form.
FEATURE_NORM = criteria.Criterion(
  'feature_norm',
  lambda w, x: w * x['norm'],
  inputs=(criteria.CriterionInput('norm', axis=-2),),
)

_ELEMENTWISE = MaskStructure()
_UNIT = MaskStructure(granularity='unit')


def _random(shape, seed, dtype=np.float32):
  return np.random.RandomState(seed).standard_normal(shape).astype(dtype)


def _plan(name, shape, structure=_ELEMENTWISE, scope='layer'):
  return plans_lib.WeightPlan(
    name=name,
    shape=tuple(shape),
    structure=structure,
    target_sparsity=0.5,
    scope=scope,
  )


# One case per path of `plans.compute_masks`: weights as (shape, dtype,
# structure, scope), and coupled groups over their indices.
_BLOCKS_AVG = MaskStructure(block_dims=(2, 3), pooling='AVG')
_BLOCKS_MAX = MaskStructure(block_dims=(2, 3), pooling='MAX')
_GROUP = ug.GroupPlan(
  members=(
    ug.MemberPlan(0, -1, tuple(range(6))),
    ug.MemberPlan(1, -1, (2, 3, 4, 5)),
    ug.MemberPlan(2, -2, tuple(range(6))),
  ),
  channels=6,
)
_CASES = {
  # float64 is never batched: masking.compute_mask, its elementwise fast
  # path, then its pooled path for blocks and units.
  'layer_fast_path': ([((12, 10), np.float64, _ELEMENTWISE, 'layer')], ()),
  'layer_blocks': ([((8, 9), np.float64, _BLOCKS_AVG, 'layer')], ()),
  'layer_units': ([((4, 5, 7), np.float64, _UNIT, 'layer')], ()),
  'm_by_n': (
    [((3, 3, 10, 4), np.float32, MaskStructure(m_by_n=(2, 4)), 'layer')],
    (),
  ),
  # batched_masks.compute_masks_together: all elementwise, then mixed.
  'batched_elementwise': (
    [
      ((12, 10), np.float32, _ELEMENTWISE, 'layer'),
      ((3, 3, 4, 8), np.float32, _ELEMENTWISE, 'layer'),
    ],
    (),
  ),
  'batched_mixed': (
    [
      ((12, 10), np.float32, _ELEMENTWISE, 'layer'),
      ((8, 9), np.float32, _BLOCKS_MAX, 'layer'),
      ((3, 3, 4, 8), np.float32, _UNIT, 'layer'),
    ],
    (),
  ),
  # batched_masks.ByShape: above the batched size; two weights of one shape
  # share one traced function under tf.function.
  'by_shape': (
    [
      ((300, 240), np.float32, _ELEMENTWISE, 'layer'),
      ((300, 240), np.float32, _ELEMENTWISE, 'layer'),
    ],
    (),
  ),
  'global': (
    [
      ((12, 10), np.float32, _ELEMENTWISE, 'global'),
      ((8, 9), np.float32, _BLOCKS_AVG, 'global'),
      ((6, 10), np.float64, _ELEMENTWISE, 'global'),
    ],
    (),
  ),
  'coupled_groups': (
    [
      ((3, 3, 2, 6), np.float32, _UNIT, 'layer'),
      ((5, 4), np.float32, _UNIT, 'layer'),
      ((3, 3, 6, 1), np.float32, _UNIT, 'layer'),
    ],
    (_GROUP,),
  ),
}


# NumPy references.


def _np_keep(flat, sparsity):
  """exact: prune the round(n * s) smallest (stable), keep at least one."""
  n = flat.size
  prune = n - max(1, int(np.round(n * (1.0 - sparsity))))
  keep = np.ones(n, bool)
  keep[np.argsort(flat, kind='stable')[:prune]] = False
  return keep


def _np_grid(score, structure):
  if structure.granularity == 'unit':
    return np.sqrt(np.sum(score.reshape(-1, score.shape[-1]) ** 2, axis=0))
  if structure.uses_blocks:
    bh, bw = structure.block_dims
    h, w = score.shape
    grid = np.zeros((-(-h // bh), -(-w // bw)))
    pool = np.max if structure.pooling == 'MAX' else np.mean
    for i in range(grid.shape[0]):
      for j in range(grid.shape[1]):
        grid[i, j] = pool(score[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw])
    return grid
  return score


def _np_expand(keep, structure, shape):
  if structure.granularity == 'unit':
    return np.broadcast_to(keep, shape)
  if structure.uses_blocks:
    bh, bw = structure.block_dims
    full = np.repeat(np.repeat(keep, bh, axis=0), bw, axis=1)
    return full[: shape[0], : shape[1]]
  return keep.reshape(shape)


def _np_m_by_n(score, n, m):
  moved = np.moveaxis(score, -2, -1)
  keep = np.zeros(moved.shape, bool)
  for index in np.ndindex(moved.shape[:-1]):
    for start in range(0, moved.shape[-1], m):
      group = moved[index][start : start + m]
      top = np.argsort(-group, kind='stable')[:n]
      keep[index + (start + top,)] = True
  return np.moveaxis(keep, -1, -2)


def _np_group_keep(scores, group, sparsity):
  total = np.zeros(group.channels)
  for m in group.members:
    s = scores[m.index]
    moved = np.moveaxis(s, m.axis, -1).reshape(-1, s.shape[m.axis])
    for position, channel in enumerate(m.channels):
      total[channel] += np.sum(moved[:, position] ** 2)
  return _np_keep(np.sqrt(total), sparsity)


def _np_masks(scores, weight_plans, sparsity, groups=()):
  """The masks `plans.compute_masks` should make from these scores."""
  masks = [None] * len(scores)
  for group in groups:
    keep = _np_group_keep(scores, group, sparsity)
    for m in group.members:
      shape = scores[m.index].shape
      view = [1] * len(shape)
      view[m.axis] = len(m.channels)
      masks[m.index] = np.broadcast_to(
        keep[list(m.channels)].reshape(view), shape
      )
  shared = []
  for i, (score, plan) in enumerate(zip(scores, weight_plans)):
    if masks[i] is not None:
      continue
    if plan.scope == 'global':
      shared.append(i)
    elif plan.structure.m_by_n is not None:
      masks[i] = _np_m_by_n(score, *plan.structure.m_by_n)
    else:
      grid = _np_grid(score, plan.structure)
      keep = _np_keep(grid.ravel(), sparsity).reshape(grid.shape)
      masks[i] = _np_expand(keep, plan.structure, score.shape)
  if shared:
    grids = [_np_grid(scores[i], weight_plans[i].structure) for i in shared]
    keep = _np_keep(np.concatenate([g.ravel() for g in grids]), sparsity)
    start = 0
    for i, grid in zip(shared, grids):
      part = keep[start : start + grid.size].reshape(grid.shape)
      start += grid.size
      masks[i] = _np_expand(part, weight_plans[i].structure, scores[i].shape)
  return [np.asarray(m, np.float32) for m in masks]


def _case(name):
  specs, groups = _CASES[name]
  weights = [
    _random(shape, seed=i, dtype=dtype)
    for i, (shape, dtype, _, _) in enumerate(specs)
  ]
  weight_plans = [
    _plan(f'w{i}', shape, structure, scope)
    for i, (shape, _, structure, scope) in enumerate(specs)
  ]
  return weights, weight_plans, groups


def _inputs_and_scores(criterion_name, weights):
  """Per weight, the criterion's inputs and the scores NumPy ranks."""
  if criterion_name == 'magnitude':
    return None, [np.abs(w) for w in weights]
  if criterion_name == 'given':
    given = [_random(w.shape, seed=100 + i) for i, w in enumerate(weights)]
    # Signed on purpose: the score is |given| (the criterion's contract).
    return [{'score': g} for g in given], [
      np.abs(g).astype(w.dtype) for g, w in zip(given, weights)
    ]
  norms = [
    np.abs(_random([w.shape[-2]], seed=200 + i)).astype(w.dtype) * 4.0
    for i, w in enumerate(weights)
  ]
  view = [
    np.reshape(n, [1] * (w.ndim - 2) + [-1, 1]) for n, w in zip(norms, weights)
  ]
  return [{'norm': n} for n in norms], [
    np.abs(w) * v for w, v in zip(weights, view)
  ]


_CRITERIA = {
  'magnitude': criteria.MAGNITUDE,
  'given': GIVEN,
  'feature_norm': FEATURE_NORM,
}


def _named_cases():
  for case in _CASES:
    for criterion in _CRITERIA:
      for traced in (False, True):
        mode = 'traced' if traced else 'eager'
        yield (f'{case}_{criterion}_{mode}', case, criterion, traced)


class EveryPathTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(*_named_cases())
  def test_masks_rank_the_criterion_scores(self, case, name, traced):
    weights, weight_plans, groups = _case(case)
    inputs, scores = _inputs_and_scores(name, weights)
    sparsity = 0.5

    def run(values, given):
      return plans_lib.compute_masks(
        values,
        [sparsity] * len(values),
        weight_plans,
        groups=groups,
        criterion=_CRITERIA[name],
        criterion_inputs=given,
      )[0]

    if traced:
      run = tf.function(run, autograph=False)
    masks = run(
      [tf.constant(w) for w in weights],
      None
      if inputs is None
      else [{k: tf.constant(v) for k, v in x.items()} for x in inputs],
    )
    expected = _np_masks(scores, weight_plans, sparsity, groups)
    for got, want in zip(masks, expected):
      self.assertAllEqual(np.asarray(got, np.float32), want)
    if name != 'magnitude':
      # The guard bites: ranking |w| would have made other masks.
      by_magnitude = _np_masks(
        [np.abs(w) for w in weights], weight_plans, sparsity, groups
      )
      self.assertFalse(
        all(np.array_equal(a, b) for a, b in zip(by_magnitude, expected))
      )


class MaskingEntryPointsTest(parameterized.TestCase, tf.test.TestCase):
  """masking's own functions take the criterion too (their default: |w|)."""

  def test_scores_and_m_by_n(self):
    w = _random((8, 9), seed=1)
    given = _random((8, 9), seed=2)
    got = masking.scores(w, _BLOCKS_AVG, GIVEN, {'score': given})
    self.assertAllClose(got, _np_grid(np.abs(given), _BLOCKS_AVG), rtol=1e-6)
    self.assertAllClose(
      masking.scores(w, _BLOCKS_AVG), _np_grid(np.abs(w), _BLOCKS_AVG)
    )
    mask = masking.m_by_n_mask(w, 2, 4, GIVEN, {'score': given})
    self.assertAllEqual(mask, _np_m_by_n(np.abs(given), 2, 4))
    self.assertAllEqual(
      masking.m_by_n_mask(w, 2, 4), _np_m_by_n(np.abs(w), 2, 4)
    )

  def test_magnitude_threshold_is_the_smallest_kept_score(self):
    w = _random((12, 10), seed=3)
    for compute in (
      lambda: masking.compute_mask(w, 0.5, _ELEMENTWISE),
      lambda: batched_masks.compute_masks_together([w], [0.5], [_ELEMENTWISE])[
        0
      ],
    ):
      mask, threshold = compute()
      keep = _np_keep(np.abs(w).ravel(), 0.5)
      self.assertAllEqual(np.ravel(mask), keep.astype(np.float32))
      self.assertEqual(float(threshold), np.abs(w).ravel()[keep].min())

  def test_criterion_threshold_is_in_score_units(self):
    w = _random((12, 10), seed=3)
    given = _random((12, 10), seed=4)
    _, threshold = masking.compute_mask(
      w, 0.5, _ELEMENTWISE, criterion=GIVEN, inputs={'score': given}
    )
    keep = _np_keep(np.abs(given).ravel(), 0.5)
    self.assertEqual(float(threshold), np.abs(given).ravel()[keep].min())

  def test_magnitude_by_name(self):
    w = _random((12, 10), seed=5)
    named, _ = masking.compute_mask(w, 0.3, _ELEMENTWISE, criterion='magnitude')
    default, _ = masking.compute_mask(w, 0.3, _ELEMENTWISE)
    self.assertAllEqual(named, default)
    self.assertAllEqual(
      np.ravel(default), _np_keep(np.abs(w).ravel(), 0.3).astype(np.float32)
    )


class ErrorsTest(parameterized.TestCase, tf.test.TestCase):
  def test_unknown_name_names_the_value_and_the_known_names(self):
    with self.assertRaises(criteria.UnknownCriterionError) as raised:
      criteria.resolve('first_order_gradeint')
    self.assertIsInstance(raised.exception, ValueError)
    self.assertIsInstance(raised.exception, errors.HParamsError)
    message = str(raised.exception)
    self.assertIn("'first_order_gradeint'", message)
    for known in criteria.NAMES:
      self.assertIn(known, message)

  def test_unknown_name_suggests_a_close_one(self):
    with self.assertRaisesRegex(
      criteria.UnknownCriterionError, "did you mean 'magnitude'"
    ):
      criteria.resolve('magnitde')

  def test_unknown_name_through_compute_masks(self):
    w = _random((12, 10), seed=0)
    with self.assertRaisesRegex(criteria.UnknownCriterionError, "'wanda'"):
      plans_lib.compute_masks(
        [w], [0.5], [_plan('w', w.shape)], criterion='wanda'
      )

  @parameterized.named_parameters(
    ('missing', None, "needs input 'score' for weight 'w'"),
    ('unknown', {'score': np.ones((12, 10)), 'x': 1.0}, "no input 'x'"),
    ('misshapen', {'score': np.ones((10, 12))}, 'has shape \\(10, 12\\)'),
  )
  def test_bad_inputs(self, given, message):
    w = _random((12, 10), seed=0)
    for plan in (_plan('w', w.shape), _plan('w', w.shape, _UNIT)):
      with self.assertRaisesRegex(criteria.CriterionInputError, message):
        plans_lib.compute_masks(
          [w], [0.5], [plan], criterion=GIVEN, criterion_inputs=[given]
        )

  def test_vector_input_on_a_missing_axis(self):
    with self.assertRaisesRegex(criteria.CriterionInputError, 'axis -2'):
      criteria.check_inputs(FEATURE_NORM, [5], {'norm': np.ones(5)}, 'bias')

  def test_magnitude_takes_no_inputs(self):
    with self.assertRaisesRegex(criteria.CriterionInputError, 'none'):
      criteria.scores(tf.ones([2, 2]), 'magnitude', {'score': tf.ones([2, 2])})


if __name__ == '__main__':
  tf.test.main()
