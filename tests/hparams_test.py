"""Tests of config/hparams: contrib's grammar, defaults, rules, errors."""

import contextlib
import dataclasses
import string

from absl.testing import parameterized
import hypothesis
from hypothesis import strategies as st
import tensorflow as tf

from graph_prune import errors
from graph_prune.config import hparams as hparams_lib
from graph_prune.config.hparams import parse_hparams
from graph_prune.config.hparams import PruningHParams

# contrib r1.15 get_pruning_hparams(), written out independently.
_CONTRIB_DEFAULTS = {
  'name': 'model_pruning',
  'begin_pruning_step': 0,
  'end_pruning_step': -1,
  'threshold_decay': 0.0,
  'pruning_frequency': 10,
  'nbins': 256,
  'block_height': 1,
  'block_width': 1,
  'block_pooling_function': 'AVG',
  'initial_sparsity': 0.0,
  'target_sparsity': 0.5,
  'sparsity_function_begin_step': 0,
  'sparsity_function_end_step': 100,
  'sparsity_function_exponent': 3.0,
  'use_tpu': False,
}


class DefaultsTest(tf.test.TestCase):
  def test_contrib_defaults_and_types(self):
    h = PruningHParams()
    for name, value in _CONTRIB_DEFAULTS.items():
      self.assertEqual(getattr(h, name), value, name)
      self.assertIs(type(getattr(h, name)), type(value), name)
    # contrib's [''] maps mean "no entry".
    self.assertEqual(h.weight_sparsity_map, ())
    self.assertEqual(h.block_dims_map, ())

  def test_new_hparams_default_to_contrib_behaviour(self):
    h = PruningHParams()
    self.assertEqual(h.do_not_prune, ())
    self.assertEqual(h.pruning_scope, 'layer')
    self.assertEqual(h.granularity, 'weight')
    self.assertIsNone(h.sparsity_m_by_n)
    self.assertEqual(h.threshold_method, 'exact')

  def test_empty_spec_gives_defaults(self):
    self.assertEqual(parse_hparams(''), PruningHParams())
    self.assertEqual(parse_hparams('  '), PruningHParams())


