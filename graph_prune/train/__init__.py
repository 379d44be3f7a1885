"""Training runs: the loop, the experiment, built-in models and datasets.

Run it as a binary with `python -m graph_prune.train` (see
`graph_prune.cli.train`). Nothing in graph_prune's core imports this package.
"""
