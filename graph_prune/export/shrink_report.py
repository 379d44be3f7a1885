"""What shrinking removed, per layer and per function, and how fast it runs.

module = graph_prune.shrink(pruned)
print(module.shrink_report.to_text())
json.dump(module.shrink_report.to_json(), f)
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from graph_prune.passes.shrink_units import ShrinkResult


@dataclasses.dataclass(frozen=True)
class Latency:
  """Median and minimum seconds per call of the stripped and shrunk model."""

  batch: int
  stripped_median: float
  stripped_min: float
  shrunk_median: float
  shrunk_min: float

  @property
  def ratio(self) -> float:
    return self.shrunk_median / self.stripped_median


@dataclasses.dataclass(frozen=True)
class ShrinkReport:
  """What shrinking did.

  Attributes:
    functions: (function key, `ShrinkResult`) for `__call__` and each
      signature.
    weight_names: kernel Const node -> the weight's name, for display.
    latency: `Latency` rows, empty unless measured.
  """

  functions: Tuple[Tuple[str, ShrinkResult], ...]
  weight_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
  latency: Tuple[Latency, ...] = ()

  @property
  def main(self) -> Optional[ShrinkResult]:
    """The result of the first function (`__call__` when there is one)."""
    return self.functions[0][1] if self.functions else None

  def to_json(self) -> Dict[str, Any]:
    return {
      'functions': {
        key: {
          'layers': [
            _layer_json(layer, self.weight_names) for layer in result.layers
          ],
          'coupled': [
            dict(
              dataclasses.asdict(group),
              members=[self.weight_names.get(k, k) for k in group.members],
              kept=list(group.kept),
            )
            for group in result.coupled
          ],
          'notes': list(result.notes),
          'params_before': result.params_before,
          'params_after': result.params_after,
          'macs_before': result.macs_before,
          'macs_after': result.macs_after,
        }
        for key, result in self.functions
      },
      'latency': [
        dict(dataclasses.asdict(row), ratio=row.ratio) for row in self.latency
      ],
    }

  def to_text(self) -> str:
    lines = []
    for key, result in self.functions:
      lines.append(f'Shrunk {key}:')
      names = [self.weight_names.get(x.kernel, x.kernel) for x in result.layers]
      width = max([len(n) for n in names] + [5])
      lines.append(
        f'  {"layer":<{width}} {"units":>13} {"MACs before":>13} '
        f'{"MACs after":>13}'
      )
      for name, layer in zip(names, result.layers):
        units = f'{layer.units_before}->{layer.units_after}'
        lines.append(
          f'  {name:<{width}} {units:>13} {layer.macs_before:>13,} '
          f'{layer.macs_after:>13,}'
        )
      for name, layer in zip(names, result.layers):
        if layer.kept:
          kept = layer.zero_units - (layer.units_before - layer.units_after)
          lines.append(
            f'  kept {kept} zero units of {name}: ' + '; '.join(layer.kept)
          )
      lines += self._coupled_lines(result)
      lines += [f'  {note}' for note in result.notes]
      lines.append(
        f'  parameters {result.params_before:,} -> {result.params_after:,}, '
        f'multiply-adds per example {result.macs_before:,} -> '
        f'{result.macs_after:,}'
      )
    if self.latency:
      lines.append('Latency (median / min of rounds, seconds per call):')
      lines.append(
        f'  {"batch":>6} {"stripped":>21} {"shrunk":>21} {"ratio":>6}'
      )
      for row in self.latency:
        stripped = f'{row.stripped_median:>10.6f}/{row.stripped_min:<10.6f}'
        shrunk = f'{row.shrunk_median:>10.6f}/{row.shrunk_min:<10.6f}'
        lines.append(f'  {row.batch:>6} {stripped} {shrunk} {row.ratio:>6.3f}')
    return '\n'.join(lines)

  def _coupled_lines(self, result):
    """Groups of layers whose channels were removed together."""
    lines = []
    for group in result.coupled:
      names = [self.weight_names.get(k, k) for k in group.members]
      lines.append(
        f'  coupled channels {group.channels_before}->'
        f'{group.channels_after} ({group.zero_channels} zero): '
        + ', '.join(names)
      )
      kept = group.zero_channels - (
        group.channels_before - group.channels_after
      )
      if kept:
        lines.append(f'    kept {kept} zero channels: ' + '; '.join(group.kept))
    return lines


def _layer_json(layer, weight_names) -> Dict[str, Any]:
  # `remaining` (the kept unit indices) is for rebuilding layers, not for
  # reading: a long list per layer.
  fields = dataclasses.asdict(layer)
  fields.pop('remaining', None)
  return dict(
    fields,
    weight=weight_names.get(layer.kernel, layer.kernel),
    kept=list(layer.kept),
  )


def make_report(stripped: Sequence[Tuple[str, Any]]) -> ShrinkReport:
  """A `ShrinkReport` of (key, `StrippedFunction`) pairs, shrunk ones."""
  names = {}
  for _, function in stripped:
    names.update(function.names)
  return ShrinkReport(
    functions=tuple(
      (key, f.shrunk) for key, f in stripped if f.shrunk is not None
    ),
    weight_names=names,
  )
