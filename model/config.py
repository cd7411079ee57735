"""The one base of every dataclass config: a plain-value dict for checkpoints and MLflow, and back."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for ``@dataclass`` configs: ``to_dict`` (tuples become lists) and a strict ``from_dict``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples): safe for ``torch.load(weights_only=True)`` and MLflow params."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Inverse of ``to_dict``; unknown keys are an error, lists go back to tuple fields."""
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        kw = {k: tuple(v) if isinstance(v, list) and isinstance(known[k].default, tuple) else v for k, v in d.items()}
        return cls(**kw)


def route_overrides(overrides: dict[str, Any], *targets: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Send each override to the first field-name set that holds its key; returns (one dict per set, unknown keys)."""
    routed: list[dict[str, Any]] = [{} for _ in targets]
    unknown = []
    for key, value in overrides.items():
        for names, out in zip(targets, routed):
            if key in names:
                out[key] = value
                break
        else:
            unknown.append(key)
    return routed, unknown
