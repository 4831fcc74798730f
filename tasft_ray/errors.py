"""The error every layer raises for bad input, and the one-line rule its messages follow.

A :class:`UserError` is the user's to fix (a config key, a file, a run id): the commands print
its message as one line and exit with code 2. Anything else is a programming error and keeps its
traceback. Lives below everything else so that every layer, down to the data readers, can raise
it without importing the config.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: the CLIs print its one-line message and exit with code 2."""


def one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace (and cut at ``limit``) so a foreign error message cannot break the
    one-line contract of a :class:`UserError`."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
