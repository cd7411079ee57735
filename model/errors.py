"""The one exception type for problems a user can fix (bad files, bad arguments).

The CLI prints ``str(err)`` as a single line and exits non-zero; any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, reported as one line naming the thing and the problem."""

    def __init__(self, where: str | Path | None, problem: str) -> None:
        self.where = str(where) if where is not None else None
        self.problem = problem
        super().__init__(f"{self.where}: {problem}" if self.where else problem)
