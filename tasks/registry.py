"""The model registry: what a stage hands on (``ModelRef``), pyfunc logging and loading, champion aliases.

Three registered models, each a models-from-code pyfunc (code in ``tasks/pyfunc/``, weights as the
artifact(s) it names): ``galaxy-vqvae``, ``galaxy-sampler`` (VQ-VAE + prior) and ``galaxy-judge``. The
alias ``champion`` follows the best version by the rule in ``tasks.champion``; ``models:/NAME/latest`` is
always the newest version (MLflow reserves that name).
"""

from __future__ import annotations

import re
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
from tasks.champion import ChampionRule, is_better, wins

VQVAE_MODEL = "galaxy-vqvae"
SAMPLER_MODEL = "galaxy-sampler"
JUDGE_MODEL = "galaxy-judge"
CHAMPION = "champion"
TOKENIZER_TAG = "tokenizer"  # a sampler run's tag: what its bits/token count (tokenizer_scope)
SAMPLER_TOP_P = 0.9  # the signature's top_p default: model.sampling.DEFAULT_TOP_P (registry stays free of torch)
EVAL_TOP_P = "eval_top_p"  # on a sampler's run beside its evaluation scores: the top-p its samples were drawn at


def tokenizer_scope(vqvae_run_id: str, condition: str | None, crop: int = 0, pose: bool = False) -> str:
    """The ``tokenizer`` tag of a sampler: the MLflow run id of the VQ-VAE whose codes it models, the numeric
    condition when the prior has one, the crop when it models only the central codes, and ``@pose`` when it
    models the codes of images turned to their canonical pose. Validation bits/token compare only within one
    scope: another codebook's tokens are other symbols, a prior that also reads the redshift predicts them from
    more than the class, a crop prior counts other tokens (the galaxy's), and a pose prior other images'."""
    scope = vqvae_run_id if condition is None else f"{vqvae_run_id}+{condition}"
    scope = f"{scope}@crop{crop}" if crop else scope
    return f"{scope}@pose" if pose else scope


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
                ParamSpec("top_p", "double", SAMPLER_TOP_P),
                ParamSpec("seed", "long", 0),
                ParamSpec("redshift", "double", [], shape=(-1,)),  # [] none, [z] every row, or one per label
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


def _champion_run(client: mlflow.MlflowClient, name: str):
    """The MLflow run of the version aliased champion, or None when no version is."""
    try:
        return client.get_run(client.get_model_version_by_alias(name, CHAMPION).run_id)
    except mlflow.exceptions.MlflowException:
        return None


def promote(name: str, version: str, rule: ChampionRule) -> bool:
    """Alias the new version 'champion' when it wins by ``rule`` against the current champion (or there is none)."""
    client = mlflow.MlflowClient()
    champion = _champion_run(client, name)
    if champion is None:
        better = True
    else:
        tags = client.get_run(client.get_model_version(name, version).run_id).data.tags
        scope = tags.get(rule.scope_tag) if rule.scope_tag else None
        champion_scope = champion.data.tags.get(rule.scope_tag) if rule.scope_tag else None
        better = wins(rule, champion.data.metrics.get(rule.metric), champion_scope, scope)
    if better:
        client.set_registered_model_alias(name, CHAMPION, version)
    return better


def model_version(uri: str):
    """The registry's ModelVersion that a models:/NAME/VERSION or models:/NAME@ALIAS URI names; None for other URIs."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w-]+))", uri)
    if match is None:
        return None
    name, version, alias = match.groups()
    client = mlflow.MlflowClient()
    return client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)


def record_sample_scores(sampler_uri: str, metrics: dict[str, float]) -> None:
    """Write an evaluation's headline numbers on the registered sampler's run, where champion comparisons read them
    (nothing for a sampler that is not registered). Each evaluation is one step after the last, so the latest
    one is what the run shows (MLflow breaks ties of step and timestamp by the larger value)."""
    version = model_version(sampler_uri)
    if version is not None and metrics:
        client = mlflow.MlflowClient()
        past = [m.step for key in metrics for m in client.get_metric_history(version.run_id, key)]
        step = max(past, default=-1) + 1
        batch = [mlflow.entities.Metric(k, v, 0, step) for k, v in metrics.items()]
        client.log_batch(version.run_id, metrics=batch)


def promote_sampler_by_samples(sampler_uri: str, metric: str, value: float, top_p: float = SAMPLER_TOP_P) -> bool:
    """After an evaluation: a sampler on another tokenizer than the champion's takes the alias when the judge rates
    its samples higher on ``metric`` (or the champion has never been evaluated). Scores of samples drawn at another
    top-p than the champion's last evaluation (``eval_top_p``; none recorded: 1, the default before it was
    recorded) are not compared: the champion stays. Within one tokenizer validation bits/token decide at
    registration, so nothing changes here. True when the alias moved."""
    client = mlflow.MlflowClient()
    version = model_version(sampler_uri)
    champion = _champion_run(client, SAMPLER_MODEL)
    if version is None or version.name != SAMPLER_MODEL or champion is None or champion.info.run_id == version.run_id:
        return False
    tokenizer = client.get_run(version.run_id).data.tags.get(TOKENIZER_TAG)
    if tokenizer is not None and champion.data.tags.get(TOKENIZER_TAG) == tokenizer:
        return False
    held = champion.data.metrics.get(metric)
    if held is not None and champion.data.metrics.get(EVAL_TOP_P, 1.0) != top_p:
        return False
    if not is_better(value, held, higher_is_better=True):
        return False
    client.set_registered_model_alias(SAMPLER_MODEL, CHAMPION, version.version)
    return True
