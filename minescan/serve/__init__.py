"""The service: ``minescan serve`` (Open Inference Protocol and scene jobs); needs the ``serve`` extra."""
