import math

import h5py
import numpy as np
import pytest
from scipy import ndimage  # scikit-learn's dependency

import model.synth as synth
import model.synth_labels as synth_labels_module
from model.errors import UserError
from model.galaxy10 import CLASS_COUNTS, CLASS_FRACTIONS, IMAGE_KEY, LABEL_KEY, NUM_CLASSES
from model.synth import (
    PIXEL_SCALE,
    SYNTH_VERSION,
    render_galaxy,
    render_with_redshift,
    synthesize,
)
from model.synth_labels import (
    CONFUSABLE,
    LABEL_NOISE,
    class_counts,
    drawn_class,
    drawn_classes,
    drawn_classes_of,
    image_rng,
    source_label,
    synth_labels,
)
from model.synth_redshift import REDSHIFT_MISSING, Z_RANGE

N, SIZE = 20, 64


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    return synthesize(N, tmp_path_factory.mktemp("synth") / "g10.h5", size=SIZE, seed=3)


def read_all(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


def same(a, b):
    """Byte for byte (NaN redshifts included), with the same dtype and shape."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def luminance(img):
    return img.astype(np.float64).sum(axis=-1)


def axis_ratio(img):
    """sqrt(minor / major) second moment of the sky-subtracted light of the central object."""
    lum = luminance(img)
    s = lum.shape[0]
    y, x = np.mgrid[:s, :s] - (s - 1) / 2
    sky = np.median(lum)
    noise = 1.4826 * np.median(np.abs(lum - sky))
    w = np.clip(lum - sky - 5 * noise, 0, None)
    blobs, _ = ndimage.label(w > 0)
    w = w * (blobs == blobs[s // 2, s // 2])  # only the galaxy at the centre, not stars
    w /= w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    cov = np.array(
        [
            [(w * (x - mx) ** 2).sum(), (w * (x - mx) * (y - my)).sum()],
            [(w * (x - mx) * (y - my)).sum(), (w * (y - my) ** 2).sum()],
        ]
    )
    lo, hi = np.linalg.eigvalsh(cov)
    return np.sqrt(lo / hi)


@pytest.mark.parametrize("n", [1, 7, 20, 999, 17736])
def test_class_counts_sum_to_n_in_galaxy10_proportions(n):
    counts = class_counts(n)
    assert counts.sum() == n and len(counts) == NUM_CLASSES
    assert np.all(np.abs(counts - n * CLASS_FRACTIONS) < 1)
    if n == sum(CLASS_COUNTS):
        assert tuple(counts) == CLASS_COUNTS


def test_labels_are_exact_proportions_shuffled_by_seed():
    labels = synth_labels(500, seed=0)
    assert labels.dtype == np.uint8
    assert np.array_equal(np.bincount(labels, minlength=NUM_CLASSES), class_counts(500))
    assert np.array_equal(labels, synth_labels(500, seed=0))
    assert not np.array_equal(labels, synth_labels(500, seed=1))
    assert not np.all(np.diff(labels.astype(int)) >= 0)  # shuffled, not sorted


def test_file_has_the_galaxy10_schema(small_file):
    with h5py.File(small_file, "r") as f:
        assert set(f.keys()) == {IMAGE_KEY, LABEL_KEY, "ra", "dec", "redshift", "pxscale"}
        assert f[IMAGE_KEY].shape == (N, SIZE, SIZE, 3) and f[IMAGE_KEY].dtype == np.uint8
        assert f[IMAGE_KEY].chunks == (1, SIZE, SIZE, 3)
        assert f[LABEL_KEY].shape == (N,) and f[LABEL_KEY].dtype == np.uint8
        for key, dtype in (("ra", np.float64), ("dec", np.float64), ("redshift", np.float32), ("pxscale", np.float32)):
            assert f[key].shape == (N,) and f[key].dtype == dtype, key
        attrs = dict(f.attrs)
    assert attrs["generator"] == "galaxy-synth" and attrs["version"] == SYNTH_VERSION
    assert attrs["seed"] == 3 and bool(attrs["synthetic"])
    data, _ = read_all(small_file)
    assert np.array_equal(data[LABEL_KEY], synth_labels(N, 3))
    known = data["redshift"][np.isfinite(data["redshift"])]
    assert np.all((known >= Z_RANGE[0]) & (known <= Z_RANGE[1]))
    assert np.all((data["ra"] >= 0) & (data["ra"] < 360) & (data["dec"] >= -20) & (data["dec"] <= 35))
    assert np.allclose(data["pxscale"], PIXEL_SCALE * 256 / SIZE)  # same 67" field at any size
    assert not small_file.with_name(small_file.name + ".partial").exists()


def test_stored_redshifts_miss_at_the_documented_rate_and_follow_galaxy10(tmp_path):
    # 300 tiny images: NaN for about REDSHIFT_MISSING of them (binomial, 4 sigma, at least one), the rest in the
    # drawn range with Galaxy10's median (the gamma's is 0.070; the real column's 0.074)
    n = 300
    z = read_all(synthesize(n, tmp_path / "z.h5", size=16, seed=5))[0]["redshift"]
    missing = int(np.isnan(z).sum())
    sd = math.sqrt(n * REDSHIFT_MISSING * (1 - REDSHIFT_MISSING))
    assert 1 <= missing <= n * REDSHIFT_MISSING + 4 * sd
    known = z[~np.isnan(z)]
    assert np.all((known >= Z_RANGE[0]) & (known <= Z_RANGE[1]))
    assert 0.055 < np.median(known) < 0.09


def test_pixel_scale_is_decals_at_256(tmp_path):
    data, _ = read_all(synthesize(1, tmp_path / "one.h5", size=256))
    assert data[IMAGE_KEY].shape == (1, 256, 256, 3)
    assert data["pxscale"][0] == np.float32(0.262)


def test_same_seed_same_bytes_other_seed_differs(small_file, tmp_path):
    a, _ = read_all(small_file)
    b, _ = read_all(synthesize(N, tmp_path / "again.h5", size=SIZE, seed=3))
    c, _ = read_all(synthesize(N, tmp_path / "other.h5", size=SIZE, seed=4))
    for key in a:
        assert same(a[key], b[key]), key
    assert not np.array_equal(a[IMAGE_KEY], c[IMAGE_KEY])
    assert np.array_equal(render_galaxy(5, image_rng(0, 1), 48), render_galaxy(5, image_rng(0, 1), 48))


def test_two_workers_write_the_same_file(small_file, tmp_path):
    a, _ = read_all(small_file)
    seen = []
    b, _ = read_all(synthesize(N, tmp_path / "w2.h5", size=SIZE, seed=3, workers=2, progress=seen.append))
    for key in a:
        assert same(a[key], b[key]), key
    assert seen == list(range(1, N + 1))


def test_spawned_workers_write_the_same_file(tmp_path, monkeypatch):
    # the start method used when the caller runs threads: jobs must pickle and workers must agree byte for byte
    a, _ = read_all(synthesize(4, tmp_path / "w1.h5", size=32, seed=8))
    monkeypatch.setattr(synth, "_start_method", lambda: "spawn")
    b, _ = read_all(synthesize(4, tmp_path / "spawn.h5", size=32, seed=8, workers=2))
    for key in a:
        assert same(a[key], b[key]), key


def test_failure_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "g10.h5"
    out.write_bytes(b"old")
    real, calls = synth.render_with_redshift, []

    def flaky(label, rng, size=256):
        calls.append(label)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(label, rng, size)

    monkeypatch.setattr(synth, "render_with_redshift", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        synthesize(6, out, size=32)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["g10.h5"]


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="at least 1"):
        synthesize(0, tmp_path / "x.h5")
    with pytest.raises(UserError, match="does not exist"):
        synthesize(2, tmp_path / "missing" / "x.h5")
    with pytest.raises(ValueError):
        render_galaxy(NUM_CLASSES, image_rng(0, 0), 32)


def test_images_have_dark_sky_and_a_bright_centre(small_file):
    data, _ = read_all(small_file)
    for img in data[IMAGE_KEY]:
        lum = luminance(img) / 3
        c = SIZE // 2
        corners = np.concatenate([lum[:8, :8], lum[:8, -8:], lum[-8:, :8], lum[-8:, -8:]]).ravel()
        assert np.median(lum) < 40  # a dark sky
        assert lum[c - 6 : c + 6, c - 6 : c + 6].max() > np.median(corners) + 80
        assert img.std() > 3  # noise and structure, not a flat frame


@pytest.mark.parametrize(
    "label, lo, hi", [(8, 0.0, 0.3), (9, 0.15, 0.45), (4, 0.25, 0.6), (3, 0.45, 0.85), (2, 0.8, 1.0)]
)
def test_axis_ratios_follow_the_class(label, lo, hi):
    # edge-on thinner than cigar, cigar thinner than in-between, round smooth round (PSF included)
    q = np.median([axis_ratio(render_galaxy(label, image_rng(11, i), 128)) for i in range(6)])
    assert lo < q < hi


def test_smooth_galaxies_are_redder_than_spirals_but_the_colours_overlap():
    def red_minus_blue(label):
        out = []
        for i in range(12):
            img = render_galaxy(label, image_rng(5, i), 96).astype(np.float64)
            lum = img.sum(-1)
            mask = lum > np.percentile(lum, 95)
            out.append((img[..., 0][mask] - img[..., 2][mask]).mean())
        return np.array(out)

    smooth, spiral = red_minus_blue(2), red_minus_blue(7)
    assert smooth.mean() > spiral.mean() + 4  # the red sequence and the blue cloud
    assert spiral.max() > smooth.min()  # but colour alone does not separate them (real ones overlap too)


def test_redshift_falls_with_apparent_size():
    # the same physical size seen smaller means further away: median redshift of small vs large smooth galaxies
    zs, sizes = [], []
    for i in range(40):
        rng = image_rng(9, i)
        img, z = render_with_redshift(2, rng, 64)
        zs.append(z)
        sizes.append((luminance(img) > np.median(luminance(img)) + 60).sum())
    zs, sizes = np.array(zs), np.array(sizes)
    assert np.corrcoef(np.argsort(np.argsort(zs)), np.argsort(np.argsort(sizes)))[0, 1] < -0.3


def test_an_empty_sky_renders_at_the_legacy_viewer_offset():
    # every channel is m = 0.03 before the stretch: asinh(20 * 0.03) / sqrt(20) * 255 = 32.43 -> 32 after rounding
    rgb = synth.asinh_rgb(np.zeros((3, 4, 4), dtype=np.float32))
    assert np.all(rgb == 32)


def test_rendered_sky_is_grey_at_galaxy10_level_with_mostly_shared_noise():
    img = render_galaxy(2, image_rng(4, 0), 128).astype(np.float64)
    border = np.concatenate([img[:16].reshape(-1, 3), img[-16:].reshape(-1, 3)])  # (P, 3) sky rows
    assert np.all(np.abs(np.median(border, axis=0) - 33) <= 4)  # real Galaxy10 sky: about (34, 33, 33)
    centred = np.clip(border - np.median(border, axis=0), -40, 40)
    corr = np.corrcoef(centred.T)  # (3, 3) between R, G, B
    assert corr[0, 2] > 0.6  # grey noise (JPEG chroma subsampling, shared noise): about 0.8 in real images


def test_label_noise_draws_only_confusable_classes_at_the_documented_rate():
    n = 3000
    for label in range(NUM_CLASSES):
        rng = np.random.default_rng(label)
        drawn = np.array([drawn_class(label, rng) for _ in range(n)])
        wrong = drawn[drawn != label]
        rate = len(wrong) / n
        assert abs(rate - LABEL_NOISE) < 4 * np.sqrt(LABEL_NOISE / n)  # binomial, 4 sigma
        assert set(wrong.tolist()) <= set(CONFUSABLE[label])


def test_drawn_classes_replay_the_class_each_image_was_rendered_as(monkeypatch):
    seen = []

    def record(label, rng, size):  # stands in for the renderer: notes the class it is asked to draw
        seen.append(label)
        return np.zeros((size, size, 3), np.uint8), 0.1

    monkeypatch.setattr(synth, "render_with_redshift", record)
    monkeypatch.setattr(synth_labels_module, "LABEL_NOISE", 0.5)  # many wrong labels, so an off-by-one draw shows
    labels = synth_labels(60, seed=4)
    for i, label in enumerate(labels):
        synth._render_index((4, i, int(label), 8))
    drawn = drawn_classes(labels, seed=4)
    assert drawn.tolist() == seen
    assert 10 < int((drawn != labels).sum()) < 50  # the noise did move some of them


def test_drawn_classes_are_known_only_for_a_synthetic_file_in_its_own_order():
    labels = synth_labels(300, seed=2)
    assert source_label(300, 2) == "synthetic-n300-s2"
    assert np.array_equal(drawn_classes_of("synthetic-n300-s2", labels), drawn_classes(labels, 2))
    assert drawn_classes_of("Galaxy10_DECals.h5", labels) is None  # a real file: its truth is unknown
    assert drawn_classes_of("synthetic-n300-s3", labels) is None  # another seed's labels
    assert drawn_classes_of("synthetic-n300-s2", labels[::-1]) is None  # rows reordered
    assert drawn_classes_of("synthetic-n299-s2", labels[:299]) is None
    assert drawn_classes_of("my-synthetic-n300-s2", labels) is None
