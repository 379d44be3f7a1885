"""One-shot pruning of a pruned model's layers, in order, from calibration data.

SparseGPT and Wanda prune each layer from the inputs it sees once the layers
before it are pruned (both papers do it sequentially), so the model is run
on the calibration batches once per *group* of layers: layers whose inputs
depend on no weight of the group, pruned together after one run (the
Q/K/V projections of an attention block share one run; an MLP's layers
each need their own). Per layer, the statistics (`statistics`) are summed
over every batch, the layer is solved (`sparsegpt`, `wanda`, or magnitude),
and its weight (SparseGPT changes the kept weights) and mask are assigned.

    errors = prune_layers(pruned, batches, 'sparsegpt', {name: 0.5, ...})
"""

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from graph_prune.oneshot import sparsegpt
from graph_prune.oneshot import statistics
from graph_prune.oneshot import wanda
from graph_prune.oneshot.probe import Layer
from graph_prune.oneshot.probe import Probe

METHODS = ('weight', 'wanda', 'sparsegpt')
_DEPTHWISE = 'DepthwiseConv2dNative'


@dataclasses.dataclass(frozen=True)
class LayerResult:
  """What one-shot pruning did to one weight.

  Attributes:
    name: the weight.
    sparsity: the fraction of its entries now zero in the mask.
    error: `||X W - X W'|| / ||X W||` on the calibration inputs X the layer
      saw (W the weight before, W' the masked weight after).
    rows: how many calibration rows (samples x positions) it saw.
  """

  name: str
  sparsity: float
  error: float
  rows: int


def groups(layers: Sequence[Layer]) -> List[List[Layer]]:
  """Consecutive layers pruned after one run: none reads another's output."""
  result: List[List[Layer]] = []
  for layer in layers:
    if result and not (layer.after & {x.name for x in result[-1]}):
      result[-1].append(layer)
    else:
      result.append([layer])
  return result


def prune_layers(
  pruned,
  batches: Sequence,
  method: str,
  sparsities: Mapping[str, float],
  m_by_n: Optional[Tuple[int, int]] = None,
) -> Tuple[LayerResult, ...]:
  """Prunes every masked weight of `pruned` one-shot, layer group by group.

  Args:
    pruned: a `PrunedModel`; its weights and masks are assigned in place.
    batches: calibration batches, each a tuple structured as the model's
      positional inputs (`read_example_inputs`' output).
    method: 'weight' (|w|, per layer), 'wanda' or 'sparsegpt'.
    sparsities: weight name -> its target sparsity.
    m_by_n: (N, M) for N:M sparsity instead of `sparsities`.

  Returns:
    One `LayerResult` per weight, in the order they were pruned.

  Raises:
    StatisticsError: a layer's calibration inputs hold NaN or Inf; no
      weight or mask was changed.
  """
  probe = Probe.of(pruned)
  state = list(pruned.weights) + list(pruned.masks)
  before = [v.numpy() for v in state]
  results = []
  try:
    for group in groups(probe.layers):
      stats = _statistics(probe, group, batches)
      for layer in group:
        results.append(
          _prune(pruned, layer, stats[layer.name], method, sparsities, m_by_n)
        )
  except BaseException:
    # All or nothing: a later layer's failure (NaN in its inputs, an
    # interrupt) leaves every weight and mask as it was.
    for variable, value in zip(state, before):
      variable.assign(value)
    raise
  return tuple(results)


def _statistics(probe, group, batches) -> Dict[str, statistics.InputStatistics]:
  stats = {layer.name: _new_statistics(layer) for layer in group}
  names = [layer.name for layer in group]
  for batch in batches:
    values = probe.run(batch, names)
    for layer in group:
      stats[layer.name].add(_rows(layer, values[layer.name]))
  return stats


def _new_statistics(layer: Layer):
  if layer.op == _DEPTHWISE:
    kh, kw, channels, _ = layer.kernel_shape
    return statistics.DepthwiseStatistics(kh * kw, channels, name=layer.name)
  return statistics.InputStatistics(layer.inputs, hessian=True, name=layer.name)


