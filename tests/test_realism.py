"""The realism report: statistics of drawn images against hand-computed values, the two-sample AUC, the command's
bad inputs, and its MLflow run.

Every file is drawn here (constant sky plus Gaussian noise, Gaussian blobs, an elliptical Gaussian galaxy),
so each expected value follows from the drawing: a Gaussian of standard deviation s holds half its light
within s sqrt(2 ln 2), 20 % within s sqrt(-2 ln 0.8) and 80 % within s sqrt(-2 ln 0.2).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import console, make_galaxy10, use_store

SIDE = 64
PXSCALE = 0.5  # arcsec per pixel, at the stored side


def galaxy10_file(path: Path, images: np.ndarray, labels: np.ndarray | None = None, pxscale: float = PXSCALE) -> Path:
    """A Galaxy10-schema file of these images (labels 0-9 in turn unless given; None drops 'ans')."""
    n = len(images)
    ans = (np.arange(n) % 10).astype(np.uint8) if labels is None else labels
    return make_galaxy10(path, n=n, side=images.shape[1], images=images, ans=ans, pxscale=np.full(n, pxscale))


def gaussian(side: int, y: float, x: float, sigma_major: float, sigma_minor: float, angle: float = 0.0) -> np.ndarray:
    """(side, side) elliptical Gaussian of peak 1 centred at pixel (y, x), major axis at ``angle`` radians."""
    yy, xx = np.mgrid[:side, :side].astype(np.float64)
    dy, dx = yy - y, xx - x
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    return np.exp(-0.5 * (along**2 / sigma_major**2 + across**2 / sigma_minor**2))


def draw(rng, side: int, sky, noise, light: np.ndarray | None = None, colour=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(side, side, 3) uint8: sky level + Gaussian noise (per band) + ``light`` (side, side) times ``colour``."""
    image = np.asarray(sky, float) + rng.normal(0.0, 1.0, (side, side, 3)) * np.asarray(noise, float)
    if light is not None:
        image += light[..., None] * np.asarray(colour, float)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def population(n: int, seed: int, sky: float, side: int = SIDE) -> np.ndarray:
    """(n, side, side, 3) uint8 galaxies whose sky, noise, size, shape and brightness vary at random."""
    rng = np.random.default_rng(seed)
    centre = (side - 1) / 2
    images = []
    for _ in range(n):
        s = rng.uniform(2.0, 5.0)
        light = gaussian(side, centre, centre, s, s * rng.uniform(0.4, 1.0), rng.uniform(0, math.pi))
        images.append(draw(rng, side, sky + rng.normal(0, 2, 3), rng.uniform(2, 4), light * rng.uniform(80, 160)))
    return np.stack(images)


def measure(path: Path, size: int = SIDE):
    from model.realism import measure_file

    return measure_file(path, size=size)


# ---------------------------------------------------------------------------------------------- statistics


def test_sky_level_and_noise_of_a_constant_sky_with_gaussian_noise(tmp_path):
    rng = np.random.default_rng(0)
    sky, sigma = (30.0, 40.0, 50.0), (3.0, 5.0, 8.0)
    images = np.stack([draw(rng, SIDE, sky, sigma) for _ in range(10)])
    stats = measure(galaxy10_file(tmp_path / "sky.h5", images)).stats
    for band, level, sd in zip("rgb", sky, sigma):
        np.testing.assert_allclose(stats[f"sky_{band}"], level, atol=0.5)
        observed = math.sqrt(sd**2 + 1 / 12)  # rounding to whole numbers adds a uniform error of variance 1/12
        np.testing.assert_allclose(stats[f"noise_{band}"], observed, rtol=0.06)
    assert np.isnan(stats["r_half"]).all() and (stats["source_density"] == 0).all()  # no galaxy, no source


