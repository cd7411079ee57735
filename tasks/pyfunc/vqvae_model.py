"""The registered `galaxy-vqvae` pyfunc: uint8 images in, reconstructions (or code indices) out.

Logged as models-from-code; the weights travel as the artifact ``checkpoint``. The torch module is
``mlflow.pyfunc.load_model(uri).unwrap_python_model().vqvae``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import torch

from model.checkpoint import load_model
from model.train_vqvae import reconstruct_images
from model.utils import pick_device, uint8_to_unit
from model.vqvae import VQVAE


class VQVAEModel(mlflow.pyfunc.PythonModel):
    """predict(images (N, S, S, 3) uint8, params={'output': 'reconstruction' | 'indices'})."""

    def load_context(self, context) -> None:
        self.device = pick_device()
        self.vqvae, self.checkpoint = load_model(context.artifacts["checkpoint"], VQVAE)
        self.vqvae.to(self.device).eval()

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        images = np.asarray(model_input, dtype=np.uint8)
        output = (params or {}).get("output", "reconstruction")
        if output == "indices":
            with torch.no_grad():
                x = uint8_to_unit(torch.from_numpy(images).to(self.device))  # (N, 3, S, S)
                return self.vqvae.tokenize(x).cpu().numpy().astype(np.int64)  # (N, h, w)
        if output != "reconstruction":
            raise ValueError(f"params.output must be 'reconstruction' or 'indices', got {output!r}")
        return reconstruct_images(self.vqvae, images, device=self.device)


mlflow.models.set_model(VQVAEModel())
