"""Export formats: one module per format, one row each in `table.FORMATS`.

    saved_model.py   a SavedModel directory (weights in variables/)
    frozen_graph.py  contrib's all-constant GraphDef of one signature (.pb)
    tflite.py        a checked TFLite flatbuffer (quantized, sparse encoding)
    keras.py         a `.keras` file of the `strip_keras` clone

Each has one report type (with the output's `path` and `size`) and the
three steps of `base.Format`; `driver.write` writes the formats asked for,
all or nothing. A new format is one new module and one row of the table.
"""