def test_background_sources_are_counted_apart_from_the_central_galaxy(tmp_path):
    rng = np.random.default_rng(1)
    centre = (SIDE - 1) / 2
    counts = [0, 2, 5, 9, 3]
    images = []
    for i, k in enumerate(counts):
        light = gaussian(SIDE, centre, centre, 4, 4) * 150 if i < 4 else np.zeros((SIDE, SIDE))  # the last: no galaxy
        for angle in np.arange(k) * 2 * math.pi / k + 0.3:  # k blobs on a ring 22 px from the centre
            light += gaussian(SIDE, centre + 22 * math.sin(angle), centre + 22 * math.cos(angle), 1.2, 1.2) * 80
        images.append(draw(rng, SIDE, (20, 20, 20), (2, 2, 2), light))
    images += [images[0]] * 5  # the report needs ten images
    stats = measure(galaxy10_file(tmp_path / "sources.h5", np.stack(images))).stats
    area = (SIDE * PXSCALE / 60) ** 2  # arcmin^2 of the whole image
    np.testing.assert_allclose(stats["source_density"][:5] * area, counts, atol=1e-9)
    assert np.isfinite(stats["r_half"][:4]).all() and np.isnan(stats["r_half"][4])  # blobs are not the galaxy


def test_elliptical_gaussian_galaxy_size_shape_colour_and_centre(tmp_path):
    rng = np.random.default_rng(2)
    side = 128
    cy, cx = (side - 1) / 2 - 0.7, (side - 1) / 2 + 1.3
    shapes = [(8.0, 4.0, math.radians(30)), (5.0, 5.0, 0.0)]  # (sigma major, sigma minor, angle)
    colour = np.array([200.0, 150.0, 100.0])  # peak above the sky per band: B/R 0.5, G/R 0.75
    images = [draw(rng, side, (20, 20, 20), (2, 2, 2), gaussian(side, cy, cx, *shape), colour) for shape in shapes]
    stats = measure(galaxy10_file(tmp_path / "galaxy.h5", np.stack(images * 5)), size=side).stats
    root = math.sqrt(2 * math.log(2))
    for i, (major, minor, _) in enumerate(shapes):
        assert stats["axis_ratio"][i] == pytest.approx(minor / major, abs=0.03)
        assert stats["r_half"][i] == pytest.approx(math.sqrt(major * minor) * root * PXSCALE, rel=0.04)
        r20, r80 = math.sqrt(-2 * math.log(0.8)), math.sqrt(-2 * math.log(0.2))  # in units of sigma
        assert stats["concentration"][i] == pytest.approx(5 * math.log10(r80 / r20), abs=0.08)
        assert stats["colour_br"][i] == pytest.approx(0.5, abs=0.02)
        assert stats["colour_gr"][i] == pytest.approx(0.75, abs=0.02)
        # chroma: (max - min) / mean of the three bands = (200 - 100) / 150 on every pixel of this galaxy
        assert stats["chroma"][i] == pytest.approx(100 / 150, abs=0.05)
        # the 3x3 pixels at the nearest pixel to the centre, luminance 150 at the peak
        yy, xx = np.mgrid[-1:2, -1:2] + np.array([round(cy), round(cx)])[:, None, None]
        expected = 150 * gaussian(side, cy, cx, *shapes[i])[yy, xx].mean()
        assert stats["central_brightness"][i] == pytest.approx(expected, abs=2.0)


def test_sizes_are_in_arcsec_whatever_the_stored_side(tmp_path):
    """The same galaxy stored at 128 px and at 64 px (pixels twice as wide) has the same r_half in arcsec."""
    rng = np.random.default_rng(3)
    light = gaussian(128, 63.5, 63.5, 6, 6) * 180
    big = np.stack([draw(rng, 128, (20, 20, 20), (1, 1, 1), light)] * 10)
    file = galaxy10_file(tmp_path / "big.h5", big, pxscale=0.25)
    at_64 = measure(file, size=64).stats["r_half"]  # resized to 64 px: 0.5 arcsec per pixel
    expected = 6 * math.sqrt(2 * math.log(2)) * 0.25
    np.testing.assert_allclose(measure(file, size=128).stats["r_half"], expected, rtol=0.03)
    np.testing.assert_allclose(at_64, expected, rtol=0.06)


