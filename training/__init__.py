"""Training minescan's demo detector (needs the export extra: TensorFlow)."""