class ParseTest(parameterized.TestCase, tf.test.TestCase):
  def test_cifar10_contrib_spec_parses_unchanged(self):
    h = parse_hparams(
      'name=cifar10_pruning,begin_pruning_step=10000,'
      'end_pruning_step=100000,target_sparsity=0.9,'
      'sparsity_function_begin_step=10000,'
      'sparsity_function_end_step=100000'
    )
    self.assertEqual(h.name, 'cifar10_pruning')
    self.assertEqual(h.begin_pruning_step, 10000)
    self.assertEqual(h.end_pruning_step, 100000)
    self.assertEqual(h.target_sparsity, 0.9)
    self.assertEqual(h.sparsity_function_begin_step, 10000)
    self.assertEqual(h.sparsity_function_end_step, 100000)
    self.assertEqual(h.pruning_frequency, 10)

  def test_lists_and_maps(self):
    h = parse_hparams(
      'weight_sparsity_map=[layer1:0.6,layer2/weights:0.75,.*kernel:0.6],'
      'block_dims_map=[dense1:4x4,dense2:1x-1],do_not_prune=[bias,emb]'
    )
    self.assertEqual(
      h.weight_sparsity_map,
      ('layer1:0.6', 'layer2/weights:0.75', '.*kernel:0.6'),
    )
    self.assertEqual(h.block_dims_map, ('dense1:4x4', 'dense2:1x-1'))
    self.assertEqual(h.do_not_prune, ('bias', 'emb'))

  def test_regexes_with_brackets_commas_and_colons(self):
    h = parse_hparams(
      r'weight_sparsity_map=[conv[0-9]{1,2}/kernel:0.8,(?:a|b)\,c:0.3],'
      'target_sparsity=0.7'
    )
    self.assertEqual(
      h.weight_sparsity_map, ('conv[0-9]{1,2}/kernel:0.8', r'(?:a|b)\,c:0.3')
    )
    self.assertEqual(h.weight_settings('conv12/kernel').target_sparsity, 0.8)
    self.assertEqual(h.weight_settings('b,c').target_sparsity, 0.3)
    self.assertEqual(h.target_sparsity, 0.7)

  def test_whitespace_and_int_for_float(self):
    h = parse_hparams(' target_sparsity = 1e-1 , threshold_decay=0 ')
    self.assertEqual(h.target_sparsity, 0.1)
    self.assertEqual(h.threshold_decay, 0.0)
    self.assertIsInstance(h.threshold_decay, float)

  @parameterized.named_parameters(
    ('lower_true', 'true', True),
    ('title_true', 'True', True),
    ('one', '1', True),
    ('lower_false', 'false', False),
    ('title_false', 'False', False),
    ('zero', '0', False),
  )
  def test_bools(self, text, value):
    self.assertIs(parse_hparams(f'use_tpu={text}').use_tpu, value)

  def test_new_hparams(self):
    h = parse_hparams(
      'pruning_scope=global,granularity=unit,'
      'threshold_method=histogram,nbins=512'
    )
    self.assertEqual(
      (h.pruning_scope, h.granularity, h.threshold_method, h.nbins),
      ('global', 'unit', 'histogram', 512),
    )
    self.assertEqual(
      parse_hparams('sparsity_m_by_n=2:4').sparsity_m_by_n, (2, 4)
    )
    self.assertIsNone(parse_hparams('sparsity_m_by_n=').sparsity_m_by_n)

  def test_base_is_overridden_not_mutated(self):
    base = parse_hparams('target_sparsity=0.8,pruning_frequency=5')
    h = parse_hparams('pruning_frequency=7', base=base)
    self.assertEqual((h.target_sparsity, h.pruning_frequency), (0.8, 7))
    self.assertEqual(base.pruning_frequency, 5)

  def test_frozen(self):
    with self.assertRaises(dataclasses.FrozenInstanceError):
      PruningHParams().target_sparsity = 0.9

  def test_round_trip_examples(self):
    for spec in [
      '',
      'target_sparsity=0.9,weight_sparsity_map=[a:0.1]',
      r'do_not_prune=[x\]y,(a|b)],sparsity_m_by_n=1:8',
      'block_dims_map=[d:2x2],name=a/b-c.d',
    ]:
      h = parse_hparams(spec)
      self.assertEqual(parse_hparams(h.to_string()), h)
      self.assertEqual(parse_hparams(h.to_string(only_changed=True)), h)

  def test_to_string_only_changed(self):
    self.assertEqual(PruningHParams().to_string(only_changed=True), '')
    self.assertEqual(
      PruningHParams(target_sparsity=0.9).to_string(only_changed=True),
      'target_sparsity=0.9',
    )

  def test_python_construction_normalizes(self):
    h = PruningHParams(
      do_not_prune=['bias', ''], sparsity_m_by_n='2:4', target_sparsity=1 - 1
    )
    self.assertEqual(h.do_not_prune, ('bias',))
    self.assertEqual(h.sparsity_m_by_n, (2, 4))
    self.assertIsInstance(h.target_sparsity, float)


class WeightSettingsTest(tf.test.TestCase):
  def test_maps_resolve_per_weight(self):
    h = parse_hparams(
      'target_sparsity=0.5,block_height=2,block_width=2,'
      'weight_sparsity_map=[layer1:0.6,layer2/weights:0.75],'
      'block_dims_map=[layer2:1x4]'
    )
    s1 = h.weight_settings('layer1/weights')
    s2 = h.weight_settings('layer2/weights')
    s3 = h.weight_settings('layer3/weights')
    self.assertEqual(
      (s1.target_sparsity, s1.block_dims, s1.has_own_target),
      (0.6, (2, 2), True),
    )
    self.assertEqual((s2.target_sparsity, s2.block_dims), (0.75, (1, 4)))
    self.assertEqual(
      (s3.target_sparsity, s3.block_dims, s3.has_own_target),
      (0.5, (2, 2), False),
    )

  def test_two_entries_matching_one_weight_is_an_error(self):
    h = parse_hparams('weight_sparsity_map=[layer1:0.6,.*weights:0.7]')
    with self.assertRaisesRegex(
      errors.WeightMatchError, r"'layer1/weights' is matched by 2"
    ):
      h.weight_settings('layer1/weights')
    self.assertEqual(h.weight_settings('layer2/weights').target_sparsity, 0.7)

  def test_unmatched_entries(self):
    h = parse_hparams(
      'weight_sparsity_map=[conv:0.6,dense:0.7],block_dims_map=[lstm:2x2]'
    )
    self.assertEqual(
      h.unmatched_map_entries(['dense/kernel']), ('conv:0.6', 'lstm:2x2')
    )