# ---------------------------------------------------------------------------------------------- comparison


def test_univariate_auc_counts_pairs_and_half_ties():
    from model.realism import univariate_auc

    assert univariate_auc(np.array([1.0, 2, 3]), np.array([2.0])) == pytest.approx(0.5)  # (0 + 1/2 + 1) / 3
    assert univariate_auc(np.array([3.0, 4, np.nan]), np.array([1.0, 2, 3.5])) == pytest.approx(5 / 6)
    assert math.isnan(univariate_auc(np.array([np.nan]), np.array([1.0])))


@pytest.fixture(scope="module")
def populations(tmp_path_factory) -> dict[str, Path]:
    """Galaxy files: two drawn alike (sky 20), one with a brighter sky (40), a small one, 12 without labels."""
    root = tmp_path_factory.mktemp("populations")
    unlabelled = population(12, 5, 20.0)
    return {
        "a": galaxy10_file(root / "a.h5", population(60, 1, 20.0)),
        "b": galaxy10_file(root / "b.h5", population(60, 2, 20.0)),
        "bright": galaxy10_file(root / "bright.h5", population(60, 3, 40.0)),
        "small": galaxy10_file(root / "small.h5", population(20, 4, 20.0)),
        "unlabelled": make_galaxy10(
            root / "unlabelled.h5", n=12, side=SIDE, images=unlabelled, ans=None, pxscale=np.full(12, PXSCALE)
        ),
    }


def test_two_sample_auc_is_chance_for_one_distribution_and_one_for_different_skies(populations):
    from model.realism import compare

    a, b, bright = (measure(populations[k]) for k in ("a", "b", "bright"))
    alike, apart = compare(a, b), compare(a, bright)
    assert abs(alike.auc - 0.5) < 0.15, alike.fold_aucs
    assert apart.auc > 0.95, apart.fold_aucs
    assert apart.statistics["sky_r"]["auc"] < 0.05  # the real side (a) has the darker sky
    assert apart.worst[0].startswith("sky_")


def test_the_larger_side_is_subsampled_to_four_times_the_smaller(populations):
    from model.realism import compare

    report = compare(measure(populations["small"]), measure(populations["a"]))
    assert (report.n_real, report.n_synthetic) == (20, 60)
    assert (report.n_real_used, report.n_synthetic_used) == (20, 60)
    report = compare(measure(populations["small"]), measure(populations["a"]), max_ratio=2)
    assert (report.n_real_used, report.n_synthetic_used) == (20, 40)


# ---------------------------------------------------------------------------------------------- the command


def galaxy(*args: str):
    """Run `galaxy ARGS` in this process."""
    from cli.main import app

    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


LAST_LINE = re.compile(
    r"^realism: AUC (\d\.\d{3}) ± (\d\.\d{3}) \((\d+) real vs (\d+) synthetic; worst statistic (\w+) AUC (\d\.\d{3})\)$"
)


