"""The error every layer raises for bad input, and the one-line rule its messages follow.

A :class:`UserError` is the user's to fix (a config key, a file, a run id): the commands print
its message as one line and exit with code 2. Anything else is a programming error and keeps its
traceback. Lives below everything else so that every layer, down to the data readers, can raise
it without importing the config.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys


class UserError(ValueError):
    """Bad input from the user: the CLIs print its one-line message and exit with code 2."""


def one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace (and cut at ``limit``) so a foreign error message cannot break the
    one-line contract of a :class:`UserError`."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def find_user_error(exc: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``exc``, however Ray wrapped it, or None.

    Ray hands back an exception raised in a task, actor, Train worker or Tune trial wrapped in
    its own types: ``RayTaskError`` (``.cause``, and a copy whose class also derives from the
    original's, but whose text is the whole remote traceback), Train's ``WorkerGroupError``
    (``.worker_failures``, one per rank), ``ControllerError``, and plain chaining. They are
    searched by duck typing (every exception held in an attribute), so this layer never imports
    Ray. Where a wrapper kept only the remote traceback's text (Ray Data's
    ``UserCodeException`` loses its cause in transit), the error is rebuilt from the text's
    last ``tasft_ray...Error: message`` line.
    """
    todo, seen, texts = [exc], set(), []
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        # an ExceptionGroup has no __dict__ (vars() raises); it holds its errors in .exceptions
        values = [*getattr(e, "__dict__", {}).values(), getattr(e, "exceptions", None)]
        held = [v for v in values if isinstance(v, BaseException)]
        held += [
            x
            for v in values
            if isinstance(v, dict | list | tuple)
            for x in (v.values() if isinstance(v, dict) else v)
            if isinstance(x, BaseException)
        ]
        cause = getattr(e, "cause", None)
        if isinstance(e, UserError) and not isinstance(cause, BaseException):
            return e  # (a wrapper posing as the original defers to the original it holds)
        todo += held + [x for x in (e.__cause__, e.__context__) if x is not None]
        texts.append(str(e))
    for text in texts:
        found = _from_traceback_text(text)
        if found is not None:
            return found
    return None


_RAISED = re.compile(r"^(tasft_ray(?:\.\w+)+)\.(\w+): (.+)$", re.MULTILINE)


def _from_traceback_text(text: str) -> UserError | None:
    for module, name, message in reversed(_RAISED.findall(text)):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, UserError):
            return cls(message.strip())
    return None


def _is_user_error_record(record: logging.LogRecord) -> bool:
    """A record of Ray's own loggers about a user error (with its traceback): the CLI reports
    that error as one line, so these copies are noise."""
    if not record.name.startswith("ray"):
        return False
    if record.exc_info:
        exc = record.exc_info[1]
    elif record.levelno >= logging.WARNING:  # logged from inside an except block
        exc = sys.exc_info()[1]
    else:
        return False
    return exc is not None and find_user_error(exc) is not None


def quiet_user_errors() -> None:
    """Keep Ray's loggers (Data, Train, Tune, in the driver and in every Ray worker, where it
    runs as the runtime_env's worker_process_setup_hook) from printing a user error's traceback
    again and again; any other error keeps all its output. Idempotent."""
    if getattr(logging.Handler.handle, "_tasft_quiet", False):
        return
    original = logging.Handler.handle

    def handle(self: logging.Handler, record: logging.LogRecord) -> bool:
        return False if _is_user_error_record(record) else original(self, record)

    handle._tasft_quiet = True  # type: ignore[attr-defined]
    logging.Handler.handle = handle  # type: ignore[method-assign]
