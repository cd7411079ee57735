"""Benchmark the `demo` judge where its quality shows: on many independent synthetic images, against their labels
and against the classes the images were actually drawn as.

The flow's test split is small (1,200 images of the default set, 22 of them cigars; 305 and 10 before stop 29)
and, by the luck of seed 0, noisier than the set at large (more of its labels wrong than the 6 % on average), so
a change to the judge can move the flow's number by less than its noise. This trains the judge as the flow does
(default set, 4,000 images, seed 0, 128 px, training split, validation split for the best epoch) and scores it on
that test split and on an independent set (4,000 images synthesized with seed 1, all of them), each against the
labels and against the drawn classes (``model.synth_labels.drawn_classes``), beside what a judge that named every
drawn class would score against the labels, and what this judge should score on the test split given how it names
each drawn class on the independent set (``expected_balanced``: how hard the split is, the judge's luck aside).
Both synthetic files are cached like the pipeline's.

    python benchmarks/judge_quality.py                      # the demo preset, seed 0
    python benchmarks/judge_quality.py --seeds 0,1 --override '{"epochs": 30}'

About 5 minutes per seed on 2 CPU cores (26 epochs), plus ~2 minutes to synthesize the independent set once.
The last line reads ``judge_quality: independent <mean> ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import from_preset  # noqa: E402
from model.data import load_prepared, prepare  # noqa: E402
from model.judge import PRESETS, predict, train_judge  # noqa: E402
from model.metrics import balanced_hit_rate  # noqa: E402
from model.synth_labels import drawn_classes, synth_labels  # noqa: E402
from tasks.data import DEFAULT_SEED, DEFAULT_SYNTH_N, synth_file  # noqa: E402

SIZE = 128
INDEPENDENT_N, INDEPENDENT_SEED = 4000, 1


def balanced(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall over the classes present in ``truth``."""
    return balanced_hit_rate(predicted == truth, truth)


def expected_balanced(predicted: np.ndarray, drawn: np.ndarray, labels: np.ndarray, drawn_there: np.ndarray) -> float:
    """The balanced accuracy a judge should score against ``labels`` of a set whose images were drawn as
    ``drawn_there``, if it named each drawn class there as it named them where it predicted ``predicted`` for
    images drawn as ``drawn`` (its confusion from drawn class to verdict, carried over): how hard that set's
    labels are for this judge, with the judge's own noise averaged out."""
    k = int(max(drawn.max(), drawn_there.max(), labels.max())) + 1
    confusion = np.zeros((k, k))
    np.add.at(confusion, (drawn, predicted), 1.0)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1.0)  # P(verdict | drawn class)
    return float(np.mean([rates[drawn_there[labels == c], c].mean() for c in np.unique(labels)]))


def scored_set(name: str, seed: int, n: int, tmp: Path, split: str | None):
    """(images, labels, drawn classes) of a synthetic set: the ``split`` of the prepared file, or all of it."""
    prepare(synth_file(n, 256, seed), tmp / name, size=SIZE, seed=seed)
    data = load_prepared(tmp / name)
    if not np.array_equal(data.labels, synth_labels(n, seed)):
        sys.exit(f"{data.root}: the prepared images are not in the synthetic file's order; drawn classes unknown")
    rows = data.indices(split) if split else np.arange(len(data.labels))
    drawn = drawn_classes(data.labels, seed)[rows]
    return np.asarray(data.images[rows]), data.labels[rows].astype(np.int64), drawn, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="judge seeds, comma-separated")
    parser.add_argument("--override", default="{}", help="JSON of JudgeConfig fields over the demo preset")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    override = json.loads(args.override)
    print(f"torch threads {torch.get_num_threads()}; demo judge with {override or 'no overrides'}; seeds {seeds}")
    with tempfile.TemporaryDirectory() as tmp:
        test_x, test_y, test_d, data = scored_set("default", DEFAULT_SEED, DEFAULT_SYNTH_N, Path(tmp), "test")
        ind_x, ind_y, ind_d, _ = scored_set("independent", INDEPENDENT_SEED, INDEPENDENT_N, Path(tmp), None)
        (tx, ty), (vx, vy) = data.subset("train"), data.subset("val")
        print(
            f"a judge naming every drawn class, against the labels: test split {balanced(test_d, test_y):.3f} "
            f"({len(test_y)} images), independent set {balanced(ind_d, ind_y):.3f} ({len(ind_y)} images)"
        )
        rows = []
        for seed in seeds:
            config = from_preset(PRESETS, "demo", image_size=SIZE, **{**override, "seed": seed})
            t0 = time.perf_counter()
            model = train_judge(config, tx, ty, vx, vy).model
            seconds = time.perf_counter() - t0
            p_test, p_ind = (predict(model, x)[0].argmax(1) for x in (test_x, ind_x))
            row = [balanced(p_ind, ind_y), balanced(p_ind, ind_d), balanced(p_test, test_y), balanced(p_test, test_d)]
            rows.append(row)
            expected = expected_balanced(p_ind, ind_d, test_y, test_d)
            print(
                f"seed {seed} ({seconds:.0f} s): independent {row[0]:.3f} (drawn {row[1]:.3f}), "
                f"test split {row[2]:.3f} (drawn {row[3]:.3f}; expected from the independent set {expected:.3f})"
            )
    mean = np.mean(rows, axis=0)
    print(
        f"judge_quality: independent {mean[0]:.3f} (drawn {mean[1]:.3f}), test split {mean[2]:.3f} "
        f"(drawn {mean[3]:.3f}); mean of {len(seeds)} seed(s), balanced accuracy"
    )


if __name__ == "__main__":
    main()
