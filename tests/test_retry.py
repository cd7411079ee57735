"""Retries are for transient I/O, not for user errors or bugs."""

import sqlite3

from model.errors import UserError
from tasks.retry import is_transient


def test_only_transient_errors_are_retried():
    assert is_transient(OSError("disk busy")) and is_transient(ConnectionError("reset"))
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(UserError("x.h5", "missing key(s) ans"))
    assert not is_transient(ValueError("loss is nan"))
    assert not is_transient(RuntimeError("bug"))
