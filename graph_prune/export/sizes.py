"""Sizes of exported models on disk, raw and gzip-compressed.

A directory's gzipped size is the size of a `.tar.gz` of it, the way a
SavedModel is usually shipped: a deterministic tar (entries sorted by path,
mtime, owner and mode zeroed) compressed with gzip level 9, counted as it
streams (nothing is written to disk). A file's gzipped size is that of
`gzip -9` of its bytes. Tar adds 512 bytes of header per file and pads each
file to 512 bytes, before compression.

`format_bytes` writes a byte count for people, in binary units (KiB, MiB,
GiB: powers of 1024).
"""

import gzip
import io
import os
import tarfile
from typing import Optional

_GZIP_LEVEL = 9


class Size:
  """Bytes on disk (`raw`) and after gzip (`gzipped`).

  `measure(path, lazy=True)` leaves the gzipped size to its first read:
  gzip -9 streams every byte (about half a minute for a 134 M-parameter
  SavedModel), which an export should cost only when someone reads it.
  """

  def __init__(self, raw: int, gzipped: Optional[int] = None, path=None):
    if gzipped is None and path is None:
      raise ValueError('Size needs its gzipped size or the path to measure.')
    self.raw = raw
    self._gzipped = gzipped
    self._path = path

  @property
  def gzipped(self) -> int:
    if self._gzipped is None:
      if not os.path.exists(self._path):
        raise FileNotFoundError(
          f'Cannot measure the gzipped size of {self._path!r}: it was moved '
          'or removed; read it before moving the output.'
        )
      self._gzipped = gzipped_size(self._path)
    return self._gzipped

  def __eq__(self, other):
    if not isinstance(other, Size):
      return NotImplemented
    return (self.raw, self.gzipped) == (other.raw, other.gzipped)

  def __repr__(self):
    gzipped = 'unmeasured' if self._gzipped is None else self._gzipped
    return f'Size(raw={self.raw}, gzipped={gzipped})'


class _CountingSink(io.RawIOBase):
  """A write-only stream that only counts the bytes written to it."""

  def __init__(self):
    super().__init__()
    self.count = 0

  def writable(self):
    return True

  def write(self, data):
    self.count += len(data)
    return len(data)


def raw_size(path: str) -> int:
  """Bytes of a file, or of every regular file under a directory."""
  if not os.path.isdir(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(p) for p in _files(path))


def gzipped_size(path: str) -> int:
  """Bytes of `gzip -9` of a file, or of a deterministic tar of a directory."""
  sink = _CountingSink()
  with gzip.GzipFile(
    fileobj=sink, mode='wb', compresslevel=_GZIP_LEVEL, mtime=0
  ) as stream:
    if os.path.isdir(path):
      with tarfile.open(
        fileobj=stream, mode='w|', format=tarfile.USTAR_FORMAT
      ) as tar:
        for file_path in _files(path):
          info = tar.gettarinfo(
            file_path, arcname=os.path.relpath(file_path, path)
          )
          info.mtime = info.uid = info.gid = 0
          info.uname = info.gname = ''
          info.mode = 0o644
          with open(file_path, 'rb') as f:
            tar.addfile(info, f)
    else:
      with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
          stream.write(chunk)
  return sink.count


def measure(path: str, lazy: bool = False) -> Size:
  """The `Size` of a file or directory (gzipped when first read if `lazy`)."""
  if lazy:
    return Size(raw=raw_size(path), path=path)
  return Size(raw=raw_size(path), gzipped=gzipped_size(path))


_UNITS = ('B', 'KiB', 'MiB', 'GiB')


def format_bytes(n: int, unit: Optional[str] = None) -> str:
  """`n` bytes in binary units: '512 B', '849.83 KiB', '12.79 MiB'.

  Args:
    n: a byte count.
    unit: one of 'B', 'KiB', 'MiB', 'GiB' to always use it; None picks the
      largest unit that keeps the number at 1 or more (up to GiB).

  Returns:
    The count with two decimals (none for bytes) and its unit.

  Raises:
    ValueError: `unit` is not one of those.
  """
  if unit is None:
    power = 0
    while power < len(_UNITS) - 1 and n >= 1024 ** (power + 1):
      power += 1
  elif unit in _UNITS:
    power = _UNITS.index(unit)
  else:
    raise ValueError(f'Unknown unit {unit!r}; use one of {_UNITS}.')
  if power == 0:
    return f'{n:.0f} B'
  return f'{n / 1024**power:.2f} {_UNITS[power]}'


def _files(directory):
  """Regular files under `directory`, sorted by relative path."""
  found = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    found.extend(
      os.path.join(root, name)
      for name in files
      if os.path.isfile(os.path.join(root, name))
    )
  return sorted(found, key=lambda p: os.path.relpath(p, directory))
