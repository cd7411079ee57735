"""What a sweep varies (``SweepSpace``) and what all its workers share (``SweepConfig``), as plain values.

Nothing here imports Optuna: ``SweepSpace.suggest`` takes anything with ``suggest_categorical`` (an
``optuna.Trial`` in a worker, an ``optuna.trial.FixedTrial`` in tests). Names: K codebook size, D embedding dim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from model.config import from_preset
from model.vqvae import PRESETS, lucidrains_defaults


class Suggests(Protocol):
    def suggest_categorical(self, name: str, choices: list) -> Any: ...


def _around(value: int, minimum: int) -> tuple[int, ...]:
    """value/4, value/2, value, 2*value (at least ``minimum``, deduplicated, ascending)."""
    return tuple(sorted({max(minimum, value * f // 4) for f in (1, 2, 4, 8)}))


@dataclass(frozen=True)
class SweepSpace:
    """The choices a sweep may make; every other setting comes from the preset (and the sweep's overrides)."""

    codebook_sizes: tuple[int, ...] = (64, 128, 256, 512)  # K choices (demo preset: K/4 .. 2K around 256)
    embedding_dims: tuple[int, ...] = (8, 16, 32, 64)  # D choices (demo preset: D/4 .. 2D around 32)
    quantizers: tuple[str, ...] = ("lucidrains",)  # "lucidrains" and/or "simple" (the article's straight-through VQ)
    anti_collapse: tuple[bool, ...] = (True, False)  # lucidrains: k-means init + dead-code replacement on / off
    cosine_sim: tuple[bool, ...] = (False, True)  # lucidrains: cosine-similarity code lookup on / off
    dead_code_threshold: int = 2  # threshold_ema_dead_code used when anti_collapse is on

    def __post_init__(self) -> None:
        for name in ("codebook_sizes", "embedding_dims", "quantizers", "anti_collapse", "cosine_sim"):
            values = tuple(getattr(self, name))
            if not values:
                raise ValueError(f"SweepSpace.{name} needs at least one choice")
            object.__setattr__(self, name, values)

    @classmethod
    def from_preset(cls, name: str = "demo", **overrides: Any) -> SweepSpace:
        """K and D choices at 1/4, 1/2, 1 and 2 times the preset's (after ``overrides``); other fields as given."""
        space_fields = {f.name for f in fields(cls)}
        mine = {k: v for k, v in overrides.items() if k in space_fields}
        model_cfg = from_preset(PRESETS, name, **{k: v for k, v in overrides.items() if k not in space_fields})
        sizes = dict(
            codebook_sizes=_around(model_cfg.codebook_size, 2), embedding_dims=_around(model_cfg.embedding_dim, 1)
        )
        return cls(**{**sizes, **mine})

    def suggest(self, trial: Suggests) -> dict[str, Any]:
        """Ask the trial for its choices; returns overrides of the VQ-VAE preset (``model.config.from_preset``)."""
        params: dict[str, Any] = {
            "codebook_size": trial.suggest_categorical("codebook_size", list(self.codebook_sizes)),
            "embedding_dim": trial.suggest_categorical("embedding_dim", list(self.embedding_dims)),
        }
        params["quantizer"] = quantizer = trial.suggest_categorical("quantizer", list(self.quantizers))
        if quantizer == "lucidrains":  # the anti-collapse options exist only for VectorQuantize
            anti = trial.suggest_categorical("anti_collapse", list(self.anti_collapse))
            params["kmeans_init"] = bool(anti)
            params["threshold_ema_dead_code"] = self.dead_code_threshold if anti else 0
            params["use_cosine_sim"] = bool(trial.suggest_categorical("cosine_sim", list(self.cosine_sim)))
        else:  # a preset's lucidrains-only options (e.g. the demo's k-means init) do not apply
            params.update(lucidrains_defaults())
        return params

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists), for the study's user attrs."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpace:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def describe(params: dict[str, Any], *, sizes: bool = True) -> str:
    """A short label for a trial's choices, e.g. 'K 256, D 32, k-means + dead-code, cosine'."""
    parts = [f"K {params['codebook_size']}", f"D {params['embedding_dim']}"] if sizes else []
    if params.get("quantizer", "lucidrains") == "simple":
        parts.append("simple ST-VQ")
    else:
        named = (("k-means + dead-code", "anti_collapse"), ("cosine", "cosine_sim"))
        options = [name for name, key in named if params.get(key)]
        parts.append(", ".join(options) if options else "EMA only")
    return ", ".join(parts)


@dataclass(frozen=True)
class SweepConfig:
    """What every worker of one sweep shares; stored in the study so that a worker needs only its name."""

    preset_name: str = "demo"  # model/train preset each trial starts from
    epochs: int | None = None  # epochs per trial (None: the preset's)
    limit: int | None = None  # first N training images per trial (None: all)
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed settings for every trial, before its own choices
    space: SweepSpace = field(default_factory=SweepSpace)  # what the trials choose
    parent_run_id: str | None = None  # MLflow run every trial's run nests under
    data_key: str | None = None  # the prepared data's content key: workers check they read the same data
    n_trials: int = 8  # N: workers stop once N trials are COMPLETE or PRUNED (W workers: up to N + W - 1)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["space"] = self.space.to_dict()
        d["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        d = dict(d)
        if "space" in d:
            d["space"] = SweepSpace.from_dict(d["space"])
        return cls(**d)
