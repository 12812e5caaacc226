"""Exceptions that carry a message meant for a person.

Every error that bad input can cause derives from :class:`NcbenchError`; the CLI prints its message on one
line and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NcbenchError(Exception):
    """Bad input: the message says what was expected, what arrived and how to fix it."""


class InputError(NcbenchError, ValueError):
    """An argument, array or file has the wrong value, shape or content."""


class UnknownNameError(NcbenchError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(NcbenchError):
    """A checkpoint is missing, corrupt, unsafe or does not fit the dataset."""
