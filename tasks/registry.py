"""The model registry: what a stage hands on (``ModelRef``), pyfunc logging and loading, champion aliases.

Three registered models, each a models-from-code pyfunc (code in ``tasks/pyfunc/``, weights as the
artifact(s) it names): ``galaxy-vqvae``, ``galaxy-sampler`` (VQ-VAE + prior) and ``galaxy-judge``. The
alias ``champion`` follows the best version by the rule in ``is_better``; ``models:/NAME/latest`` is
always the newest version (MLflow reserves that name).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

from model.errors import UserError
from tasks import tracking
from tasks.champion import is_better

VQVAE_MODEL = "galaxy-vqvae"
SAMPLER_MODEL = "galaxy-sampler"
JUDGE_MODEL = "galaxy-judge"
CHAMPION = "champion"
PYFUNC_DIR = Path(__file__).with_name("pyfunc")


@dataclass(frozen=True)
class ModelRef:
    """What a training stage hands on: its MLflow run, the registered model URI and version, key metrics."""

    run_id: str
    model_uri: str
    version: str
    metrics: dict[str, float]
    already_complete: bool = field(default=False)  # True: an earlier identical run was reused, nothing new registered


# --------------------------------------------------------------------------------------------------
# signatures: typed inputs, named params with defaults


def vqvae_signature(size: int) -> ModelSignature:
    """Input and output: (N, S, S, 3) uint8 images; params: output = reconstruction | indices."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 3))]),
        params=ParamSchema([ParamSpec("output", "string", "reconstruction")]),
    )


def sampler_signature() -> ModelSignature:
    """Input: class labels (-1 = unconditional), one image each; params: the sampling settings."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        params=ParamSchema(
            [
                ParamSpec("num_samples", "long", 1),
                ParamSpec("cfg_scale", "double", 3.0),
                ParamSpec("temperature", "double", 1.0),
                ParamSpec("top_k", "long", 0),
                ParamSpec("top_p", "double", 1.0),
                ParamSpec("seed", "long", 0),
            ]
        ),
    )


def judge_signature(size: int) -> ModelSignature:
    """Input: (N, S, S, 3) uint8 images; output: (N, K) probabilities or (N, F) features, float32."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
        params=ParamSchema([ParamSpec("output", "string", "probs")]),
    )


# --------------------------------------------------------------------------------------------------
# logging and loading


def pip_requirements() -> list[str]:
    """The packages a loaded pyfunc needs (the project itself must be installed beside them)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "vector-quantize-pytorch", "einops", "numpy", "mlflow")]


def log_pyfunc(
    name: str,
    code: str,
    artifacts: dict[str, Path],
    signature: ModelSignature,
    input_example: Any,
    register_as: str | None,
) -> tuple[str, str]:
    """Log ``tasks/pyfunc/<code>.py`` as a models-from-code pyfunc to the active run and register it.

    Returns (model URI, version); the version is '' when nothing is registered.
    """
    with warnings.catch_warnings():  # MLflow's own advice on signatures and examples: given, so not for the user
        warnings.simplefilter("ignore")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_DIR / f"{code}.py"),
            artifacts={k: str(v) for k, v in artifacts.items()},
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(),
            registered_model_name=register_as,
        )
    if register_as is None:
        return info.model_uri, ""
    version = str(info.registered_model_version)
    return f"models:/{register_as}/{version}", version


def model_exists(uri: str) -> bool:
    """Whether a models:/ or runs:/ URI names a model in the tracking store."""
    try:
        resolve_model_uri(uri)
    except UserError:
        return False
    return True


def resolve_model_uri(uri: str) -> str:
    """Check that a models:/ or runs:/ URI exists; raise UserError with one line when it does not."""
    tracking.setup()
    try:
        from mlflow.models import get_model_info

        get_model_info(uri)
    except Exception as err:  # mlflow raises several types for a missing model/alias/version
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise UserError(uri, f"no such model in {tracking.tracking_uri()} ({first})") from None
    return uri


def unwrap_pyfunc(uri: str, attr: str, kind: str):
    """The PythonModel inside a registered pyfunc, checked to be of the expected kind (it has ``attr``)."""
    resolve_model_uri(uri)
    wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    if not hasattr(wrapper, attr):
        raise UserError(uri, f"is not a {kind} model")
    return wrapper


def load_vqvae(model_uri: str):
    """The torch VQ-VAE inside a registered `galaxy-vqvae` pyfunc (eval mode, CPU), and its checkpoint dict."""
    wrapper = unwrap_pyfunc(model_uri, "vqvae", VQVAE_MODEL)
    return wrapper.vqvae.cpu().eval(), wrapper.checkpoint


def load_sampler(model_uri: str):
    """(prior, vqvae) torch modules inside a registered `galaxy-sampler` pyfunc, in eval mode on CPU."""
    wrapper = unwrap_pyfunc(model_uri, "prior", SAMPLER_MODEL)
    return wrapper.prior.cpu().eval(), wrapper.vqvae.cpu().eval()


def load_judge(model_uri: str):
    """The torch judge inside a registered `galaxy-judge` pyfunc (eval mode, CPU), and its checkpoint dict."""
    wrapper = unwrap_pyfunc(model_uri, "judge", JUDGE_MODEL)
    return wrapper.judge.cpu().eval(), wrapper.checkpoint


# --------------------------------------------------------------------------------------------------
# champion aliases


def promote(name: str, version: str, metric: str, value: float, higher_is_better: bool) -> bool:
    """Alias the new version 'champion' when it beats the current champion's run on ``metric`` (or there is none)."""
    client = mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
        best = client.get_run(champion.run_id).data.metrics.get(metric)
    except mlflow.exceptions.MlflowException:
        best = None
    better = is_better(value, best, higher_is_better)
    if better:
        client.set_registered_model_alias(name, CHAMPION, version)
    return better
