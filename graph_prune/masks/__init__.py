"""Mask math, pure functions of tensors: criteria, selection, masks, schedule.

`masking` turns scores into masks per layer, globally, in blocks, N:M;
`criteria` scores a weight (|w| today); `selection` (its search in
`order_statistic`), `segment_selection` and `score_bits` pick the k
smallest exactly; `batched_masks` does many
small weights at once; `unit_groups` prunes units and coupled channel
groups; `mask_structure` pools scores into blocks and units; `schedule` is
the gradual sparsity schedule. Also importable as `graph_prune.masking` and
`graph_prune.schedule`, their paths before this folder.
"""
