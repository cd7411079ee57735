"""The champion rule: whether a new model version takes the registry's 'champion' alias.

Kept apart from ``tasks.registry.promote`` (which reads and writes the MLflow registry) so the rule itself
is plain Python that tests and the mutation tester can check without a tracking store.

A metric compares two versions only within one *scope*, a run tag naming what the number was measured on: the
prepared data (``data_key``) for the VQ-VAE's validation MSE and the judge's validation balanced accuracy, the
tokenizer (``tokenizer``, the VQ-VAE run) for a sampler's validation bits/token, since another tokenizer's tokens
are other symbols. Across scopes, ``other_scope_wins`` decides: a model of newer data takes the alias (the champion
serves the data being worked on), while a sampler on another tokenizer waits for the evaluation, which compares
samplers by what the judge says of their samples (``tasks.registry.promote_sampler_by_samples``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChampionRule:
    """How a new version competes for the alias: its value of ``metric``, and within which scope that compares."""

    metric: str
    value: float
    higher_is_better: bool
    scope_tag: str | None = None  # run tag that must match the champion's for the metric to compare
    other_scope_wins: bool = True  # what happens when it does not


def is_better(value: float, best: float | None, higher_is_better: bool) -> bool:
    """True when ``value`` strictly beats the champion's ``best`` in the metric's direction, or there is none.

    A tie keeps the current champion; NaN never beats anything (every comparison with it is False).
    """
    if best is None:
        return True
    return value > best if higher_is_better else value < best


def wins(rule: ChampionRule, champion_value: float | None, champion_scope: str | None, scope: str | None) -> bool:
    """Whether a new version (``scope``: its value of the rule's scope tag) beats an existing champion."""
    if rule.scope_tag is not None and (champion_scope is None or champion_scope != scope):
        return rule.other_scope_wins
    return is_better(rule.value, champion_value, rule.higher_is_better)
