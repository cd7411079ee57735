"""Judge stage (SPEC E1): train the morphology judge on the prepared training split and register `galaxy-judge`.

The judge is reported on the test split (accuracy, per-class precision / recall, confusion matrix), and, when
a labelled Galaxy10-format file of real images is given (``real``), on that file too: ``judge_real_*``
metrics (balanced accuracy, accuracy, recall per class present) and a confusion matrix. The run is
resumable (``tasks.runs``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from prefect import task

from model.bootstrap import balanced_accuracy_interval
from model.checkpoint import save_checkpoint
from model.config import from_preset
from model.data import load_labelled, load_prepared
from model.errors import UserError
from model.galaxy10 import CLASS_NAMES
from model.judge import PRESETS, MorphologyCNN, predict, train_judge, trains_in_bf16
from model.metrics import balanced_accuracy, balanced_hit_rate, classification_report
from model.plotting.evaluation import confusion_figure, precision_recall_figure
from model.source import blake3_file
from model.synth_labels import drawn_classes_of
from model.utils import pick_device
from tasks import registry, tracking
from tasks.cache import stage_cache_key
from tasks.champion import ChampionRule
from tasks.runs import TrainingRun

EXPERIMENT = "galaxy-judge"
TRAIN_SCORED = 1000  # training images the train accuracy is measured on


def slug(name: str) -> str:
    """'in-between round smooth' -> 'in_between_round_smooth' (metric-name safe)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def report_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """classification_report -> {prefix_accuracy, prefix_precision_<i>_<slug>, prefix_recall_<i>_<slug>}."""
    out = {f"{prefix}_accuracy": float(report["accuracy"])}
    for i, name in enumerate(CLASS_NAMES[: len(report["precision"])]):
        out[f"{prefix}_precision_{i}_{slug(name)}"] = float(report["precision"][i])
        out[f"{prefix}_recall_{i}_{slug(name)}"] = float(report["recall"][i])
    return out


DRAWN_METRICS = ("test_balanced_accuracy_vs_drawn", "test_balanced_accuracy_label_ceiling")


def drawn_metrics(labels: np.ndarray, predicted: np.ndarray, drawn: np.ndarray) -> dict[str, float]:
    """On a synthetic test split, whose labels are partly wrong by design (``model.synth_labels``): the judge's
    balanced accuracy against the classes the images were drawn as, and the ceiling a judge that named every
    drawn class would reach against the labels (the test split's own label noise decides it, not the judge)."""
    return {
        DRAWN_METRICS[0]: balanced_hit_rate(predicted == drawn, drawn),
        DRAWN_METRICS[1]: balanced_hit_rate(drawn == labels, labels),
    }


