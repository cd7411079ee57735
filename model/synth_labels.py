"""What each synthetic image is labelled and what it is drawn as (SPEC D2).

The labels of a file keep Galaxy10's exact class proportions (``synth_labels``); each image then draws its
sky position and, with probability LABEL_NOISE, a class volunteers confuse with its label instead of the
label itself (``place_and_draw``), from its own generator (``image_rng``). ``drawn_classes`` replays those
first draws, so the class every image of a file was drawn as is known without rendering it: what a judge
that read every image perfectly would name (``benchmarks/judge_quality.py``).
"""

from __future__ import annotations

import math
import re

import numpy as np

from model.galaxy10 import CLASS_FRACTIONS, NUM_CLASSES

#: Images in the offline synthetic default (the real set has 17,736), split 60/10/30 (model.data.SYNTHETIC_FRACTIONS).
DEFAULT_SYNTH_N = 4000
#: Fraction of images whose label is wrong: drawn as a neighbouring class that volunteers confuse with it.
#: An assumed rate (Galaxy10 keeps galaxies with a clear vote majority, so most labels are right), not a
#: measurement; the file's `ans` keeps the exact Galaxy10 class proportions.
LABEL_NOISE = 0.06
CONFUSABLE: dict[int, tuple[int, ...]] = {
    0: (1, 7),  # disturbed <-> merging, loose spiral
    1: (0,),
    2: (3,),  # round <-> in-between smooth
    3: (2, 4),
    4: (3, 9),  # cigar <-> in-between, edge-on with bulge
    5: (6, 7),  # barred <-> unbarred spirals
    6: (5, 7),
    7: (6, 0),
    8: (9, 4),  # edge-on without <-> with bulge, cigar
    9: (8, 4),
}


def class_counts(n: int) -> np.ndarray:
    """(10,) image count per class for n images: Galaxy10 proportions, rounded by largest remainder to sum n."""
    exact = n * CLASS_FRACTIONS
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def synth_labels(n: int, seed: int) -> np.ndarray:
    """(N,) uint8 labels in exact Galaxy10 proportions, shuffled deterministically by seed."""
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), class_counts(n))
    np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))).shuffle(labels)
    return labels


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for image `index` of a file made with `seed` (independent of the worker count)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))


def drawn_class(label: int, rng: np.random.Generator) -> int:
    """The class actually drawn for an image labelled `label`: itself, or with probability LABEL_NOISE a class
    volunteers confuse it with (Galaxy10's labels come from vote fractions and are not all right)."""
    if rng.random() < LABEL_NOISE:
        return int(rng.choice(CONFUSABLE[label]))
    return label


def place_and_draw(label: int, rng: np.random.Generator) -> tuple[float, float, int]:
    """An image's first draws: its sky position (ra, dec in degrees) and the class it is drawn as."""
    ra = rng.uniform(0.0, 360.0)
    dec = math.degrees(math.asin(rng.uniform(math.sin(math.radians(-20)), math.sin(math.radians(35)))))
    return ra, dec, drawn_class(label, rng)


def drawn_classes(labels: np.ndarray, seed: int) -> np.ndarray:
    """(N,) the class each image of a file synthesized with `seed` (labels in file order) was actually drawn as:
    what a judge that read every image perfectly would name. Replays each image's first draws only."""
    return np.array(
        [place_and_draw(int(label), image_rng(seed, i))[2] for i, label in enumerate(np.asarray(labels))],
        dtype=np.int64,
    )


def source_label(n: int, seed: int) -> str:
    """The label a prepared folder of the synthetic file (n images, ``seed``) carries as its ``source``."""
    return f"synthetic-n{n}-s{seed}"


def drawn_classes_of(source: str, labels: np.ndarray) -> np.ndarray | None:
    """(N,) the drawn classes of a prepared set whose ``source`` is ``source_label(n, seed)`` and whose ``labels``
    are that file's, in its order; None for any other set (a real file, another order), whose truth is unknown."""
    match = re.fullmatch(r"synthetic-n(\d+)-s(\d+)", str(source))
    if match is None:
        return None
    n, seed = int(match[1]), int(match[2])
    labels = np.asarray(labels)
    if len(labels) != n or not np.array_equal(labels, synth_labels(n, seed)):
        return None
    return drawn_classes(labels, seed)
