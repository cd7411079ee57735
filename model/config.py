"""The one way to define a model's settings: a dataclass config, a preset registry, and strict overrides.

Each of the three models (VQ-VAE, prior, judge) has ONE ``@dataclass`` config that holds its architecture
and its training settings, and a ``PRESETS: dict[str, Config]`` registry of named instances (like DiT's
``DiT_models``). ``from_preset(PRESETS, name, **overrides)`` is the only way a preset becomes a config.
Fields listed in a config's ``TRAINING`` class variable are how the model is trained; every other field
is its architecture (``architecture()``), which is what a checkpoint must match to be resumed or loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from model.errors import UserError

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for ``@dataclass`` configs: plain-value ``to_dict`` / strict ``from_dict`` and the architecture part."""

    TRAINING: ClassVar[tuple[str, ...]] = ()  # names of the fields that only say how the model is trained

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples): safe for ``torch.load(weights_only=True)`` and MLflow params."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    def architecture(self) -> dict[str, Any]:
        """``to_dict()`` without the training fields: what a checkpoint's weights depend on."""
        return {k: v for k, v in self.to_dict().items() if k not in self.TRAINING}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Inverse of ``to_dict``; unknown keys are an error, lists go back to tuple fields."""
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise UserError(cls.__name__, f"unknown setting {unknown[0]!r}")
        kw = {k: tuple(v) if isinstance(v, list) and isinstance(known[k].default, tuple) else v for k, v in d.items()}
        return cls(**kw)


def from_preset(presets: dict[str, C], name: str, **overrides: Any) -> C:
    """A copy of ``presets[name]`` with fields overridden; an unknown preset or field is a UserError."""
    if name not in presets:
        kind = type(next(iter(presets.values()))).__name__
        raise UserError("preset", f"unknown {kind} preset {name!r}; choose one of {sorted(presets)}")
    base = presets[name]
    known = {f.name for f in fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError("preset", f"unknown {type(base).__name__} setting {unknown[0]!r} for preset {name!r}")
    return dataclasses.replace(base, **overrides)  # type: ignore[type-var]
