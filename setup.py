"""graph_prune: magnitude pruning for TensorFlow 2, done as a graph pass."""

import setuptools

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
  ],
  extras_require={
    'test': [
      'pytest',
      'pytest-xdist',
      'hypothesis',
      'tf_keras',
      'ruff==0.17.6',
    ],
    'plots': ['matplotlib'],
  },
  entry_points={
    'console_scripts': [
      'strip_masks = graph_prune.cli.strip_masks:run',
      'graph_prune_train = graph_prune.cli.train:run',
      'sparsity_sweep = graph_prune.cli.sparsity_sweep:run',
    ],
  },
)