class ErrorTest(parameterized.TestCase, tf.test.TestCase):
  @parameterized.named_parameters(
    (
      'unknown',
      'target_sparsty=0.9',
      errors.UnknownHParamError,
      r"Unknown hparam 'target_sparsty'.*did you mean 'target_sparsity'\?",
    ),
    (
      'unknown_far',
      'zzz=1',
      errors.UnknownHParamError,
      r"Unknown hparam 'zzz'.*known hparams are",
    ),
    (
      'float_for_int',
      'begin_pruning_step=1.5',
      errors.HParamTypeError,
      r"'begin_pruning_step' takes an int, got '1.5'",
    ),
    (
      'text_for_float',
      'target_sparsity=high',
      errors.HParamTypeError,
      r"'target_sparsity' takes a float, got 'high'",
    ),
    (
      'bad_bool',
      'use_tpu=yes',
      errors.HParamTypeError,
      r"'use_tpu' takes a bool",
    ),
    (
      'list_for_scalar',
      'nbins=[1,2]',
      errors.HParamTypeError,
      r"'nbins' takes a single int",
    ),
    (
      'twice',
      'nbins=3,nbins=4',
      errors.HParamSyntaxError,
      r"'nbins' is given twice",
    ),
    (
      'no_equals',
      'target_sparsity',
      errors.HParamSyntaxError,
      r"Malformed clause 'target_sparsity'",
    ),
    (
      'unbalanced',
      'do_not_prune=[a,b',
      errors.HParamSyntaxError,
      r"Unbalanced brackets.*'do_not_prune'",
    ),
    ('trailing_comma', 'nbins=3,', errors.HParamSyntaxError, r'Trailing comma'),
    (
      'junk_after_list',
      'do_not_prune=[a]x',
      errors.HParamSyntaxError,
      r'Expected ","',
    ),
    (
      'sparsity_high',
      'target_sparsity=1.0',
      errors.HParamValueError,
      r'target_sparsity=1.0 is invalid: it must be in \[0, 1\)',
    ),
    (
      'sparsity_negative',
      'initial_sparsity=-0.1',
      errors.HParamValueError,
      r'initial_sparsity=-0.1 is invalid',
    ),
    (
      'nan',
      'threshold_decay=nan',
      errors.HParamValueError,
      r'threshold_decay=nan is invalid',
    ),
    (
      'inf_exponent',
      'sparsity_function_exponent=inf',
      errors.HParamValueError,
      r'finite',
    ),
    (
      'decay',
      'threshold_decay=1',
      errors.HParamValueError,
      r'threshold_decay=1.0 is invalid',
    ),
    (
      'frequency',
      'pruning_frequency=0',
      errors.HParamValueError,
      r'pruning_frequency=0 is invalid: it must be >= 1',
    ),
    (
      'begin',
      'begin_pruning_step=-1',
      errors.HParamValueError,
      r'begin_pruning_step=-1',
    ),
    (
      'end_before_begin',
      'begin_pruning_step=10,end_pruning_step=5',
      errors.HParamValueError,
      r'end step is before the begin step',
    ),
    (
      'end_minus_two',
      'end_pruning_step=-2',
      errors.HParamValueError,
      r'end_pruning_step=-2',
    ),
    (
      'schedule_end',
      'sparsity_function_begin_step=100',
      errors.HParamValueError,
      r'sparsity_function_end_step=100 is invalid: it must be > ',
    ),
    (
      'exponent',
      'sparsity_function_exponent=0',
      errors.HParamValueError,
      r'sparsity_function_exponent=0.0',
    ),
    (
      'block',
      'block_height=0',
      errors.HParamValueError,
      r'block_height=0 is invalid',
    ),
    (
      'pooling',
      'block_pooling_function=MEAN',
      errors.HParamValueError,
      r'block_pooling_function=MEAN is invalid: it must be one of AVG, MAX',
    ),
    (
      'scope',
      'pruning_scope=model',
      errors.HParamValueError,
      r'pruning_scope=model.*layer, global',
    ),
    (
      'granularity',
      'granularity=channel',
      errors.HParamValueError,
      r'granularity=channel.*weight, unit',
    ),
    (
      'method',
      'threshold_method=sort',
      errors.HParamValueError,
      r'threshold_method=sort.*exact, histogram',
    ),
    ('nbins', 'nbins=1', errors.HParamValueError, r'nbins=1 is invalid'),
    ('name', 'name=', errors.HParamValueError, r'name= is invalid'),
    (
      'map_no_colon',
      'weight_sparsity_map=[conv1]',
      errors.HParamSyntaxError,
      r"Malformed weight_sparsity_map entry 'conv1'",
    ),
    (
      'map_sparsity_one',
      'weight_sparsity_map=[conv1:1.0]',
      errors.HParamValueError,
      r"'conv1:1.0' has sparsity 1.0.*\[0, 1\)",
    ),
    (
      'map_sparsity_text',
      'weight_sparsity_map=[conv1:lots]',
      errors.HParamTypeError,
      r"'conv1:lots' has sparsity 'lots'",
    ),
    (
      'map_bad_regex',
      'weight_sparsity_map=[*conv:0.5]',
      errors.HParamValueError,
      r"regex '\*conv', which does not compile",
    ),
    (
      'block_map_form',
      'block_dims_map=[d:4by4]',
      errors.HParamValueError,
      r"'d:4by4' has block '4by4'",
    ),
    (
      'block_map_zero',
      'block_dims_map=[d:0x4]',
      errors.HParamValueError,
      r'block dimension 0',
    ),
    (
      'do_not_prune_regex',
      'do_not_prune=[+x]',
      errors.HParamValueError,
      r"do_not_prune entry '\+x'.*does not compile",
    ),
    (
      'unit_blocks',
      'granularity=unit,block_width=4',
      errors.HParamValueError,
      r'unit pruning cannot be combined with blocks',
    ),
    (
      'unit_block_map',
      'granularity=unit,block_dims_map=[d:2x2]',
      errors.HParamValueError,
      r'unit pruning cannot be combined',
    ),
    (
      'm_by_n_form',
      'sparsity_m_by_n=2-4',
      errors.HParamValueError,
      r"N:M with two whole numbers.*'2-4'",
    ),
    (
      'm_by_n_order',
      'sparsity_m_by_n=4:2',
      errors.HParamValueError,
      r'sparsity_m_by_n=4:2 is invalid: N:M needs 1 <= N < M',
    ),
    (
      'm_by_n_blocks',
      'sparsity_m_by_n=2:4,block_height=2',
      errors.HParamValueError,
      r'cannot be combined with blocks',
    ),
    (
      'm_by_n_unit',
      'sparsity_m_by_n=2:4,granularity=unit',
      errors.HParamValueError,
      r'granularity=unit',
    ),
    (
      'm_by_n_global',
      'sparsity_m_by_n=2:4,pruning_scope=global',
      errors.HParamValueError,
      r'pruning_scope=global',
    ),
    (
      'm_by_n_map',
      'sparsity_m_by_n=2:4,weight_sparsity_map=[a:0.1]',
      errors.HParamValueError,
      r'weight_sparsity_map',
    ),
  )
  def test_error(self, spec, error_type, message):
    with self.assertRaisesRegex(error_type, message):
      parse_hparams(spec)
    self.assertTrue(issubclass(error_type, ValueError))

  def test_spec_must_be_a_string(self):
    with self.assertRaisesRegex(errors.HParamTypeError, 'must be a string'):
      parse_hparams({'target_sparsity': 0.5})

  @parameterized.named_parameters(
    ('string_for_list', dict(do_not_prune='bias'), r"got the string 'bias'"),
    ('bool_for_int', dict(nbins=True), r"'nbins' takes a int"),
    ('str_for_float', dict(target_sparsity='0.5'), r'takes a float'),
    ('bad_pair', dict(sparsity_m_by_n=(2,)), r'"N:M" or a pair of ints'),
    ('unbalanced_entry', dict(do_not_prune=('a]',)), r'balanced'),
    ('trailing_backslash', dict(do_not_prune=('a\\',)), r'does not compile'),
  )
  def test_python_construction_errors(self, kwargs, message):
    with self.assertRaisesRegex(errors.HParamsError, message):
      PruningHParams(**kwargs)


