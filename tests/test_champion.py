"""The champion rule (tasks.champion.is_better): direction, strictness, the first version, NaN."""

from __future__ import annotations

import math

import pytest

from tasks.champion import is_better


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_first_version_is_always_champion(higher_is_better):
    assert is_better(0.5, None, higher_is_better) is True
    assert is_better(math.nan, None, higher_is_better) is True  # nothing to compare with


@pytest.mark.parametrize(
    "value, best, higher_is_better, expected",
    [
        (0.9, 0.8, True, True),  # accuracy went up
        (0.7, 0.8, True, False),  # accuracy went down
        (0.01, 0.02, False, True),  # MSE went down
        (0.03, 0.02, False, False),  # MSE went up
        (-1.0, 0.0, False, True),  # signs do not matter
        (1.0, 0.0, True, True),
        (0.0, 1.0, True, False),
        (1.0, 0.0, False, False),
    ],
)
def test_direction(value, best, higher_is_better, expected):
    assert is_better(value, best, higher_is_better) is expected


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_tie_keeps_the_champion(higher_is_better):
    assert is_better(0.25, 0.25, higher_is_better) is False
    assert is_better(0.0, 0.0, higher_is_better) is False  # 0 is a value, not "no champion"


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_nan_never_wins(higher_is_better):
    assert is_better(math.nan, 0.5, higher_is_better) is False
