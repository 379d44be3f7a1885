"""Tests of keeping TensorFlow's start-up lines off the binaries' stderr."""

import os
import subprocess
import sys
import textwrap

from absl.testing import parameterized
import tensorflow as tf

from graph_prune.cli import quiet

# Lines TensorFlow 2.21 printed on this project's machines while starting.
_NOISE = (
  'WARNING: All log messages before absl::InitializeLog() is called are '
  'written to STDERR',
  'I0000 00:00:1796151497.006018    3725 cudart_stub.cc:31] Could not find '
  'cuda drivers on your machine, GPU will not be used.',
  'I0000 00:00:1796151497.128279    3725 cpu_feature_guard.cc:227] This '
  'TensorFlow binary is optimized to use available CPU instructions in '
  'performance-critical operations.',
  'To enable the following instructions: AVX2 FMA, in other operations, '
  'rebuild TensorFlow with the appropriate compiler flags.',
  'E0000 00:00:1796151501.882280    3725 cuda_platform.cc:52] failed call to '
  'cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)',
)


def _child(body: str):
  """Runs `body` in a fresh Python with graph_prune.cli.quiet imported."""
  code = (
    'import os, sys\nfrom graph_prune.cli import quiet\n'
    + textwrap.dedent(body)
  )
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  return subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
    check=False,
  )


class WantedTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('no_flags', ['prog'], {}, True),
    ('other_flags', ['prog', '--model=cnn'], {}, True),
    ('verbosity', ['prog', '--verbosity=0'], {}, False),
    ('verbosity_separate', ['prog', '--verbosity', '1'], {}, False),
    ('short_v', ['prog', '-v=1'], {}, False),
    ('after_double_dash', ['prog', '--', '--verbosity=0'], {}, True),
    ('user_log_level', ['prog'], {'TF_CPP_MIN_LOG_LEVEL': '0'}, False),
  )
  def test_wanted(self, argv, environ, expected):
    self.assertEqual(quiet.wanted(argv, environ), expected)


class NoiseTest(tf.test.TestCase):
  def test_known_start_up_lines_are_noise(self):
    for line in _NOISE:
      self.assertTrue(quiet.is_noise(line), line)

  def test_other_lines_are_not(self):
    for line in (
      'Traceback (most recent call last):',
      'E0000 00:00:1.0 1 allocator.cc:1] Out of memory',
      'strip_masks: error: no SavedModel at /x',
    ):
      self.assertFalse(quiet.is_noise(line), line)


class StartUpTest(tf.test.TestCase):
  def test_noise_is_dropped_and_other_lines_kept(self):
    lines = '\n'.join(_NOISE + ('a real problem',))
    result = _child(f"""
      with quiet.start_up():
        os.write(2, {lines!r}.encode() + b'\\n')
      sys.stderr.write('after\\n')
    """)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stderr.splitlines(), ['a real problem', 'after'])

  def test_an_error_inside_still_shows_its_traceback(self):
    result = _child("""
      with quiet.start_up():
        raise ImportError('no module named tensorflow_like')
    """)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn('Traceback', result.stderr)
    self.assertIn('no module named tensorflow_like', result.stderr)

  def test_disabled_captures_nothing(self):
    result = _child(f"""
      with quiet.start_up(enabled=False):
        os.write(2, {_NOISE[1]!r}.encode() + b'\\n')
    """)
    self.assertEqual(result.stderr.splitlines(), [_NOISE[1]])

  def test_real_tensorflow_start_up_is_silent(self):
    result = _child("""
      with quiet.start_up():
        import tensorflow as tf
        tf.config.list_physical_devices()
      print(int(tf.constant(2) + 3))
    """)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.strip(), '5')
    self.assertEqual(result.stderr, '')


if __name__ == '__main__':
  tf.test.main()
