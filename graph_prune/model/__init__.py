"""The pruned model and its edges with TensorFlow and Keras.

`pruned_model` (`apply_pruning`, `PrunedModel`) owns masks, thresholds and
the update; `pruned_weights` and `plans` say what each weight gets;
`tracing` turns a model or function into a traced graph; `keras_fit`,
`distribute`, `saved_model_conventions` are the Keras, tf.distribute and
SavedModel edges; `data_inputs` reads example data against a signature
(`signature_inputs`: what one input accepts); `mask_update` is the update
of masks, thresholds and the step, all or nothing.
"""