def _rows(layer: Layer, value):
  if layer.op in ('Conv2D', _DEPTHWISE):
    return statistics.conv_patches(value, layer.kernel_shape, **layer.attrs)
  return np.reshape(value, (-1, layer.inputs))


def _prune(pruned, layer, stats, method, sparsities, m_by_n) -> LayerResult:
  weight = pruned.weights[layer.index]
  mask = pruned.masks[layer.index]
  sparsity = float(sparsities.get(layer.name, 0.0))
  if layer.op == _DEPTHWISE:
    return _prune_depthwise(
      weight, mask, layer, stats, method, sparsity, m_by_n
    )
  w = (np.asarray(weight.numpy()) * np.asarray(mask.numpy())).reshape(
    layer.inputs, layer.outputs
  )
  h = stats.hessian()
  if method == 'sparsegpt':
    new, keep = sparsegpt.prune(w, h, sparsity, m_by_n)
  elif method == 'wanda':
    keep = wanda.keep(w, stats.norms(), sparsity, m_by_n)
    new = w * keep
  else:
    keep = _magnitude(w, sparsity, m_by_n)
    new = w * keep
  _assign(weight, mask, new, keep, method)
  num, den = _quadratic(w - new, h), _quadratic(w, h)
  return LayerResult(
    layer.name, float(1.0 - keep.mean()), _ratio(num, den), stats.rows
  )


def _prune_depthwise(weight, mask, layer, stats, method, sparsity, m_by_n):
  """Each channel's [kh * kw, multiplier] kernel from its own patches."""
  kh, kw, channels, multiplier = layer.kernel_shape
  w = (np.asarray(weight.numpy()) * np.asarray(mask.numpy())).reshape(
    kh * kw, channels, multiplier
  )
  if method == 'weight':
    keep = _magnitude(w.reshape(kh * kw, -1), sparsity, m_by_n)
    keep = keep.reshape(w.shape)
    new = w * keep
  else:
    new, keep = np.empty_like(w), np.empty(w.shape, dtype=bool)
    for c in range(channels):
      if method == 'sparsegpt':
        new[:, c], keep[:, c] = sparsegpt.prune(
          w[:, c], stats.hessian(c), sparsity, m_by_n
        )
      else:
        keep[:, c] = wanda.keep(w[:, c], stats.norms(c), sparsity, m_by_n)
        new[:, c] = w[:, c] * keep[:, c]
  _assign(weight, mask, new, keep, method)
  num = den = 0.0
  for c in range(channels):
    num += _quadratic(w[:, c] - new[:, c], stats.hessian(c))
    den += _quadratic(w[:, c], stats.hessian(c))
  return LayerResult(
    layer.name, float(1.0 - keep.mean()), _ratio(num, den), stats.rows
  )


def _magnitude(w, sparsity, m_by_n):
  """|w|: the smallest over the whole layer, or N:M per output."""
  if m_by_n is not None:
    return wanda.keep(w, np.ones(w.shape[0]), m_by_n=m_by_n)
  keep = np.ones(w.shape, dtype=bool)
  count = int(np.floor(sparsity * w.size + 1e-9))
  keep.flat[np.argsort(np.abs(w), axis=None, kind='stable')[:count]] = False
  return keep


def _assign(weight, mask, new, keep, method) -> None:
  """Writes the mask, and the new kept weights where the method made them."""
  shape = tuple(weight.shape)
  if method == 'sparsegpt':
    weight.assign(new.reshape(shape).astype(weight.dtype.as_numpy_dtype))
  mask.assign(keep.reshape(shape).astype(mask.dtype.as_numpy_dtype))


def _quadratic(d, h) -> float:
  """`||X d||^2` from `H = X^T X`, without X."""
  d = np.asarray(d, np.float64)
  return float(np.einsum('ij,ik,kj->', d, h, d))


def _ratio(num, den) -> float:
  """`||X (W - W')|| / ||X W||` from the two squared norms."""
  return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0
