"""Deterministic fault injection for tests: ``GALAXY_FAIL_AFTER_EPOCH=N`` kills a training process after epoch N.

The process ends with ``os._exit`` (no cleanup, no MLflow run end, like a SIGKILL) right after epoch N's
checkpoint is written, so kill-and-resume tests need no timing races.
"""

from __future__ import annotations

import os

EXIT_CODE = 86  # what a process killed by fault injection exits with


def fail_after_epoch(epoch: int) -> None:
    """Exit at once, with EXIT_CODE, when ``GALAXY_FAIL_AFTER_EPOCH`` names this epoch."""
    target = os.environ.get("GALAXY_FAIL_AFTER_EPOCH")
    if target and int(target) == int(epoch):
        os._exit(EXIT_CODE)
