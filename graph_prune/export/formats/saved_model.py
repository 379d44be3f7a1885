"""The SavedModel format: the stripped model as a SavedModel directory.

    Request('saved_model', '/out/model', 'output_dir', Options(verify=True))

The weights stay variables (`variables/`, no size limit) and the signatures
are the stripped ones (with Keras 3's `serve` alias where the input had it,
`saved_model_conventions`). With `verify`, each written signature is run
beside the pruned SavedModel it came from on the same random inputs before
the output is renamed into place (`verify.verify_signatures`), so a wrong
fold never reaches the output path. Formats converted from a SavedModel
(TFLite) convert this staged one (`driver.Workspace.saved_model_dir`).
"""

import dataclasses
from typing import Optional, Tuple

from graph_prune.export import sizes
from graph_prune.export.formats import base
from graph_prune.export.verify import verify_signatures

NAME = 'saved_model'


@dataclasses.dataclass(frozen=True)
class SavedModelReport:
  """What the SavedModel format wrote.

  Attributes:
    path: the SavedModel directory.
    size: its `sizes.Size` (a directory's gzipped size is a .tar.gz's,
      measured when first read).
    signatures: the signature keys written.
    verified: whether each signature was checked against the input.
  """

  path: Optional[str]
  size: Optional[sizes.Size]
  signatures: Tuple[str, ...]
  verified: bool = False


@dataclasses.dataclass(frozen=True)
class Options:
  """Attributes: verify: check each signature against `Source.original`."""

  verify: bool = False


def _prepare(source: base.Source, options: Options):
  return source, options


def _write(prepared, path: str, workspace) -> SavedModelReport:
  source, options = prepared
  source.module.save(path)
  verified = options.verify and source.original is not None
  if verified:
    verify_signatures(source.original, path, source.signature_keys)
  workspace.saved_model_written(path)
  return SavedModelReport(None, None, source.signature_keys, verified)


FORMAT = base.Format(
  name=NAME,
  is_file=False,
  label='stripped SavedModel',
  options=Options,
  check=base.no_check,
  prepare=_prepare,
  write=_write,
  lazy_size=True,
)
