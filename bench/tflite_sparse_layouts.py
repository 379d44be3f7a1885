"""Benchmark: how small could an int8 TFLite file's weights get sparse?

Usage:
  python bench/tflite_sparse_layouts.py --tflite=FILE.tflite
      [--dense_gzipped_kib=N] [--blocks=16,32,64,128,256,0]

Reads the (dense-weight) int8 TFLite file, e.g. the training binary's
`--export_tflite=int8` export, and for each of its weight tensors lays out
what TFLite's sparsity format (schema.fbs `SparsityParameters`) would store
for a split of the column dimension into blocks of B columns: traversal
[rows DENSE, column blocks DENSE, columns within the block SPARSE_CSR], so
a column index fits uint8 when B <= 256 (0: no split, whole rows). What it
stores per tensor: the non-zero int8 values, the column indices (uint8, or
uint16 past 255) and the CSR segments (uint16 if the tensor's non-zeros fit,
else int32: they count cumulatively over the whole tensor). It gzips (-9)
the three streams of all tensors concatenated, as a file writer would place
them, and prints that beside the dense weights' gzipped size and the rest of
the file (every buffer of rank >= 2 emptied, the schema's own packing).

The estimate is a lower bound on a writer's file: the real file adds the
DENSIFY ops and the flatbuffer's padding. With --dense_gzipped_kib (the
dense float SavedModel's gzipped KiB; the training binary prints it) each
total is also a share of it. Writes bench/results/tflite_sparse_layouts.json.
"""

import gzip
import os

from absl import app
from absl import flags
import flatbuffers
import numpy as np
import results_io  # bench/results_io.py, beside this script

from graph_prune import _tf_internal
from graph_prune.export import tflite_read

_TFLITE = flags.DEFINE_string('tflite', None, 'A dense-weight .tflite file.')
_DENSE = flags.DEFINE_float(
  'dense_gzipped_kib', None, 'Dense float SavedModel gzipped KiB.'
)
_BLOCKS = flags.DEFINE_list(
  'blocks', ['16', '32', '64', '128', '256', '0'], 'Column block widths.'
)
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(
    os.path.dirname(__file__), 'results', 'tflite_sparse_layouts.json'
  ),
  'JSON output path.',
)


def _kib(data: bytes) -> float:
  return len(gzip.compress(data, compresslevel=9, mtime=0)) / 1024


def _rest_of_file(flatbuffer: bytes) -> float:
  """Gzipped KiB of the file with every weight buffer emptied."""
  schema = _tf_internal.tflite_schema()
  model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
  for subgraph in model.subgraphs:
    for tensor in subgraph.tensors:
      buffer = model.buffers[tensor.buffer]
      if buffer.data is not None and len(tensor.shape) >= 2:
        buffer.data = np.zeros(0, np.uint8)
  builder = flatbuffers.Builder(0)
  builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
  return _kib(bytes(builder.Output()))


def _layout(weights, block: int):
  """(values, indices, segments) bytes of every tensor, B-column blocks."""
  values, indices, segments = [], [], []
  for w in weights:
    rows, cols = w.values.shape[0], int(np.prod(w.values.shape[1:]))
    v = w.values.reshape(rows, cols)
    width = block or cols
    blocks = -(-cols // width)
    padded = np.zeros((rows, blocks * width), v.dtype)
    padded[:, :cols] = v
    cells = padded.reshape(rows * blocks, width)
    nonzero = cells != w.zero_point
    values.append(cells[nonzero].tobytes())
    index_type = np.uint8 if width <= 256 else np.uint16
    indices.append(np.nonzero(nonzero)[1].astype(index_type).tobytes())
    counts = np.concatenate([[0], np.cumsum(nonzero.sum(1))])
    segment_type = np.uint16 if counts[-1] < 2**16 else np.int32
    segments.append(counts.astype(segment_type).tobytes())
  return b''.join(values), b''.join(indices), b''.join(segments)


def main(argv):
  del argv
  with open(_TFLITE.value, 'rb') as f:
    flatbuffer = f.read()
  weights = tflite_read.read_weights(flatbuffer)
  rest = _rest_of_file(flatbuffer)
  dense = _kib(b''.join(w.values.tobytes() for w in weights))
  rows = [{'layout': 'dense', 'weights_kib': dense}]
  for block in (int(b) for b in _BLOCKS.value):
    values, indices, segments = _layout(weights, block)
    rows.append(
      {
        'layout': f'csr block {block}' if block else 'csr rows',
        'values_kib': _kib(values),
        'indices_kib': _kib(indices),
        'segments_kib': _kib(segments),
        'weights_kib': _kib(values + indices + segments),
      }
    )
  print(f'file {_kib(flatbuffer):.1f} KiB gzipped; rest {rest:.1f} KiB')
  print('| layout | values | indices | segments | weights | + rest | % dense |')
  print('|---|---|---|---|---|---|---|')
  for row in rows:
    row['total_kib'] = row['weights_kib'] + rest
    share = f'{row["total_kib"] / _DENSE.value:.2%}' if _DENSE.value else '-'
    cells = [
      f'{row[k]:.1f}' if k in row else '-'
      for k in ('values_kib', 'indices_kib', 'segments_kib', 'weights_kib')
    ]
    print(
      f'| {row["layout"]} | {" | ".join(cells)} | {row["total_kib"]:.1f} '
      f'| {share} |'
    )
  results_io.write(_OUT.value, {'rest_kib': rest, 'rows': rows})


if __name__ == '__main__':
  flags.mark_flag_as_required('tflite')
  app.run(main)
