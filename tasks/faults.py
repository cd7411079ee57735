"""Deterministic fault injection: ``GALAXY_FAIL_AFTER_EPOCH=N`` ends a training stage abruptly after epoch N.

The training stages call ``after_epoch(epoch)`` once an epoch is finished and its checkpoint (if the stage
keeps one) is on disk. When the variable names that epoch, the process ends at once through ``os._exit``:
no exception, no ``finally`` blocks, no atexit handlers, no MLflow run end, unflushed output lost, as a
SIGKILL would leave things. The exit code is ``EXIT_CODE``, so a test can tell the injected fault from a
crash. Tests use it instead of racing a poller against a running process; nothing sets it in normal use.
"""

from __future__ import annotations

import os

ENV = "GALAXY_FAIL_AFTER_EPOCH"
EXIT_CODE = 86  # distinctive: not 1 (an exception), 2 (a user error) or 128 + a signal number


def after_epoch(epoch: int, metrics: dict | None = None) -> None:
    """End the process with EXIT_CODE if $GALAXY_FAIL_AFTER_EPOCH equals ``epoch`` (1-based); else do nothing.

    Its signature fits the trainers' ``on_epoch_end(epoch, metrics)`` callbacks; it returns None (go on).
    """
    value = os.environ.get(ENV, "").strip()
    if not value:
        return
    try:
        target = int(value)
    except ValueError:
        raise ValueError(f"{ENV}={value!r} is not an epoch number") from None
    if target == epoch:
        os._exit(EXIT_CODE)


def logging_then_failing(log):
    """Wrap a ``log(metrics, epoch)`` callback of a loop that logs once per epoch: log, then ``after_epoch``."""

    def wrapped(metrics: dict, step: int) -> None:
        log(metrics, step)
        after_epoch(step, metrics)

    return wrapped
