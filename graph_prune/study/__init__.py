"""The classic pruning study (`sweep`) and its plots (`plots`)."""