def test_command_writes_the_report_and_ends_with_the_auc_line(populations, tmp_path):
    out = tmp_path / "report"
    result = galaxy(
        "data", "realism", "--real", str(populations["a"]), "--synthetic", str(populations["bright"]),
        "--out", str(out), "--size", str(SIDE),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    match = LAST_LINE.match(result.stdout.strip().splitlines()[-1])
    assert match, result.stdout
    assert match.group(3, 4) == ("60", "60") and match.group(5).startswith("sky_")
    report = json.loads((out / "realism.json").read_text())
    assert float(match.group(1)) == pytest.approx(report["auc"], abs=5e-4)
    assert len(report["per_class"]) == 10 and report["note"] is None
    expected = {"realism.json", "realism_by_statistic.csv", "realism_by_class.csv", "realism_images.csv"}
    assert {p.name for p in out.iterdir()} == expected | {"realism_images.png", "realism_statistics.png"}
    assert not list(tmp_path.glob(".report*"))  # no temporary folder left beside it
    assert not Path("mlflow").exists()  # no tracking URI set: no MLflow store made in the working folder


def test_real_file_without_labels_skips_the_per_class_part_with_a_note(populations, tmp_path):
    out = tmp_path / "report"
    result = galaxy(
        "data", "realism", "--real", str(populations["unlabelled"]), "--synthetic", str(populations["a"]),
        "--out", str(out), "--size", str(SIDE),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "no labels" in notes[0] and "unlabelled.h5" in notes[0]
    match = LAST_LINE.match(result.stdout.strip().splitlines()[-1])
    assert match and match.group(3, 4) == ("12", "60")  # images measured, not the 12 vs 48 the classifier saw
    report = json.loads((out / "realism.json").read_text())
    assert report["per_class"] is None and "no labels" in report["note"]
    assert not (out / "realism_by_class.csv").exists()


def test_bad_inputs_give_one_line_naming_the_file_and_write_nothing(populations, tmp_path):
    out = tmp_path / "report"
    good = str(populations["a"])
    not_h5 = tmp_path / "notes.h5"
    not_h5.write_text("not an HDF5 file")
    no_images = make_galaxy10(tmp_path / "no_images.h5", n=12, images=None)
    cases = [
        (["--real", str(tmp_path / "missing.h5"), "--synthetic", good], ["missing.h5", "no such file"]),
        (["--real", good, "--synthetic", str(not_h5)], ["notes.h5", "not a readable HDF5 file"]),
        (["--real", str(no_images), "--synthetic", good], ["no_images.h5", "missing key(s) images"]),
        (["--real", str(populations["small"]), "--synthetic", good, "--limit", "10", "--size", "128"],
         ["small.h5", "smaller than the common size 128"]),
    ]  # fmt: skip
    for args, needles in cases:
        assert_one_line_error(galaxy("data", "realism", *args, "--out", str(out)), *needles)
    few = galaxy10_file(tmp_path / "few.h5", population(6, 9, 20.0))
    result = galaxy("data", "realism", "--real", good, "--synthetic", str(few), "--out", str(out), "--size", "64")
    assert_one_line_error(result, "few.h5", "only 6 images")
    assert not out.exists() and not list(tmp_path.glob(".report*"))


def test_the_installed_command_prints_a_missing_file_as_one_line(tmp_path):
    result = console("data", "realism", "--real", str(tmp_path / "gone.h5"), "--synthetic", str(tmp_path / "x.h5"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'gone.h5'}: no such file"]


def test_report_is_an_mlflow_run_in_galaxy_data(populations, mlflow_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    from tasks.realism import realism_report

    uri = f"sqlite:///{mlflow_store / 'mlflow' / 'mlflow.db'}"
    use_store(uri, monkeypatch)
    result = realism_report(populations["a"], populations["bright"], mlflow_store / "report", size=SIDE)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("galaxy-data").experiment_id])
    assert [r.info.run_id for r in runs] == [result.run_id]
    run = runs[0]
    assert run.info.run_name == "realism-synthetic" and run.data.tags["stage"] == "realism"
    metrics = run.data.metrics
    assert metrics["realism_auc"] == pytest.approx(result.auc) and result.auc > 0.95
    assert metrics["realism_auc_sd"] == pytest.approx(result.auc_sd)
    report = json.loads((mlflow_store / "report" / "realism.json").read_text())
    assert metrics["realism_auc_sky_r"] == pytest.approx(report["statistics"]["sky_r"]["auc"])
    assert metrics["realism_real_sky_g"] == pytest.approx(report["statistics"]["sky_g"]["real"]["median"])
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "realism")}
    assert {"realism/realism.json", "realism/realism_images.png", "realism/realism_statistics.png"} <= artifacts
