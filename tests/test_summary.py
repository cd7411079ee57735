"""The flow summary's metric text: a number with _lo / _hi beside it is one 'name value [lo, hi]' entry."""

from __future__ import annotations

from tasks.summary import metrics_text


def test_intervals_fold_into_their_number_and_lone_bounds_stay():
    metrics = {"acc": 0.5, "acc_lo": 0.4, "acc_hi": 0.625, "bits": 5.0, "only_lo": 3.0}
    assert metrics_text(metrics) == "acc 0.5 [0.4, 0.625], bits 5, only_lo 3"