# Valid regex-like entries made of safe pieces, so that every generated
# PruningHParams is valid.
_WORD = st.text(
  string.ascii_letters + string.digits + '_/.', min_size=1, max_size=8
)
_REGEX = st.one_of(
  _WORD,
  st.builds(lambda a, b: f'{a}[0-9]{{1,{b}}}', _WORD, st.integers(1, 3)),
  st.builds(lambda a, b: f'(?:{a}|{b})', _WORD, _WORD),
)
_SPARSITY = st.floats(0.0, 0.999, allow_nan=False)
_BLOCK_DIM = st.one_of(st.just(-1), st.integers(1, 16))


@st.composite
def _hparams(draw):
  begin = draw(st.integers(0, 10**6))
  sbegin = draw(st.integers(0, 10**6))
  granularity = draw(st.sampled_from(['weight', 'unit']))
  use_blocks = granularity == 'weight' and draw(st.booleans())
  m_by_n = None
  if granularity == 'weight' and not use_blocks and draw(st.booleans()):
    m = draw(st.integers(2, 16))
    m_by_n = (draw(st.integers(1, m - 1)), m)
  scope = 'layer' if m_by_n else draw(st.sampled_from(['layer', 'global']))
  return PruningHParams(
    name=draw(
      st.from_regex(r'[A-Za-z0-9_.][A-Za-z0-9_.\-/]{0,10}', fullmatch=True)
    ),
    begin_pruning_step=begin,
    end_pruning_step=draw(
      st.one_of(st.just(-1), st.integers(begin, 2 * 10**6))
    ),
    weight_sparsity_map=()
    if m_by_n
    else tuple(
      draw(
        st.lists(
          st.builds(lambda r, s: f'{r}:{s!r}', _REGEX, _SPARSITY), max_size=3
        )
      )
    ),
    block_dims_map=tuple(
      draw(
        st.lists(
          st.builds(
            lambda r, a, b: f'{r}:{a}x{b}', _REGEX, _BLOCK_DIM, _BLOCK_DIM
          ),
          max_size=2,
        )
      )
    )
    if use_blocks
    else (),
    threshold_decay=draw(st.floats(0.0, 0.99)),
    pruning_frequency=draw(st.integers(1, 1000)),
    nbins=draw(st.integers(2, 4096)),
    block_height=draw(_BLOCK_DIM) if use_blocks else 1,
    block_width=draw(_BLOCK_DIM) if use_blocks else 1,
    block_pooling_function=draw(st.sampled_from(['AVG', 'MAX'])),
    initial_sparsity=draw(_SPARSITY),
    target_sparsity=draw(_SPARSITY),
    sparsity_function_begin_step=sbegin,
    sparsity_function_end_step=draw(st.integers(sbegin + 1, 3 * 10**6)),
    sparsity_function_exponent=draw(st.floats(0.01, 10.0)),
    use_tpu=draw(st.booleans()),
    do_not_prune=tuple(draw(st.lists(_REGEX, max_size=3))),
    pruning_scope=scope,
    granularity=granularity,
    sparsity_m_by_n=m_by_n,
    threshold_method=draw(st.sampled_from(['exact', 'histogram'])),
  )


