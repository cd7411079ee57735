"""When a Prefect task retries: on I/O and network errors a second try can fix, never on user errors or bugs."""

from __future__ import annotations

import sqlite3

from model.errors import UserError

TRANSIENT = (OSError, ConnectionError, TimeoutError, sqlite3.OperationalError)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth another try (a busy database, a dropped connection, a full disk freed later)."""
    return isinstance(exc, TRANSIENT) and not isinstance(exc, UserError)


def retry_on_io(task, task_run, state) -> bool:
    """A Prefect ``retry_condition_fn``: retry only transient I/O failures."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises the task's exception here
        return is_transient(exc)
    return False
