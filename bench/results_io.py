"""Writing a benchmark's results: JSON under bench/results/ (not committed)."""

import json
import os


def write(path: str, results) -> None:
  """Writes `results` as indented JSON to `path`, creating its folder."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'\nwrote {path}')
