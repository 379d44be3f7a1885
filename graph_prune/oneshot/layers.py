"""One-shot pruning of a pruned model's layers, in order, from calibration data.

SparseGPT and Wanda prune each layer from the inputs it sees once the layers
before it are pruned (both papers do it sequentially), so the model is run
on the calibration batches once per *group* of layers: layers whose inputs
depend on no weight of the group, pruned together after one run (the
Q/K/V projections of an attention block share one run; an MLP's layers
each need their own). Per layer, the statistics (`statistics`) are summed
over every batch, the layer is solved (`sparsegpt`, `wanda`, or magnitude),
and its weight (SparseGPT changes the kept weights) and mask are assigned.
A layer is one [inputs, outputs] problem, or one per group of a grouped or
depthwise conv (each from its own channels' patches); an embedding's is
solved from token counts (its Hessian is diagonal: `sparsegpt.prune_diagonal`).

    errors = prune_layers(pruned, batches, 'sparsegpt', {name: 0.5, ...})
"""

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from graph_prune import errors
from graph_prune.oneshot import op_rules
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


def _statistics(probe, group, batches) -> Dict[str, object]:
  """Each layer's statistics, summed over every batch (made at the first)."""
  stats = {}
  names = [layer.name for layer in group]
  for batch in batches:
    values = probe.run(batch, names)
    for layer in group:
      value = values[layer.name]
      if layer.name not in stats:
        stats[layer.name] = _new_statistics(layer, np.shape(value))
      stats[layer.name].add(_rows(layer, value))
  return stats


def _new_statistics(layer: Layer, input_shape):
  if layer.kind == op_rules.LOOKUP:
    return statistics.TokenCounts(layer.kernel_shape[0], name=layer.name)
  if layer.kind == op_rules.CONV:
    taps, group_inputs, groups, _ = _conv_groups(layer, input_shape[-1])
    return statistics.GroupedStatistics(
      taps, group_inputs, groups, name=layer.name
    )
  return statistics.InputStatistics(layer.inputs, hessian=True, name=layer.name)


def _conv_groups(layer: Layer, channels: int) -> Tuple[int, int, int, int]:
  """(taps, in-channels per group, groups, out-channels per group).

  A Conv2D whose kernel has fewer in-channels than its input is grouped
  (Keras' `groups`); a depthwise conv is a group per input channel.
  """
  kh, kw, kin, kout = layer.kernel_shape
  if layer.op == _DEPTHWISE:
    return kh * kw, 1, kin, kout
  if channels % kin or kout % (channels // kin):
    raise errors.StatisticsError(
      f'{layer.name}: a Conv2D input of {channels} channels for a kernel of '
      f'{kin} in-channels and {kout} filters is no whole number of groups; '
      "the calibration data must match the model's input signature"
    )
  groups = int(channels) // kin
  return kh * kw, kin, groups, kout // groups


def _grouping(layer: Layer, stats) -> Tuple[int, int, int, int]:
  """The weight as (taps, group inputs, groups, group outputs): one group
  for a matrix or a lookup, the conv's groups for a conv."""
  if layer.kind == op_rules.CONV:
    taps, group_inputs, groups = stats.taps, stats.group_inputs, stats.groups
    size = int(np.prod(layer.kernel_shape))
    return taps, group_inputs, groups, size // (taps * group_inputs * groups)
  return 1, layer.inputs, 1, layer.outputs


def _split(kernel, grouping) -> np.ndarray:
  """The kernel as [groups, taps * group inputs, group outputs]."""
  taps, inputs, groups, outputs = grouping
  w = np.reshape(kernel, grouping).transpose(2, 0, 1, 3)
  return w.reshape(groups, taps * inputs, outputs)


def _join(split, grouping, shape) -> np.ndarray:
  """`_split`'s inverse, in the weight's own `shape`."""
  taps, inputs, groups, outputs = grouping
  w = np.reshape(split, (groups, taps, inputs, outputs)).transpose(1, 2, 0, 3)
  return w.reshape(shape)


def _rows(layer: Layer, value):
  if layer.kind == op_rules.CONV:
    return statistics.conv_patches(value, layer.kernel_shape, **layer.attrs)
  if layer.kind == op_rules.LOOKUP:
    return value  # token ids
  return np.reshape(value, (-1, layer.inputs))


def _prune(pruned, layer, stats, method, sparsities, m_by_n) -> LayerResult:
  """Prunes one weight, each of its groups its own [inputs, outputs] problem."""
  weight = pruned.weights[layer.index]
  mask = pruned.masks[layer.index]
  sparsity = float(sparsities.get(layer.name, 0.0))
  grouping = _grouping(layer, stats)
  w = _split(np.asarray(weight.numpy()) * np.asarray(mask.numpy()), grouping)
  groups, rows, outputs = w.shape
  if method == 'weight':
    flat = w.transpose(1, 0, 2).reshape(rows, groups * outputs)
    keep = _magnitude(flat, sparsity, m_by_n).reshape(rows, groups, outputs)
    keep = keep.transpose(1, 0, 2)
    new = w * keep
  else:
    new, keep = np.empty_like(w), np.empty(w.shape, dtype=bool)
    for g in range(groups):
      new[g], keep[g] = _solve(layer, stats, g, w[g], method, sparsity, m_by_n)
  shape = tuple(weight.shape)
  _assign(
    weight,
    mask,
    _join(new, grouping, shape),
    _join(keep, grouping, shape),
    method,
  )
  num = sum(stats.quadratic(w[g] - new[g], g) for g in range(groups))
  den = sum(stats.quadratic(w[g], g) for g in range(groups))
  return LayerResult(
    layer.name, float(1.0 - keep.mean()), _ratio(num, den), stats.rows
  )


def _solve(layer, stats, g, w, method, sparsity, m_by_n):
  """(new weight, kept) of one [inputs, outputs] problem by `method`."""
  if layer.kind == op_rules.LOOKUP and method == 'sparsegpt':
    return sparsegpt.prune_diagonal(w, stats.counts(), sparsity, m_by_n)
  if method == 'sparsegpt':
    return sparsegpt.prune(w, stats.hessian(g), sparsity, m_by_n)
  keep = wanda.keep(w, stats.norms(g), sparsity, m_by_n)
  return w * keep, keep


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


def _ratio(num, den) -> float:
  """`||X (W - W')|| / ||X W||` from the two squared norms."""
  return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0
