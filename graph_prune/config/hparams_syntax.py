"""The spec string grammar of `hparams`: clauses, lists and map entries.

Pure string functions with no knowledge of the hparams' fields: splitting a
spec into `name=value` clauses, scanning `[a,b,c]` lists with bracketed and
escaped commas, and parsing the `regex:value` entries of the maps. Each
raises an `HParamsError` naming the offending text and the fix.
"""

import re
from typing import Optional, Tuple

from graph_prune import errors

CLAUSE_NAME_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=')
OPEN = '([{'
CLOSE = ')]}'
# Numbers are ASCII, as in contrib's spec strings: Python's int() and float()
# would also take '1_000' and full-width or Arabic-Indic digits.
INT_RE = re.compile(r'\s*[+-]?[0-9]+\s*')
FLOAT_RE = re.compile(
  # One way to match each digit run (no `[0-9]+\.?[0-9]*`): a long
  # non-number must fail in linear time, not by backtracking.
  r'\s*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?'
  r'|inf|infinity|nan)\s*',
  re.IGNORECASE,
)
# Ints become int64 tensors (steps, frequencies, block sizes) when traced.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# How much of a long value an error message quotes.
EXCERPT_CHARS = 80


def excerpt(text: str, at: int = 0) -> str:
  """`repr` of at most `EXCERPT_CHARS` of `text` around position `at`."""
  if len(text) <= EXCERPT_CHARS:
    return repr(text)
  start = max(0, min(at - EXCERPT_CHARS // 2, len(text) - EXCERPT_CHARS))
  cut = text[start : start + EXCERPT_CHARS]
  before = f'...({start} chars)' if start else ''
  after_count = len(text) - start - len(cut)
  after = f'...({after_count} more chars)' if after_count else ''
  return f'{before}{cut!r}{after}'


def check_int64(name: str, value: int) -> int:
  """`value`, or an error if it does not fit the int64 it becomes."""
  if not INT64_MIN <= value <= INT64_MAX:
    raise errors.HParamValueError(
      f'Hparam {name}={excerpt(str(value))} is out of range: it must fit a '
      f'64-bit integer (at most {INT64_MAX}).'
    )
  return value


def split_clauses(spec: str):
  """Yields (name, raw value) of each clause; raw is a str or list of str."""
  pos = 0
  n = len(spec)
  while pos < n:
    if spec[pos:].strip() == '':
      return
    m = CLAUSE_NAME_RE.match(spec, pos)
    if not m:
      bad = spec[pos:].split(',')[0]
      raise errors.HParamSyntaxError(
        f'Malformed clause {excerpt(bad)} at position {pos} of '
        f'{excerpt(spec, pos)}; '
        'each clause must be name=value, separated by commas.'
      )
    name = m.group(1)
    pos = m.end()
    while pos < n and spec[pos] == ' ':
      pos += 1
    if pos < n and spec[pos] == '[':
      items, pos = scan_list(spec, pos, name)
      raw = items
    else:
      end = spec.find(',', pos)
      end = n if end < 0 else end
      raw = spec[pos:end].strip()
      if '[' in raw or ']' in raw or '=' in raw:
        raise errors.HParamSyntaxError(
          f'Malformed value {excerpt(raw)} of hparam {name!r} in '
          f'{excerpt(spec, pos)}; a list '
          'must start with "[" and end with "]", and clauses are separated '
          'by commas.'
        )
      pos = end
    while pos < n and spec[pos] == ' ':
      pos += 1
    if pos < n:
      if spec[pos] != ',':
        raise errors.HParamSyntaxError(
          f'Expected "," after the value of hparam {name!r} at position '
          f'{pos} of {excerpt(spec, pos)}, found {spec[pos]!r}.'
        )
      pos += 1
      if spec[pos:].strip() == '':
        raise errors.HParamSyntaxError(
          f'Trailing comma at the end of {excerpt(spec, len(spec))}; remove it.'
        )
    yield name, raw


def scan_list(spec: str, pos: int, name: str):
  """Scans `[a,b,...]` starting at spec[pos] == '['; returns (items, end)."""
  items, current, depth = [], [], 0
  i = pos + 1
  while i < len(spec):
    ch = spec[i]
    if ch == '\\' and i + 1 < len(spec):
      current.append(spec[i : i + 2])
      i += 2
      continue
    if ch in OPEN:
      depth += 1
    elif ch in CLOSE:
      if depth == 0:
        if ch != ']':
          break
        items.append(''.join(current).strip())
        items = [item for item in items if item]
        return items, i + 1
      depth -= 1
    elif ch == ',' and depth == 0:
      items.append(''.join(current).strip())
      current = []
      i += 1
      continue
    current.append(ch)
    i += 1
  raise errors.HParamSyntaxError(
    f'Unbalanced brackets in the list value of hparam {name!r} in '
    f'{excerpt(spec, pos)}; write lists as [a,b,c] with balanced (), [] '
    'and {}.'
  )


def parse_m_by_n(raw: str) -> Tuple[int, int]:
  m = re.fullmatch(r'\s*([0-9]+)\s*:\s*([0-9]+)\s*', raw)
  if not m:
    raise errors.HParamValueError(
      f'Hparam sparsity_m_by_n must be N:M with two whole numbers, such as '
      f'2:4, got {raw!r}.'
    )
  return tuple(
    check_int64('sparsity_m_by_n', int(g)) for g in (m.group(1), m.group(2))
  )


def split_entry(field: str, entry: str) -> Tuple[str, str]:
  regex, sep, value = entry.rpartition(':')
  if not sep or not regex:
    raise errors.HParamSyntaxError(
      f'Malformed {field} entry {entry!r}; write regex:value, e.g. '
      f'{MAP_EXAMPLE[field]}.'
    )
  return regex, value.strip()


MAP_EXAMPLE = {
  'weight_sparsity_map': '[conv1:0.8,.*kernel:0.6]',
  'block_dims_map': '[dense1:4x4,dense2:1x16]',
  'map': 'regex:value',
}


def parse_map_sparsity(entry: str) -> float:
  value = split_entry('weight_sparsity_map', entry)[1]
  if not FLOAT_RE.fullmatch(value):
    raise errors.HParamTypeError(
      f'weight_sparsity_map entry {excerpt(entry)} has sparsity '
      f'{excerpt(value)}, which is not a number in ASCII digits; write '
      'regex:0.8.'
    )
  sparsity = float(value)
  if not 0.0 <= sparsity < 1.0:
    raise errors.HParamValueError(
      f'weight_sparsity_map entry {entry!r} has sparsity {sparsity}; it '
      'must be in [0, 1).'
    )
  return sparsity


def parse_block_dims(field: str, text: str) -> Tuple[int, int]:
  value = split_entry(field, text)[1]
  m = re.fullmatch(r'(-?[0-9]+)x(-?[0-9]+)', value)
  if not m:
    raise errors.HParamValueError(
      f'{field} entry {text!r} has block {value!r}; write HxW with two '
      'whole numbers, e.g. 4x4 or 1x-1.'
    )
  dims = tuple(check_int64(field, int(g)) for g in (m.group(1), m.group(2)))
  for d in dims:
    if d < 1 and d != -1:
      raise errors.HParamValueError(
        f'{field} entry {text!r} has block dimension {d}; each dimension '
        'must be >= 1, or -1 for the whole dimension.'
      )
  return dims


def check_regex(field: str, regex: str, entry: str):
  try:
    re.compile(regex)
  except re.error as e:
    raise errors.HParamValueError(
      f'{field} entry {excerpt(entry)} has the regex {excerpt(regex)}, '
      f'which does not compile ({e}); escape special characters with a '
      'backslash.'
    ) from None
  except (OverflowError, RecursionError):
    # A repeat count beyond Python's limit (a{99999999999}) or groups nested
    # deeper than its parser recurses.
    raise errors.HParamValueError(
      f'{field} entry {excerpt(entry)} has the regex {excerpt(regex)}, which '
      'is too large for Python to compile (a repeat count over 4294967295 '
      'or groups nested too deeply); write a simpler regex.'
    ) from None


def top_level(text: str) -> Optional[str]:
  """`text` with bracketed and escaped parts removed; None if unbalanced."""
  out, stack, i = [], [], 0
  while i < len(text):
    ch = text[i]
    if ch == '\\':
      if i + 1 == len(text):
        return None  # A trailing backslash would escape the list's ']'.
      i += 2
      continue
    if ch in OPEN:
      stack.append(CLOSE[OPEN.index(ch)])
    elif ch in CLOSE:
      if not stack or stack.pop() != ch:
        return None
    elif not stack:
      out.append(ch)
    i += 1
  return None if stack else ''.join(out)


def parse_value(name: str, kind: type, raw):
  """Converts a raw clause value of hparam `name` to `kind` (no range checks).

  `kind` is the hparam's type: list, bool, int, float, tuple (N:M) or str.
  """
  if kind is list:
    if isinstance(raw, str):
      # contrib accepted a single value for a list hparam.
      raw = [raw] if raw else []
    return tuple(raw)
  if isinstance(raw, list):
    raise errors.HParamTypeError(
      f'Hparam {name!r} takes a single {kind.__name__}, got the list '
      f'{raw!r}; drop the brackets.'
    )
  if kind is bool:
    lowered = raw.lower()
    if lowered in ('true', '1'):
      return True
    if lowered in ('false', '0'):
      return False
    raise errors.HParamTypeError(
      f'Hparam {name!r} takes a bool (true or false), got {raw!r}.'
    )
  if kind is int:
    if not INT_RE.fullmatch(raw):
      raise errors.HParamTypeError(
        f'Hparam {name!r} takes an int, got {excerpt(raw)}; write a whole '
        'number in ASCII digits such as 100.'
      )
    return check_int64(name, int(raw))
  if kind is float:
    if not FLOAT_RE.fullmatch(raw):
      raise errors.HParamTypeError(
        f'Hparam {name!r} takes a float, got {excerpt(raw)}; write a number '
        'in ASCII digits such as 0.9.'
      )
    return float(raw)
  if name == 'sparsity_m_by_n':
    return parse_m_by_n(raw) if raw else None
  return raw
