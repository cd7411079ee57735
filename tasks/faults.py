"""Deterministic fault injection for tests: ``GALAXY_FAIL_AFTER_EPOCH=N`` kills a training process after epoch N.

The process ends with ``os._exit`` (no cleanup, no MLflow run end, like a SIGKILL) right after epoch N's
checkpoint is written, so kill-and-resume tests need no timing races.
"""

from __future__ import annotations

import os

ENV = "GALAXY_FAIL_AFTER_EPOCH"
EXIT_CODE = 86  # distinctive: not 1 (an exception), 2 (a user error) or 128 + a signal number


def fail_after_epoch(epoch: int) -> None:
    """Exit at once, with EXIT_CODE, when ``$GALAXY_FAIL_AFTER_EPOCH`` names this (1-based) epoch."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return
    try:
        target = int(value)
    except ValueError:
        raise ValueError(f"{ENV}={value!r} is not an epoch number") from None
    if target == int(epoch):
        os._exit(EXIT_CODE)
