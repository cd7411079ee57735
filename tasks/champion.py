"""The champion rule: whether a new model version takes the registry's 'champion' alias.

Kept apart from ``tasks.registry.promote`` (which reads and writes the MLflow registry) so the rule itself
is plain Python that tests and the mutation tester can check without a tracking store.
"""

from __future__ import annotations


def is_better(value: float, best: float | None, higher_is_better: bool) -> bool:
    """True when ``value`` strictly beats the champion's ``best`` in the metric's direction, or there is none.

    A tie keeps the current champion; NaN never beats anything (every comparison with it is False).
    """
    if best is None:
        return True
    return value > best if higher_is_better else value < best
