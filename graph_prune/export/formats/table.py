"""The export formats, in the order they are written.

A SavedModel is written first: TFLite converts the staged SavedModel rather
than saving the model a second time (`driver.Workspace.saved_model_dir`).
"""

from graph_prune.export.formats import frozen_graph
from graph_prune.export.formats import keras
from graph_prune.export.formats import saved_model
from graph_prune.export.formats import tflite

# Format name -> `base.Format`, in writing order.
FORMATS = {
  f.name: f
  for f in (
    saved_model.FORMAT,
    frozen_graph.FORMAT,
    tflite.FORMAT,
    keras.FORMAT,
  )
}
