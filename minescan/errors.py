"""The root of minescan's exception tree.

Every fault minescan detects in user input (a raster, a model, a path, a flag)
raises a subclass of :class:`MinescanError` whose message is one line naming
the offending value.  The command line prints that line and exits non-zero;
anything else that escapes is a bug and keeps its traceback.
"""


class MinescanError(Exception):
    """A fault in user input, reported as one line."""
