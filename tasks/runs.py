"""The one resumable-run helper every training stage uses: run folder, MLflow run, checkpoint, registration.

A stage describes its run (stage name, experiment, identity, tags, params) and gets a ``TrainingRun``:

    run = TrainingRun("vqvae", EXPERIMENT, config, data, preset, data_params={"n_train": ...}, identity=(limit,))
    if run.complete:                       # an identical run already finished: register nothing new
        return run.complete
    with run:                              # a new MLflow run, or the one a killed process left behind
        with run.training("training vqvae") as hooks:   # progress bar, MLflow metrics, checkpoint, resume
            result = train_vqvae(config, train, val, hooks)
        ...log metrics and figures...
        return run.register("vqvae", artifacts, signature, example, "galaxy-vqvae", metrics, champion_by=...)

The folder ``runs/<stage>-<hash of the identity and the tracking store>/`` (``GALAXY_RUNS`` overrides
``runs/``) holds the checkpoint and ``run.json`` (the MLflow run id, and once registered the model
reference), so the same command after a kill carries on the same MLflow run from the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow

from model.config import Config
from model.data import PreparedData
from model.training import EpochEnd, Hooks
from model.utils import pick_device
from tasks import faults, registry, tracking
from tasks.cache import store_identity
from tasks.champion import ChampionRule
from tasks.progress import bar


def runs_dir() -> Path:
    """Where resumable checkpoints live: $GALAXY_RUNS, else ./runs."""
    return Path(os.environ.get("GALAXY_RUNS", "runs"))


def config_hash(*parts: Any) -> str:
    """A short stable hash of configs and data identity (names a resumable run folder)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class TrainingRun:
    """One resumable training run of a stage (see the module docstring)."""

    def __init__(
        self,
        stage: str,
        experiment: str,
        config: Config,
        data: PreparedData,
        preset: str,
        *,
        data_params: dict[str, Any],
        identity: tuple = (),
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        resume: bool = True,
        nested: bool = False,
        folder: str | Path | None = None,
    ) -> None:
        """A run of ``stage`` training ``config`` on ``data``; ``identity`` adds to what names its folder (the
        config, the data and the tracking store), ``params`` and ``tags`` to what the MLflow run records."""
        tracking.setup()
        self.stage, self.experiment, self.nested, self.resume = stage, experiment, nested, resume
        self.run_name = tracking.run_name(f"{stage}-{preset}", data.meta)
        device = pick_device(getattr(config, "device", None)).type
        self.tags = tracking.base_tags(data.meta, device, stage=stage, preset=preset, **(tags or {}))
        data_params = {"dir": str(data.root), "key": data.key, **data_params}
        self.params = {"model": config.to_dict(), "preset": preset, "data": data_params, **(params or {})}
        key = config_hash(config.to_dict(), data.key, identity, store_identity())
        self.folder = Path(folder) if folder is not None else runs_dir() / f"{stage}-{key}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint = self.folder / "checkpoint.pt"
        self.state_file = self.folder / "run.json"
        self.state: dict[str, Any] = {}
        if not resume:
            self.checkpoint.unlink(missing_ok=True)
            self.state_file.unlink(missing_ok=True)
        elif self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
        self.run_id: str | None = None
        self._active = None

    @property
    def complete(self) -> registry.ModelRef | None:
        """The model reference of an identical run that already finished and registered, else None."""
        ref = self.state.get("model_ref")
        if not ref or (ref["version"] and not registry.model_exists(ref["model_uri"])):
            return None
        return registry.ModelRef(**{**ref, "already_complete": True})

    def __enter__(self) -> TrainingRun:
        previous = self.state.get("run_id") if self.checkpoint.exists() else None
        self._active = tracking.run(self.experiment, self.run_name, self.tags, nested=self.nested, run_id=previous)
        self.run_id = self._active.__enter__().info.run_id
        self._save_state(run_id=self.run_id)
        if previous is None:
            mlflow.log_params(tracking.flatten(self.params))
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._active.__exit__(*exc)

    def _save_state(self, **values: Any) -> None:
        self.state.update(values)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.state_file)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """The training loops' ``log`` callback: metrics to the active MLflow run."""
        tracking.MetricLogger()(metrics, step)

    @contextmanager
    def training(self, desc: str, on_epoch_end: EpochEnd | None = None) -> Iterator[Hooks]:
        """Hooks for a training loop: a progress bar, metrics to MLflow, this run's checkpoint (resumed when
        asked), and after each epoch's checkpoint the fault injection of tests, then ``on_epoch_end``."""

        def epoch_end(epoch: int, metrics: dict[str, float]) -> bool | None:
            faults.fail_after_epoch(epoch)
            return on_epoch_end(epoch, metrics) if on_epoch_end is not None else None

        with bar(total=None, desc=desc, unit="step") as pbar:

            def progress(done: int, total: int) -> None:
                pbar.total = total
                pbar.update(done - pbar.n)

            yield Hooks(self.log, progress, epoch_end, self.checkpoint, self.resume)

    def register(
        self,
        code: str,
        artifacts: dict[str, Path],
        signature: Any,
        input_example: Any,
        register_as: str | None,
        metrics: dict[str, float],
        *,
        champion_by: ChampionRule | None,
        artifact_name: str = "model",
    ) -> registry.ModelRef:
        """Log the checkpoint and the pyfunc, register it, promote it by ``champion_by`` (``tasks.champion``);
        remember the reference so that a rerun registers nothing new."""
        mlflow.log_artifact(str(self.checkpoint), artifact_path="checkpoint")
        model_uri, version = registry.log_pyfunc(artifact_name, code, artifacts, signature, input_example, register_as)
        if register_as:
            mlflow.set_tag("registered_model", f"{register_as}/{version}")
            if champion_by is not None:
                registry.promote(register_as, version, champion_by)
        ref = registry.ModelRef(run_id=self.run_id or "", model_uri=model_uri, version=version, metrics=metrics)
        self._save_state(model_ref={k: v for k, v in asdict(ref).items() if k != "already_complete"})
        return ref
