"""Masks as `insert_masks` receives them: keyed by weight name, checked.

The caller keys masks by weight name, by variable (a `tf.Variable`, its
`ref()`, the Keras 3 variable around it, a distributed variable); the pass
works by the names the scan gave (`scan.VariableInfo.name`). Each mask is
checked against its weight when `insert_masks` is called, before any graph
is rewritten.
"""

import tensorflow as tf

from graph_prune import errors
from graph_prune.passes import replicas
from graph_prune.passes import scan


def by_name(masks, infos, what):
  """`masks` keyed by weight name.

  Args:
    masks: weight -> mask; a key is a weight name, a `tf.Variable` or its
      `ref()`, a Keras 3 variable or a distributed variable.
    infos: the `scan.VariableInfo`s of the traced graph.
    what: the traced computation, for messages.

  Raises:
    MaskError: a key is no variable the graph captures, or two keys name the
      same weight.
  """
  name_of_handle = {id(info.variable.handle): info.name for info in infos}
  by_name = {}
  for key, mask in masks.items():
    if not isinstance(key, str):
      variable = key.deref() if hasattr(key, 'deref') else key
      if not isinstance(
        variable, (tf.Variable, tf.distribute.DistributedValues)
      ):
        variable = getattr(variable, 'value', variable)  # Keras 3 variable
      # A distributed variable: the graph captured one of its copies.
      names = [
        name_of_handle.get(id(getattr(copy, 'handle', None)))
        for copy in replicas.local_copies(variable)
      ]
      names = [name for name in names if name is not None]
      if not names:
        raise errors.MaskError(
          f'Mask key {key!r} is not a variable captured by {what}; key masks '
          'by weight name or by variable.ref().'
        )
      key = names[0]
    if key in by_name:
      raise errors.MaskError(f'Two masks given for weight {key!r}.')
    by_name[key] = mask
  return by_name


def readonly(infos, masks):
  """Variables the graph only reads (unit parameters may be any of them)."""
  return {
    info.name: scan.WeightUse(
      info.variable,
      info.name,
      tuple(info.variable.shape.as_list()),
      info.variable.dtype,
      (),
    )
    for info in infos
    if info.name not in masks
    and info.variable.trainable
    and not any(u.kind == 'write' for u in info.uses)
  }


def check(masks, candidates, what):
  """Raises unless each mask is of a candidate weight's shape and dtype.

  Raises:
    MaskError: naming the weight and the fix.
  """
  for name, mask in masks.items():
    weight = candidates.get(name)
    if weight is None:
      raise errors.MaskError(
        f'{name!r} is not a prunable weight of {what}; the prunable weights '
        f'are {sorted(candidates)}.'
      )
    if tuple(mask.shape.as_list()) != weight.shape:
      raise errors.MaskError(
        f'The mask for {name!r} has shape {tuple(mask.shape.as_list())} '
        f'but the weight has shape {weight.shape}; create it with the '
        "weight's shape."
      )
    if mask.dtype != weight.dtype:
      raise errors.MaskError(
        f'The mask for {name!r} has dtype {mask.dtype.name} but the weight '
        f"has dtype {weight.dtype.name}; create it with the weight's dtype."
      )
