"""The `.keras` format: the `strip_keras` clone saved by Keras itself.

    Request('keras', '/out/model.keras', 'keras_path')

`strip_keras` (export/keras_model.py) clones the pruned Keras model with
its masked values; this format saves that clone as a `.keras` file, which
loads with plain Keras (no graph_prune object inside). It needs the live
`PrunedModel` of a Keras model (`Source.pruned`): a SavedModel input has no
Keras architecture to clone.
"""

import dataclasses
import os
from typing import Optional

from graph_prune import errors
from graph_prune.export import keras_model
from graph_prune.export import sizes
from graph_prune.export.formats import base

NAME = 'keras'
_SUFFIX = '.keras'


@dataclasses.dataclass(frozen=True)
class KerasReport:
  """What the `.keras` format wrote.

  Attributes:
    path: the `.keras` file.
    size: its `sizes.Size`.
    keras: the Keras package of the clone ('keras' or 'tf_keras').
  """

  path: Optional[str]
  size: Optional[sizes.Size]
  keras: str


@dataclasses.dataclass(frozen=True)
class Options:
  """Attributes.

  check: compare the clone with the pruned model first.
  shrink: rebuild the layers without the units shrink removes
    (`strip_keras(shrink=True)`).
  """

  check: bool = True
  shrink: bool = False


def _check(request: base.Request) -> None:
  if not request.path.endswith(_SUFFIX):
    raise errors.OutputPathError(
      f'{request.name}={request.path!r} must end in {_SUFFIX} (Keras saves '
      f'its format only under that suffix); e.g. {request.path + _SUFFIX!r}.'
    )


def _prepare(source: base.Source, options: Options):
  pruned = base.require(source.pruned, 'the PrunedModel of a Keras model', NAME)
  return keras_model.strip_keras(
    pruned, check=options.check, shrink=options.shrink
  )


def _write(clone, path: str, workspace) -> KerasReport:
  """Saves under a `.keras` name beside the staging path, then renames it.

  Keras refuses a path without the suffix, which the staging path lacks.
  """
  del workspace
  named = path + _SUFFIX
  try:
    clone.save(named)
    os.replace(named, path)
  finally:
    if os.path.lexists(named):
      os.remove(named)
  return KerasReport(None, None, type(clone).__module__.split('.')[0])


FORMAT = base.Format(
  name=NAME,
  is_file=True,
  label='Keras (.keras)',
  options=Options,
  check=_check,
  prepare=_prepare,
  write=_write,
)
