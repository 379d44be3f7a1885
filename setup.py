"""graph_prune: magnitude pruning for TensorFlow 2, done as a graph pass."""

import setuptools

_LITERT = 'ai-edge-litert>=2.3'
_LITERT_PLATFORMS = (
  'platform_system == "Linux" and platform_machine == "x86_64" '
  'and python_version < "3.14"'
)

setuptools.setup(
  name='graph_prune',
  version='0.1.0',
  description='Magnitude pruning for TensorFlow 2 as a graph pass '
  '(successor of tf.contrib.model_pruning).',
  packages=setuptools.find_packages(include=['graph_prune', 'graph_prune.*']),
  package_data={'graph_prune.train': ['data/*.npz', 'data/README.md']},
  python_requires='>=3.10',
  install_requires=[
    'tensorflow>=2.16',
    'numpy',
    'absl-py',
    # The training binary ends by pointing at `tensorboard --logdir`.
    'tensorboard',
  ],
  extras_require={
    'test': [
      'pytest',
      'pytest-xdist',
      'hypothesis',
      'tf_keras',
      'ruff==0.17.6',
      # Transformer backbones built from a config (random weights, nothing
      # downloaded) for the transformer tests; keras-hub needs
      # tensorflow-text, which pins TensorFlow's minor version.
      'keras-hub>=0.32',
      # LiteRT's interpreter, where its wheels exist (checked for 2.3.0:
      # Linux x86_64, Python 3.10-3.13); elsewhere graph_prune falls back
      # to tf.lite.Interpreter (graph_prune/export/tflite_read.py).
      _LITERT + '; ' + _LITERT_PLATFORMS,
    ],
    'plots': ['matplotlib'],
    # Running TFLite models without tf.lite.Interpreter's deprecation.
    'litert': [_LITERT],
  },
  entry_points={
    'console_scripts': [
      'strip_masks = graph_prune.cli.main:strip_masks',
      'graph_prune_train = graph_prune.cli.main:train',
      'sparsity_sweep = graph_prune.cli.main:sparsity_sweep',
    ],
  },
)
