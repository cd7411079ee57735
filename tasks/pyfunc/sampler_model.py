"""The registered `galaxy-sampler` pyfunc: VQ-VAE + prior in one model; class labels in, uint8 images out.

    model = mlflow.pyfunc.load_model("models:/galaxy-sampler@champion")
    images = model.predict(np.array([5, 5, 6, -1]), params={"cfg_scale": 3.0, "seed": 1})  # (4, S, S, 3) uint8

A label of -1 asks for an unconditional sample; ``num_samples`` repeats every label that many times.
A sampler whose prior is conditioned on redshift also takes ``redshift``: one value for every row or one
per input label (NaN: none), within the range the prior was trained on. MLflow's parameter schema takes
it as a list (``{"redshift": [0.05]}`` or ``[0.02, 0.1, ...]``); ``generate`` also takes a bare number.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np

from model.checkpoint import load_model
from model.errors import UserError
from model.prior import ConditionalPrior
from model.sampling import DEFAULT_TOP_P, Samples, check_sampling_args, sample
from model.utils import pick_device
from model.vqvae import VQVAE


def condition_per_label(values, n_labels: int) -> np.ndarray | None:
    """None, a number, or a list of 1 or ``n_labels`` numbers -> (n_labels,) float64 (NaN = none), or None."""
    if values is None:
        return None
    try:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError("redshift", f"{values!r} is not a number or a list of numbers") from None
    if values.size == 0:
        return None
    if values.size not in (1, n_labels):
        raise UserError("redshift", f"give 1 value or one per label ({n_labels}), got {values.size}")
    return np.broadcast_to(values, (n_labels,)).copy()


class SamplerModel(mlflow.pyfunc.PythonModel):
    """predict(labels (N,) int64, params={num_samples, cfg_scale, temperature, top_k, top_p, seed, redshift})."""

    def load_context(self, context) -> None:
        device = pick_device()
        self.prior, _ = load_model(context.artifacts["prior"], ConditionalPrior)
        self.vqvae, _ = load_model(context.artifacts["vqvae"], VQVAE)
        self.prior.to(device).eval()
        self.vqvae.to(device).eval()

    def generate(
        self,
        labels,
        *,
        num_samples=1,
        cfg_scale=3.0,
        temperature=1.0,
        top_k=0,
        top_p=DEFAULT_TOP_P,
        seed=0,
        redshift=None,
        progress=None,
    ) -> Samples:
        """Samples (images, latents, indices) for each label (and its redshift) repeated ``num_samples`` times."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        values = condition_per_label(redshift, len(labels))
        condition = self.prior.config.condition
        if values is not None and condition is None:
            raise UserError("redshift", "this sampler's prior was trained without a condition")
        if values is not None and condition != "redshift":
            raise UserError("redshift", f"this sampler's prior is conditioned on {condition!r}, not redshift")
        labels = np.repeat(labels, int(num_samples))
        values = np.repeat(values, int(num_samples)) if values is not None else None
        check_sampling_args(max(len(labels), 1), self.prior.num_classes, None, cfg_scale, temperature, top_k, top_p)
        return sample(
            self.prior,
            self.vqvae,
            labels,
            condition_values=values,
            cfg_scale=float(cfg_scale),
            temperature=float(temperature),
            top_k=int(top_k),
            top_p=float(top_p),
            seed=int(seed),
            progress=progress,
        )

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.generate(np.asarray(model_input), **(params or {})).images


mlflow.models.set_model(SamplerModel())
