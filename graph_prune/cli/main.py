"""The binaries' entry points: TensorFlow starts quietly, then the binary runs.

The console scripts (`graph_prune_train`, `strip_masks`, `sparsity_sweep`),
`python -m graph_prune.train` and the scripts in tools/ start here. Each
entry point imports its binary, and with it TensorFlow, inside
`quiet.start_up` (see graph_prune/cli/quiet.py), which is why this module
imports nothing of TensorFlow's itself.
"""

import importlib
import sys

from graph_prune.cli import quiet


def _start(module_name: str) -> None:
  enabled = quiet.wanted(sys.argv)
  with quiet.start_up(enabled):
    binary = importlib.import_module(module_name)
    import tensorflow as tf  # inside the capture, on purpose

    # Finding the devices prints the last start-up lines (cuInit).
    tf.config.list_physical_devices()
  if enabled:
    quiet.hide_known_warnings()
  binary.run()


def train() -> None:
  """`graph_prune_train` and `python -m graph_prune.train`."""
  _start('graph_prune.cli.train')


def strip_masks() -> None:
  """`strip_masks`."""
  _start('graph_prune.cli.strip_masks')


def sparsity_sweep() -> None:
  """`sparsity_sweep`."""
  _start('graph_prune.cli.sparsity_sweep')
