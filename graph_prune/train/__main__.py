"""`python -m graph_prune.train`: the training binary, in graph_prune.cli."""

from graph_prune.cli import train

# absl prints the main module's docstring as the usage text.
__doc__ = train.__doc__  # pylint: disable=redefined-builtin

if __name__ == '__main__':
  train.run()
