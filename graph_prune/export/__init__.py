"""Export: strip a pruned model for inference, write and check what it writes.

`strip` folds the masks into the weights (`stripped_model`) and `verify`
checks the result. Each output format (SavedModel, frozen graph, TFLite,
`.keras`) is one module of `formats/` with one report type, and
`formats/driver.py` writes the formats asked for all or nothing (through
`staging`); the public entry points (`export_saved_model`,
`strip_saved_model`, `export_tflite`) map their arguments to it. `report`
says what stripping did and what it wrote, `sizes` measures outputs.
"""