_SPEC_ALPHABET = string.ascii_letters + string.digits + '_=,[]:.-/ ()x\\{}*+?'


class PropertyTest(tf.test.TestCase):
  @hypothesis.settings(max_examples=300, deadline=None)
  @hypothesis.given(_hparams())
  def test_round_trip(self, h):
    self.assertEqual(parse_hparams(h.to_string()), h)
    self.assertEqual(parse_hparams(h.to_string(only_changed=True)), h)

  @hypothesis.settings(max_examples=500, deadline=None)
  @hypothesis.given(st.text(_SPEC_ALPHABET, max_size=60))
  def test_junk_raises_only_our_errors(self, spec):
    with contextlib.suppress(errors.HParamsError):
      parse_hparams(spec)

  @hypothesis.settings(max_examples=300, deadline=None)
  @hypothesis.given(
    st.lists(
      st.tuples(
        st.sampled_from(sorted(hparams_lib._FIELDS)),
        st.text(_SPEC_ALPHABET, max_size=12),
      ),
      max_size=4,
    )
  )
  def test_known_names_with_junk_values_raise_only_our_errors(self, clauses):
    spec = ','.join(f'{name}={value}' for name, value in clauses)
    with contextlib.suppress(errors.HParamsError):
      parse_hparams(spec)


