"""`python -m graph_prune.train`: the training binary, in graph_prune.cli."""

from graph_prune.cli import main

if __name__ == '__main__':
  main.train()
