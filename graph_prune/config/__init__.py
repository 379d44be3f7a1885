"""Pruning configuration: contrib's hparams string, parsed and checked.

`hparams` holds `PruningHParams` and `parse_hparams`; `hparams_rules` the
rules their values follow; `hparams_syntax` the string's grammar (lists,
maps, N:M pairs).
"""
