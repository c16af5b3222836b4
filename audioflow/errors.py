"""The base of every error that reports a problem with the user's data, parameters or files.

The CLI prints these as one clear message (exit 2) instead of a traceback; anything else is a
bug and keeps its traceback.
"""


class AudioflowError(Exception):
    pass


class NotValidatedError(AudioflowError, FileNotFoundError):
    """A stage that reads recordings was given a folder holding no passed validation."""


class ReliabilityError(AudioflowError, ValueError):
    """Inputs that cannot give the asked-for figure (named in the message): ``audioflow.reliability``
    and ``audioflow.bootstrap`` raise it."""
