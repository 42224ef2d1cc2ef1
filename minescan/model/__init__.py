"""Pure values every stage shares: the model contract, typed model metadata, detections, labels.

Nothing here imports ONNX or ONNX Runtime, so the raster, scan and results
stages depend on these types without depending on an engine.
"""
