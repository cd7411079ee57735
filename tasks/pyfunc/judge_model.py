"""The registered `galaxy-judge` pyfunc: uint8 images in, class probabilities (or judge features) out.

    judge = mlflow.pyfunc.load_model("models:/galaxy-judge@champion")
    probs = judge.predict(images)                                 # (N, 10) float32, rows sum to 1
    feats = judge.predict(images, params={"output": "features"})  # (N, F) float32, for Fréchet distances

Logged as models-from-code; the weights travel as the artifact ``checkpoint``. The torch module is
``mlflow.pyfunc.load_model(uri).unwrap_python_model().judge``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np

from model.checkpoint import load_model
from model.judge import MorphologyCNN, predict
from model.utils import pick_device


class JudgeModel(mlflow.pyfunc.PythonModel):
    """predict(images (N, S, S, 3) uint8, params={'output': 'probs' | 'features'}) -> (N, K) or (N, F) float32."""

    def load_context(self, context) -> None:
        self.device = pick_device()
        self.judge, self.checkpoint = load_model(context.artifacts["checkpoint"], MorphologyCNN)
        self.judge.to(self.device).eval()

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        images = np.asarray(model_input, dtype=np.uint8)
        output = (params or {}).get("output", "probs")
        if output not in ("probs", "features"):
            raise ValueError(f"params.output must be 'probs' or 'features', got {output!r}")
        probs, features = predict(self.judge, images, device=self.device)
        return probs if output == "probs" else features


mlflow.models.set_model(JudgeModel())
