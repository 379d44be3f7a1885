"""Scalar summaries TensorBoard reads, without the tensorboard package."""

import tensorflow as tf

# TensorBoard's scalar plugin reads summaries tagged with this metadata.
# tf.summary.scalar would do the same but needs the tensorboard package, which
# TensorFlow no longer installs; tf.summary.write is core TensorFlow.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
  plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name='scalars')
).SerializeToString()


def scalar(tag, value, step):
  """Writes `value` as a float32 scalar `tag` at `step` (default writer)."""
  return tf.summary.write(
    tag, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA
  )
