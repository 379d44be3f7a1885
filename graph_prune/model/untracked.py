"""A holder that hides a value from `tf.Module` tracking and SavedModel."""


class Untracked:
  """Holds a value out of sight of tf.Module tracking and SavedModel.

  A `tf.function` with an input signature held by a module is a signature
  candidate: next to the module's `__call__`, SavedModel would see two and
  write no `serving_default`. Helper functions, the traced Keras model and
  lists kept for bookkeeping are held through this instead.
  """

  __slots__ = ('value',)

  def __init__(self, value):
    self.value = value
