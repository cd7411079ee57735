"""Progress bars for long steps (stderr; silent when GALAXY_PROGRESS=0)."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def bar(total: int | None, desc: str, unit: str = "it") -> tqdm:
    """A tqdm bar on stderr that can be switched off for logs and tests."""
    disable = os.environ.get("GALAXY_PROGRESS", "1") == "0"
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
