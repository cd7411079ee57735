"""The registered `galaxy-sampler` pyfunc: VQ-VAE + prior in one model; class labels in, uint8 images out.

    model = mlflow.pyfunc.load_model("models:/galaxy-sampler@champion")
    images = model.predict(np.array([5, 5, 6, -1]), params={"cfg_scale": 3.0, "seed": 1})  # (4, S, S, 3) uint8

A label of -1 asks for an unconditional sample; ``num_samples`` repeats every label that many times.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np

from model.checkpoint import load_model
from model.prior import ConditionalPrior
from model.sampling import Samples, check_sampling_args, sample
from model.utils import pick_device
from model.vqvae import VQVAE


class SamplerModel(mlflow.pyfunc.PythonModel):
    """predict(labels (N,) int64, params={num_samples, cfg_scale, temperature, top_k, top_p, seed})."""

    def load_context(self, context) -> None:
        device = pick_device()
        self.prior, _ = load_model(context.artifacts["prior"], ConditionalPrior)
        self.vqvae, _ = load_model(context.artifacts["vqvae"], VQVAE)
        self.prior.to(device).eval()
        self.vqvae.to(device).eval()

    def generate(
        self, labels, *, num_samples=1, cfg_scale=3.0, temperature=1.0, top_k=0, top_p=1.0, seed=0, progress=None
    ) -> Samples:
        """Samples (images, latents, indices) for each label repeated ``num_samples`` times."""
        labels = np.repeat(np.asarray(labels, dtype=np.int64).reshape(-1), int(num_samples))
        check_sampling_args(max(len(labels), 1), self.prior.num_classes, None, cfg_scale, temperature, top_k, top_p)
        return sample(
            self.prior,
            self.vqvae,
            labels,
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
