"""The root of minescan's exception tree.

Every fault minescan detects in user input (a raster, a model, a path, a flag)
raises a subclass of :class:`MinescanError` whose message is one line naming
the offending value.  The command line prints that line and exits non-zero;
anything else that escapes is a bug and keeps its traceback.
"""


class MinescanError(Exception):
    """A fault in user input, reported as one line."""


class SettingError(MinescanError):
    """A setting's value that cannot be used, named as the Python API spells it (``score_threshold``).

    :meth:`describe` says the same with another name for the setting: the command line passes the flag
    the user typed (``--score-threshold``), so library messages never talk in flags.
    """

    connector = ": "  # between the value and the requirement

    def __init__(self, setting: str, value: object, requirement: str) -> None:
        self.setting, self.value, self.requirement = setting, value, requirement
        super().__init__(self.describe(setting))

    def describe(self, name: str) -> str:
        """The message with the setting called ``name``."""
        return f"{name} {self.value!r}{self.connector}{self.requirement}"