def score_real(model: MorphologyCNN, path: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Score the judge on a real labelled file, log its metrics, confusion matrix and predictions; the metrics."""
    k = model.config.num_classes
    probs = predict(model, images)[0]  # (N, K)
    predicted = probs.argmax(1)  # (N,)
    report = classification_report(labels, predicted, k)
    lo, hi = balanced_accuracy_interval(labels, predicted)
    metrics = {
        "judge_real_balanced_accuracy": balanced_accuracy(report),
        "judge_real_balanced_accuracy_lo": lo,
        "judge_real_balanced_accuracy_hi": hi,
        "judge_real_accuracy": float(report["accuracy"]),
    }
    for c, name in enumerate(CLASS_NAMES[:k]):
        if report["support"][c] > 0:  # a class the file does not hold has no recall
            metrics[f"judge_real_recall_{c}_{slug(name)}"] = float(report["recall"][c])
    mlflow.log_metrics(metrics)
    title = f"Judge on the real file {path.name} ({len(labels)} images)"
    tracking.log_figure(confusion_figure(report["confusion"], CLASS_NAMES[:k], title), "judge/real_confusion.png")
    tracking.log_array(report["confusion"], "judge/real_confusion.npy")
    tracking.log_array(np.stack([labels, predicted]), "judge/real_labels_and_predictions.npy")
    tracking.log_array(probs, "judge/real_probabilities.npy")
    return metrics


def train_judge_run(
    data_dir: str | Path,
    preset_name: str = "demo",
    *,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    register_as: str | None = registry.JUDGE_MODEL,
    resume: bool = True,
    real: str | Path | None = None,
) -> registry.ModelRef:
    """Train the judge on the training split, report it on the test split (and on ``real``, a labelled
    Galaxy10-format file, when given: checked before training starts), log and register `galaxy-judge`."""
    data = load_prepared(data_dir)
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    size = data.meta["size"]
    if overrides.setdefault("image_size", size) != size:
        raise UserError(data_dir, f"images are {size} px but the judge config asks for {overrides['image_size']}")
    config = from_preset(PRESETS, preset_name, **overrides)
    real = Path(real) if real is not None else None
    real_x, real_y = load_labelled(real, config.image_size) if real is not None else (None, None)
    train_x, train_y = data.subset("train", limit)
    held_out = limit and max(limit // 4, 20)  # val and test images scored under a limit
    val_x, val_y = data.subset("val", held_out)
    test_x, test_y = data.subset("test", held_out)
    if len(train_x) < 2 or len(val_x) == 0 or len(test_x) == 0:
        counts = f"train {len(train_x)}, val {len(val_x)}, test {len(test_x)}"
        raise UserError(data_dir, f"too few images to train a judge ({counts})")
    run = TrainingRun(
        "judge",
        EXPERIMENT,
        config,
        data,
        preset_name,
        identity=(limit,) if real is None else (limit, blake3_file(real)),  # scored on other images: another run
        resume=resume,
        data_params={
            "source": data.meta["source"],
            "synthetic": data.synthetic,
            "n_train": len(train_x),
            "n_val": len(val_x),
            "n_test": len(test_x),
            **({"real": str(real), "n_real": len(real_y)} if real is not None else {}),
        },
        params={"train_precision": "bf16" if trains_in_bf16(config, pick_device(config.device)) else "float32"},
        tags={"trained_on": f"{data.meta['source']} train split"},
    )
    if run.complete:
        return run.complete
    with run:
        with run.training(f"training judge ({preset_name})") as hooks:
            result = train_judge(config, train_x, train_y, val_x, val_y, hooks)
        model = result.model
        judge_file = run.folder / "judge.pt"
        save_checkpoint(judge_file, model.cpu(), history=result.history)
        model.to(pick_device(config.device))
        test_probs, _ = predict(model, test_x)
        test_report = classification_report(test_y, test_probs.argmax(1), config.num_classes)
        scored = slice(TRAIN_SCORED)  # a symmetric judge looks 8 times at each image: the first images will do
        train_report = classification_report(
            train_y[scored], predict(model, train_x[scored])[0].argmax(1), config.num_classes
        )
        metrics = report_metrics(test_report, "test")
        lo, hi = balanced_accuracy_interval(test_y, test_probs.argmax(1))
        metrics.update(
            test_balanced_accuracy=balanced_accuracy(test_report),
            test_balanced_accuracy_lo=lo,
            test_balanced_accuracy_hi=hi,
            train_accuracy=train_report["accuracy"],
            best_val_acc=result.metrics["val_acc"],
            best_val_balanced_acc=result.metrics.get("val_balanced_acc", float("nan")),
            best_epoch=result.metrics["best_epoch"],
        )
        drawn = drawn_classes_of(data.meta["source"], data.labels)  # the truth behind a synthetic set's labels
        if drawn is not None:
            metrics.update(drawn_metrics(test_y, test_probs.argmax(1), drawn[data.indices("test")[:held_out]]))
        mlflow.log_metrics(metrics)
        real_metrics = score_real(model, real, real_x, real_y) if real is not None else {}
        names = CLASS_NAMES[: config.num_classes]
        label = Path(str(data.meta["source"])).name  # e.g. synthetic-n3000-s0, Galaxy10_DECals.h5
        prefix = "synthetic " if data.synthetic and "synthetic" not in label else ""
        source = f"{prefix}{label} test split ({len(test_x)} images)"
        ceiling = metrics.get(DRAWN_METRICS[1])  # what the labels themselves allow, beside what the judge scored
        note = (
            f"a judge that read every image right would reach a balanced accuracy of {ceiling:.1%} against these labels"
            if ceiling is not None
            else ""
        )
        figure = confusion_figure(test_report["confusion"], names, f"Judge on the {source}", note)
        tracking.log_figure(figure, "judge/confusion.png")
        figure = precision_recall_figure(test_report, names, f"Judge per-class precision and recall, {source}")
        tracking.log_figure(figure, "judge/precision_recall.png")
        tracking.log_array(test_report["confusion"], "judge/test_confusion.npy")
        tracking.log_array(np.stack([test_y, test_probs.argmax(1)]), "judge/test_labels_and_predictions.npy")
        keys = ("test_balanced_accuracy", "test_balanced_accuracy_lo", "test_balanced_accuracy_hi", "test_accuracy")
        keys += ("train_accuracy", "best_val_balanced_acc", "best_val_acc", *DRAWN_METRICS)
        headline = {k: float(metrics[k]) for k in keys if k in metrics}
        headline.update(real_metrics)
        # the pyfunc is named "model", not "judge": the judge/ run folder holds the figures
        return run.register(
            "judge_model",
            {"checkpoint": judge_file},
            registry.judge_signature(config.image_size),
            test_x[:1],
            register_as,
            headline,
            # chosen on validation data only: the test split is for reporting
            champion_by=ChampionRule(
                "best_val_balanced_acc", metrics["best_val_balanced_acc"], True, scope_tag="data_key"
            ),
        )


@task(name="train-judge", persist_result=True, cache_key_fn=stage_cache_key)
def train_judge_task(
    data_dir: str,
    preset_name: str = "demo",
    epochs: int | None = None,
    overrides: dict | None = None,
    limit: int | None = None,
    real: str | None = None,
) -> dict:
    """Train and register the morphology judge, also scored on ``real`` when given.

    Returns {run_id, model_uri, version, metrics}.
    """
    return train_judge_run(data_dir, preset_name, epochs=epochs, overrides=overrides, limit=limit, real=real).__dict__
