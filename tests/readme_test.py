"""The README's Python examples run as written and do what they say."""

import contextlib
import io
import os
import re
import tempfile

import numpy as np
import tensorflow as tf

_README = os.path.join(os.path.dirname(__file__), '..', 'README.md')


def _python_blocks():
  with open(_README) as f:
    return re.findall(r'```python\n(.*?)```', f.read(), flags=re.DOTALL)


def _expected_overall(sparsity, shapes):
  """Exact-method sparsity over all kernels: round(s * n) pruned in each."""
  sizes = [int(np.prod(s)) for s in shapes]
  return sum(round(sparsity * n) for n in sizes) / sum(sizes)


class ReadmeTest(tf.test.TestCase):
  def test_examples_run_and_reach_their_sparsity(self):
    blocks = _python_blocks()
    self.assertLen(blocks, 3)
    out_dir = tempfile.mkdtemp()
    namespace = {}
    kernels = [(64, 256), (256, 10)]
    for block, sparsity, export in (
      (blocks[0], 0.9, 'model'),
      (blocks[1], 0.8, 'fit_model'),
    ):
      self.assertIn(f"'/tmp/{export}'", block)
      code = block.replace("'/tmp/", repr(out_dir + os.sep)[:-1])
      # From a file of its own, so that AutoGraph can read the source of the
      # block's tf.function.
      path = os.path.join(out_dir, f'readme_{export}.py')
      with open(path, 'w') as f:
        f.write(code)
      printed = io.StringIO()
      with contextlib.redirect_stdout(printed):
        exec(compile(code, path, 'exec'), namespace)  # pylint: disable=exec-used
      pruned = namespace['pruned']
      self.assertEqual(
        [list(m.shape) for m in pruned.masks], [list(s) for s in kernels]
      )
      self.assertAllClose(
        float(pruned.sparsity().overall),
        _expected_overall(sparsity, kernels),
        atol=1e-6,
      )
      self.assertEqual(printed.getvalue().splitlines()[-1], f'{sparsity:.2f}')
      self.assertTrue(
        os.path.isfile(os.path.join(out_dir, export, 'saved_model.pb'))
      )
    # The shipping example, on the `fit` block's pruned model and data.
    code = blocks[2].replace("'/tmp/", repr(out_dir + os.sep)[:-1])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      exec(compile(code, 'readme_ship.py', 'exec'), namespace)  # pylint: disable=exec-used
    self.assertIn('TFLite (int8, ', printed.getvalue())
    self.assertTrue(os.path.isfile(os.path.join(out_dir, 'm.tflite')))
    plain, pruned = namespace['plain'], namespace['pruned']
    x = namespace['x'][:32]
    self.assertAllClose(plain.predict(x, verbose=0), pruned(x), atol=1e-5)
    self.assertAllClose(
      [np.mean(w.numpy() == 0) for w in plain.weights if w.ndim == 2],
      [0.8, 0.8],
      atol=0.01,
    )
    self.assertTrue(os.path.isfile(os.path.join(out_dir, 'm.keras')))


if __name__ == '__main__':
  tf.test.main()
