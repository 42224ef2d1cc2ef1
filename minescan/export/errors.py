"""The exception raised when a model cannot be exported or verified.

Export faults are user input faults (a path without a SavedModel, a signature
outside the detector contract, a missing optional dependency), so they share
:class:`minescan.errors.MinescanError`'s one-line contract: the message names
the offending value and the command line prints it without a traceback.
"""

from minescan.errors import MinescanError


class ExportError(MinescanError):
    """A SavedModel or ONNX file cannot be exported or verified; one line naming why."""