class HostileSpecTest(parameterized.TestCase, tf.test.TestCase):
  """Specs that raised OverflowError/RecursionError, passed int64-overflowing
  values, accepted non-ASCII digits or quoted megabytes (issue 15)."""

  @parameterized.named_parameters(
    ('regex_repeat', 'do_not_prune=[a{99999999999}]', 'too large for Python'),
    (
      'nested_groups',
      'do_not_prune=[' + '(' * 3000 + 'a' + ')' * 3000 + ']',
      'too large for Python',
    ),
    (
      'beyond_int64',
      'pruning_frequency=9223372036854775808',
      r'pruning_frequency=.* is out of range: it must fit a 64-bit integer',
    ),
    (
      'negative_beyond_int64',
      'begin_pruning_step=-9223372036854775809',
      'must fit a 64-bit integer',
    ),
    (
      'block_beyond_int64',
      'block_dims_map=[a:99999999999999999999x1]',
      'must fit a 64-bit integer',
    ),
    ('full_width_digits', 'pruning_frequency=\uff11\uff10', 'ASCII digits'),
    ('arabic_indic_digits', 'target_sparsity=\u0660.5', 'ASCII digits'),
    ('underscore_int', 'pruning_frequency=1_000', 'ASCII digits'),
    ('underscore_float', 'target_sparsity=0.5_0', 'ASCII digits'),
    ('full_width_m_by_n', 'sparsity_m_by_n=\uff12:4', 'N:M'),
    ('map_sparsity_digits', 'weight_sparsity_map=[a:\u0660.5]', 'ASCII'),
  )
  def test_refused_with_an_hparams_error(self, spec, message):
    with self.assertRaisesRegex(errors.HParamsError, message):
      parse_hparams(spec)

  def test_int64_bounds_are_accepted(self):
    h = parse_hparams('end_pruning_step=9223372036854775807')
    self.assertEqual(h.end_pruning_step, 2**63 - 1)
    with self.assertRaisesRegex(errors.HParamValueError, '64-bit'):
      PruningHParams(end_pruning_step=2**63)

  @parameterized.named_parameters(
    ('unknown_name', 'target_sparsity=0.5,' + 'x' * 1_000_000 + '=1'),
    ('bad_value', 'target_sparsity=' + '9' * 1_000_000 + 'z'),
    ('bad_clause', 'target_sparsity=0.5,' + '!' * 1_000_000),
  )
  def test_huge_spec_error_quotes_an_excerpt(self, spec):
    with self.assertRaises(errors.HParamsError) as caught:
      parse_hparams(spec)
    self.assertLess(len(str(caught.exception)), 1000)  # not 1 MB


if __name__ == '__main__':
  tf.test.main()
