"""Codebook atlas: usage numbers in figures, heads/tails index draws, code panels, PCA, t-SNE, separability."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from model import atlas, embedding
from model.galaxy10 import CLASS_NAMES
from model.plotting import atlas as figures
from model.plotting import grids, save_figure

GRID = (4, 4)  # latent grid (h, w)
SCALE = 4  # fake decoder upsampling: H = SCALE * h


def fake_decode(indices: np.ndarray) -> np.ndarray:
    """(B, h, w) codes -> (B, SCALE*h, SCALE*w, 3) uint8: one deterministic colour per code."""
    palette = (np.stack([np.arange(256) * 37 % 256, np.arange(256) * 91 % 256, np.arange(256) * 53 % 256], 1)).astype(
        np.uint8
    )
    img = palette[np.asarray(indices) % 256]  # (B, h, w, 3)
    return img.repeat(SCALE, axis=1).repeat(SCALE, axis=2)


def fake_decode_latents(z_q: np.ndarray) -> np.ndarray:
    """(B, D, h, w) -> (B, SCALE*h, SCALE*w, 3) float: the first three channels times 1.5 (so outside [-1, 1])."""
    img = 1.5 * np.moveaxis(z_q[:, :3], 1, -1)  # (B, h, w, 3)
    return img.repeat(SCALE, axis=1).repeat(SCALE, axis=2)


def blobs(n_per: int = 30, dims: int = 20, classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated classes: each class points along its own direction (separable by cosine too)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dims)[:classes] * 10.0
    labels = np.repeat(np.arange(classes), n_per)
    return (centres[labels] + rng.normal(size=(len(labels), dims))).astype(np.float32), labels


# --- A1 -----------------------------------------------------------------------------------------------


def test_frequency_figure_title_reports_uniform_and_one_hot_usage():
    uniform = figures.code_frequency_figure(np.full(16, 5))
    assert "utilisation 100.0%" in uniform.get_suptitle()
    assert "perplexity 16.0" in uniform.get_suptitle() and "100.0%" in uniform.get_suptitle()
    one_hot = np.zeros(32, dtype=np.int64)
    one_hot[7] = 36
    title = figures.code_frequency_figure(one_hot).get_suptitle()
    assert "perplexity 1.0" in title and "utilisation 3.1% (1 used)" in title


def test_frequency_figure_utilisation_of_known_indices():
    from model.metrics import code_counts

    counts = code_counts(np.array([[0, 0, 1], [5, 5, 5]]), 10)
    assert "utilisation 30.0% (3 used)" in figures.code_frequency_figure(counts).get_suptitle()


def test_frequency_figure_agrees_with_metrics():
    from model.metrics import codebook_usage

    indices = np.random.default_rng(0).zipf(1.5, size=(20, 4, 4)) % 64
    usage = codebook_usage(indices, 64)
    title = figures.code_frequency_figure(usage.counts).get_suptitle()
    assert f"perplexity {usage.perplexity:.1f} (perplexity/K = {100 * usage.effective_usage:.1f}%)" in title
    assert f"utilisation {100 * usage.utilisation:.1f}%" in title


# --- A2 -----------------------------------------------------------------------------------------------


COUNTS = np.array([0, 50, 3, 0, 20, 1, 7, 0, 100, 2])  # used: 8 > 1 > 4 > 6 > 2 > 9 > 5


def test_ranked_codes_orders_used_codes_only():
    assert atlas.ranked_codes(COUNTS, "top").tolist() == [8, 1, 4, 6, 2, 9, 5]
    assert atlas.ranked_codes(COUNTS, "bottom").tolist() == [5, 9, 2, 6, 4, 1, 8]
    with pytest.raises(ValueError):
        atlas.ranked_codes(COUNTS, "middle")


@pytest.mark.parametrize(
    "which, n, allowed", [("top", 2, {8, 1}), ("bottom", 3, {5, 9, 2}), ("top", 100, {8, 1, 4, 6, 2, 9, 5})]
)
def test_restricted_indices_draw_only_from_the_chosen_codes(which, n, allowed):
    idx = atlas.restricted_indices(COUNTS, np.random.default_rng(0), (50, *GRID), n, which)
    assert idx.shape == (50, *GRID)
    assert set(np.unique(idx).tolist()) == allowed  # all of them appear in 800 draws, nothing else


def test_restricted_indices_are_seeded():
    a = atlas.restricted_indices(COUNTS, 3, (2, *GRID), 4, "top")
    b = atlas.restricted_indices(COUNTS, 3, (2, *GRID), 4, "top")
    np.testing.assert_array_equal(a, b)


def test_unused_indices():
    assert atlas.unused_indices(np.ones(8), 0, (2, *GRID)) is None
    idx = atlas.unused_indices(COUNTS, 0, (20, *GRID))
    assert set(np.unique(idx).tolist()) == {0, 3, 7}


# --- A3 -----------------------------------------------------------------------------------------------


def test_spatial_heatmap_of_a_known_grid():
    grids = np.array([[[1, 2], [2, 2]], [[2, 0], [1, 2]]])  # (N=2, h=2, w=2)
    np.testing.assert_array_equal(atlas.spatial_heatmap(grids, 2), [[1, 1], [1, 2]])
    np.testing.assert_array_equal(atlas.spatial_heatmap(grids, 1), [[1, 0], [1, 0]])
    assert atlas.spatial_heatmap(grids, 9).sum() == 0


def test_pick_codes_most_then_least_used():
    assert atlas.pick_codes(COUNTS, 2, 2) == [8, 1, 5, 9]
    assert atlas.pick_codes(np.array([0, 4, 2]), 2, 2) == [1, 2]  # no duplicates, never an unused code


@pytest.mark.parametrize("d, shape", [(256, (16, 16)), (64, (8, 8)), (32, (4, 8)), (12, (3, 4)), (13, (4, 4))])
def test_near_square(d, shape):
    assert atlas.near_square(d) == shape


def test_codebook_images_fill_the_grid_with_one_vector():
    codebook = np.arange(30, dtype=np.float32).reshape(10, 3) / 30  # (K=10, D=3)
    raw = atlas.codebook_images(codebook, fake_decode_latents, [2, 7], GRID)
    assert raw.shape == (2, SCALE * GRID[0], SCALE * GRID[1], 3)
    np.testing.assert_allclose(raw[1], np.broadcast_to(1.5 * codebook[7], raw[1].shape), rtol=1e-6)


def test_code_panels_reject_codes_outside_the_codebook():
    from model.errors import UserError

    with pytest.raises(UserError, match="outside the codebook"):
        figures.code_panels_figure(np.zeros((10, 3)), fake_decode_latents, np.zeros((2, *GRID), int), [3, 10])


def test_raw_and_rescaled_display():
    img = np.array([[[-2.0, 0.0, 0.5]]])
    np.testing.assert_allclose(atlas.raw_to_display(img), [[[0.0, 0.5, 0.75]]])
    np.testing.assert_array_equal(atlas.rescale_to_uint8(img), [[[0, 204, 255]]])
    assert atlas.rescale_to_uint8(np.ones((2, 2, 3))).max() == 0


# --- A4 -----------------------------------------------------------------------------------------------


def test_randomized_pca_matches_exact_pca():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 12)) * np.linspace(8, 0.2, 12)) @ rng.normal(size=(12, 90)) + 5.0  # decaying spectrum
    for normalise in (False, True):
        xn = x / np.linalg.norm(x, axis=1, keepdims=True) if normalise else x
        u, s, _ = np.linalg.svd(xn - xn.mean(0), full_matrices=False)
        exact = u[:, :4] * s[:4]
        approx = embedding.randomized_pca(x, 4, normalise=normalise, chunk=64)
        np.testing.assert_allclose(np.abs(approx), np.abs(exact), atol=1e-3 * np.abs(exact).max())


def test_reduce_features_cosine_ignores_row_scale_and_flattens():
    x, _ = blobs(dims=60)
    scaled = x * np.random.default_rng(1).uniform(0.1, 10, size=(len(x), 1))
    a = embedding.reduce_features(x.reshape(len(x), 3, 4, 5), 10)
    np.testing.assert_allclose(a, embedding.reduce_features(scaled, 10), atol=1e-4)
    assert a.shape == (len(x), 10) and a.dtype == np.float32
    assert embedding.reduce_features(x, None, metric="euclidean").shape == x.shape


@pytest.mark.parametrize("backend", ["opentsne", "sklearn"])
def test_tsne_separates_two_blobs(backend):
    x, labels = blobs(n_per=40, dims=30)
    emb = embedding.embed_tsne(x, perplexity=50, seed=0, pca_dims=10, backend=backend, n_jobs=1, n_iter=400)
    assert emb.shape == (80, 2) and np.isfinite(emb).all()
    assert embedding.knn_accuracy(emb, labels, k=5, metric="euclidean")[0] > 0.95


def test_knn_accuracy_separable_and_random():
    x, labels = blobs(n_per=40)
    mean, std = embedding.knn_accuracy(x, labels)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    noise, random_labels = rng.normal(size=(400, 10)), rng.integers(0, 4, 400)
    assert abs(embedding.knn_accuracy(noise, random_labels)[0] - embedding.chance_accuracy(random_labels)) < 0.1


def test_nmi_and_chance_levels():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert embedding.label_nmi(np.array([5, 5, 3, 3, 9, 9]), labels) == pytest.approx(1.0)  # relabelled clusters
    x, blob_labels = blobs(n_per=30, classes=3)
    assert embedding.label_nmi(x, blob_labels) == pytest.approx(1.0)
    assert embedding.chance_nmi(blob_labels, blob_labels, n_shuffles=20) < 0.1
    assert embedding.chance_accuracy(np.array([0, 1, 1, 1, 2])) == pytest.approx(0.6)


def test_separability_reports_values_beside_chance():
    x, labels = blobs(n_per=20, dims=80, classes=3)
    s = embedding.separability(x, labels, pca_dims=10)
    assert s.knn == pytest.approx(1.0) and s.knn_chance == pytest.approx(1 / 3)
    assert s.nmi > 0.95 and s.nmi_chance < 0.15


def test_shuffled_labels_fall_to_chance_on_separable_features():
    x, labels = blobs(n_per=30, dims=20, classes=3)
    shuffled = np.random.default_rng(1).permutation(labels)
    real, fake = (
        embedding.separability(x, labels, k=1, pca_dims=10),
        embedding.separability(x, shuffled, k=1, pca_dims=10),
    )
    assert real.knn == pytest.approx(1.0) and real.nmi == pytest.approx(1.0)
    # 1-NN that could see the point itself (or its own label) would still score 1 here
    assert abs(fake.knn - fake.knn_chance) < 0.2 and fake.nmi < 0.1
    assert fake.knn_chance == pytest.approx(1 / 3) and fake.nmi_chance < 0.1


def test_knn_accuracy_matches_a_hand_written_nearest_neighbour_vote():
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], 25)
    x = rng.normal(size=(50, 3)) + labels[:, None] * np.array([1.2, 0.0, 0.0])  # overlapping: accuracy well below 1
    scores = []
    for train, test in StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(x, labels):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)  # cosine distance = 1 - u.v
        distance = 1.0 - unit[test] @ unit[train].T  # (n_test, n_train)
        nearest = labels[train][np.argsort(distance, axis=1)[:, :5]]  # (n_test, 5) labels of the 5 nearest
        predicted = (nearest.sum(1) >= 3).astype(int)  # majority of 5 votes between two classes
        scores.append(np.mean(predicted == labels[test]))
    mean, std = embedding.knn_accuracy(x, labels, k=5, folds=5, seed=0)
    assert 0.55 < mean < 0.95
    assert mean == pytest.approx(np.mean(scores)) and std == pytest.approx(np.std(scores))


def test_nmi_of_a_tiny_case_by_hand():
    # labels 0 0 1 1 against clusters 0 0 0 1: p(c0,l0) = 1/2, p(c0,l1) = 1/4, p(c1,l1) = 1/4
    mi = 0.5 * np.log(0.5 / (0.75 * 0.5)) + 0.25 * np.log(0.25 / (0.75 * 0.5)) + 0.25 * np.log(0.25 / (0.25 * 0.5))
    h_labels, h_clusters = np.log(2), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    expected = mi / ((h_labels + h_clusters) / 2)  # sklearn's default: arithmetic mean of the entropies
    assert embedding.label_nmi(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(expected)
    assert expected == pytest.approx(0.3437, abs=1e-4)


# --- figures ------------------------------------------------------------------------------------------


def _figures():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(10, 12)).astype(np.float32)
    indices = rng.choice(atlas.ranked_codes(COUNTS), size=(6, *GRID))
    images = fake_decode(rng.integers(0, 10, (3, *GRID)))
    emb, labels = rng.normal(size=(30, 2)), np.arange(30) % 10
    yield figures.code_frequency_figure(COUNTS)
    yield figures.heads_tails_figure(fake_decode, COUNTS, grid_hw=GRID, ns=(2, 4), per_row=3)
    yield figures.heads_tails_figure(fake_decode, np.ones(10), grid_hw=GRID, ns=(2,), per_row=3)
    yield figures.code_panels_figure(codebook, fake_decode_latents, indices, atlas.pick_codes(COUNTS, 1, 1))
    yield figures.atlas_figure(emb, labels, CLASS_NAMES, "t-SNE")
    yield figures.separability_figure(0.8, 0.15, 0.4, 0.01, knn_std=0.02)
    yield figures.random_codes_figure(fake_decode, 10, GRID, 4, 0, counts=COUNTS, per_row=2)
    yield grids.comparison_figure([("K=8", images), ("K=16", images)], images, "reconstructions")
    yield grids.metrics_table_figure([{"K": 8, "mse": 0.012345}, {"K": 16, "mse": float("nan")}], ["K", "mse"])
    yield grids.labelled_grid_figure([images, images[:1]], ["T=0.5", "T=2.0"], "temperature sweep")


def test_every_figure_has_a_title_and_saves(tmp_path):
    for i, fig in enumerate(_figures()):
        assert isinstance(fig, Figure) and fig.get_suptitle(), i
        path = save_figure(fig, tmp_path / f"fig{i}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"fig{i}.png" for i in range(10))  # no temp files left


def test_heads_tails_rows_and_unused_note():
    fig = figures.heads_tails_figure(fake_decode, COUNTS, grid_hw=GRID, ns=(2, 4), per_row=3)
    assert len(fig.axes) == 5  # top 2, top 4, bottom 2, bottom 4, unused
    assert "unused (3)" in fig.axes[-1].get_ylabel()
    full = figures.heads_tails_figure(fake_decode, np.ones(10), grid_hw=GRID, ns=(2,), per_row=3)
    assert len(full.axes) == 2 and "every code is used" in full.get_supxlabel()


def test_labelled_grid_rejects_mismatched_labels():
    with pytest.raises(ValueError):
        grids.labelled_grid_figure([fake_decode(np.zeros((1, *GRID), int))], ["a", "b"], "t")
