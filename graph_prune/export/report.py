"""What stripping did, and the sizes of what it wrote, as a report.

report = strip_saved_model(...)
print(report.to_text())
"""

import dataclasses
from typing import Any, Optional, Sequence, Tuple

from graph_prune.export import sizes
from graph_prune.passes.folded_values import FoldedWeight


@dataclasses.dataclass(frozen=True)
class StripReport:
  """What stripping did, and the sizes of what it wrote.

  Attributes:
    weights: the folded weights (shape, sparsity).
    total_params: values of every weight of the stripped model.
    nonzero_params: how many of them are not zero.
    signatures: the signature keys written.
    input_size, output_size, tflite_size, frozen_graph_size: `sizes.Size`
      of the input SavedModel and of each output, None when not applicable.
    frozen_graph_inputs, frozen_graph_outputs: tensor names to feed and
      fetch in the frozen graph.
  """

  weights: Tuple[FoldedWeight, ...]
  total_params: int
  nonzero_params: int
  signatures: Tuple[str, ...] = ()
  input_size: Optional[sizes.Size] = None
  output_size: Optional[sizes.Size] = None
  tflite_size: Optional[sizes.Size] = None
  frozen_graph_size: Optional[sizes.Size] = None
  frozen_graph_inputs: Tuple[str, ...] = ()
  frozen_graph_outputs: Tuple[str, ...] = ()
  # The TFLite file's check (`tflite.TFLiteReport`), when one was written.
  tflite: Optional[Any] = None
  # What shrinking removed (`shrink_report.ShrinkReport`), with --shrink.
  shrink: Optional[Any] = None
  # The dense float SavedModel's size (`dense_reference.dense_size`), the
  # reference every size is a percentage of; None when not measured.
  dense_size: Optional[sizes.Size] = None
  # One report per format written (`formats.base.ExportReport`: each with
  # its path and size), or None when nothing was written.
  outputs: Optional[Any] = None

  def to_text(self) -> str:
    """The report as a table for people."""
    lines = ['Masked weights folded (weight * mask, fixed values):']
    width = max([len(w.name) for w in self.weights] + [6])
    lines.append(
      f'  {"weight":<{width}}  {"shape":<16} {"sparsity":>9} {"non-zeros":>11}'
    )
    for w in self.weights:
      shape = 'x'.join(str(d) for d in w.shape)
      lines.append(
        f'  {w.name:<{width}}  {shape:<16} {w.sparsity:>9.2%} {w.nonzeros:>11,}'
      )
    zeros = 1 - self.nonzero_params / max(self.total_params, 1)
    lines.append(
      f'Parameters: {self.total_params:,} total, '
      f'{self.nonzero_params:,} non-zero ({zeros:.2%} zeros).'
    )
    if self.signatures:
      lines.append(f'Signatures: {", ".join(self.signatures)}.')
    rows = [
      ('dense SavedModel', self.dense_size),
      ('input SavedModel', self.input_size),
      ('stripped SavedModel', self.output_size),
      ('TFLite', self.tflite_size),
      ('frozen GraphDef', self.frozen_graph_size),
    ]
    rows = [(label, size) for label, size in rows if size is not None]
    if rows:
      dense = self.dense_size
      lines.append(
        'Sizes (raw / gzip -9; a directory as a .tar.gz'
        + ('; % of the dense gzipped' if dense else '')
        + '):'
      )
      for label, size in rows:
        share = (
          f' {size.gzipped / max(dense.gzipped, 1):>8.2%}' if dense else ''
        )
        lines.append(
          f'  {label:<20} {_bytes(size.raw):>22} / {_bytes(size.gzipped):>22}'
          + share
        )
    if self.frozen_graph_inputs or self.frozen_graph_outputs:
      feeds = ', '.join(self.frozen_graph_inputs)
      fetches = ', '.join(self.frozen_graph_outputs)
      lines.append(f'Frozen GraphDef feeds {feeds} and fetches {fetches}.')
    if self.tflite is not None:
      lines.append(self.tflite.to_text())
    if self.shrink is not None:
      lines.append(self.shrink.to_text())
    return '\n'.join(lines)


def make_report(
  folded: Sequence[FoldedWeight], parameters, signatures: Tuple[str, ...]
) -> 'StripReport':
  """A `StripReport` without sizes.

  Args:
    folded: the folded weights of every stripped function (a weight folded
      in several functions counts once).
    parameters: weight or variable name -> (size, non-zeros), over all
      functions.
    signatures: the signature keys.
  """
  unique = {}
  for w in folded:
    unique.setdefault(w.name, w)
  total = sum(size for size, _ in parameters.values())
  nonzero = sum(nz for _, nz in parameters.values())
  return StripReport(
    weights=tuple(unique.values()),
    total_params=total,
    nonzero_params=nonzero,
    signatures=tuple(signatures),
  )


def _bytes(n: int) -> str:
  return f'{n:,} B ({sizes.format_bytes(n, unit="MiB")})'
