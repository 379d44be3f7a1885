"""One-shot pruning from calibration data: solvers and their statistics.

`sparsegpt` prunes one layer from its inputs' Hessian and updates the kept
weights (Frantar & Alistarh 2023); `wanda` scores |w| by its input
feature's norm (Sun et al. 2023). Both work on one weight at a time, in
NumPy, from statistics gathered by running the model on calibration data.
"""
