"""Morphology judge: CNN shapes, training on a toy task, checkpoints, reports, Fréchet distance, figures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from model import judge, metrics
from model.checkpoint import load_model, save_checkpoint
from model.config import from_preset
from model.errors import UserError
from model.galaxy10 import CLASS_NAMES
from model.plotting import evaluation as figures
from model.training import Hooks, augment_square
from model.utils import uint8_to_unit

TINY = judge.JudgeConfig(
    image_size=16,
    num_classes=3,
    widths=(4, 8),
    dropout=0.0,
    epochs=4,
    batch_size=16,
    lr=1e-2,
    weight_decay=0.0,
    seed=0,
    device="cpu",
    eval_batch_size=32,
)


def colour_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16, 16, 3) uint8 noisy images whose dominant colour channel is the label (orientation-free)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 120, (n, 16, 16, 3))
    images[np.arange(n), :, :, labels] += 120
    return images.astype(np.uint8), labels


def test_cnn_shapes_and_features():
    model = judge.MorphologyCNN(TINY)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    assert model(x).shape == (5, 3)
    assert model.features(x).shape == (5, 8) and model.feature_dim == 8
    assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, 8)  # global pooling: any size


def test_training_lowers_the_loss_on_a_toy_task():
    train_x, train_y = colour_task(96, 0)
    val_x, val_y = colour_task(48, 1)
    logged, steps = [], []
    hooks = Hooks(log=lambda m, s: logged.append((s, m)), progress=lambda done, total: steps.append((done, total)))
    result = judge.train_judge(TINY, train_x, train_y, val_x, val_y, hooks)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert max(h["val_acc"] for h in result.history) > 0.9
    assert [s for s, _ in logged] == [1, 2, 3, 4] and steps[-1] == (24, 24)
    assert not result.model.training
    best = int(result.metrics["best_epoch"])
    balanced = [h["val_balanced_acc"] for h in result.history]  # the best epoch is chosen on every class
    assert result.history[best - 1]["val_balanced_acc"] == max(balanced) == result.metrics["val_balanced_acc"]


def test_class_weights_make_every_class_count_equally():
    labels = np.array([0, 0, 0, 1, 2])  # class 3 absent
    w = judge.class_weights(labels, 4, 1.0).numpy()
    # n_c ** -1 = (1/3, 1, 1, -), scaled so the weights summed over the 5 images are 5: (5/9, 5/3, 5/3, 0)
    np.testing.assert_allclose(w, [5 / 9, 5 / 3, 5 / 3, 0.0], rtol=1e-6)
    assert judge.class_weights(labels, 4, 0.0) is None  # plain cross-entropy


def test_validation_reports_balanced_accuracy_beside_accuracy():
    model = judge.MorphologyCNN(TINY)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([5.0] + [0.0] * (TINY.num_classes - 1)))  # always answers class 0
    images = torch.zeros(4, TINY.image_size, TINY.image_size, 3, dtype=torch.uint8)
    _, acc, balanced = judge._evaluate(model, images, torch.tensor([0, 0, 0, 1]), 2)
    assert acc == 0.75 and balanced == 0.5  # recall 1 for class 0, 0 for class 1


def test_training_resumes_exactly_from_its_checkpoint(tmp_path):
    train_x, train_y = colour_task(48, 0)
    val_x, val_y = colour_task(16, 1)
    straight = judge.train_judge(TINY, train_x, train_y, val_x, val_y)

    class Killed(Exception):
        pass

    def kill_after_two(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise Killed

    ckpt = tmp_path / "judge.pt"
    with pytest.raises(Killed):
        judge.train_judge(
            TINY, train_x, train_y, val_x, val_y, Hooks(checkpoint_path=ckpt, on_epoch_end=kill_after_two)
        )
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    resumed = judge.train_judge(TINY, train_x, train_y, val_x, val_y, Hooks(checkpoint_path=ckpt))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.metrics["best_epoch"] == straight.metrics["best_epoch"]
    for pa, pb in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(pa, pb)


def test_training_is_seeded():
    train_x, train_y = colour_task(32, 0)
    config = from_preset(
        judge.PRESETS, "demo", image_size=16, num_classes=3, widths=(4,), epochs=1, batch_size=16, device="cpu"
    )
    a = judge.train_judge(config, train_x, train_y, train_x, train_y)
    b = judge.train_judge(config, train_x, train_y, train_x, train_y)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_augmentation_only_moves_pixels():
    batch = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).view(2, 4, 4, 3)
    out = augment_square(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten(1, 2).sort(dim=1).values, batch.flatten(1, 2).sort(dim=1).values)
    assert torch.equal(out, augment_square(batch, torch.Generator().manual_seed(0)))


def test_predict_and_checkpoint_round_trip(tmp_path):
    model = judge.MorphologyCNN(TINY).eval()
    images, _ = colour_task(7, 2)
    probs, feats = judge.predict(model, images, batch_size=3)
    assert probs.shape == (7, 3) and feats.shape == (7, 8)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    save_checkpoint(tmp_path / "judge.pt", model, history=[{"epoch": 1.0}])
    loaded, ckpt = load_model(tmp_path / "judge.pt", judge.MorphologyCNN)
    assert loaded.config == TINY and ckpt["history"] == [{"epoch": 1.0}]
    np.testing.assert_array_equal(judge.predict(loaded, images)[0], probs)
    assert [p.name for p in tmp_path.iterdir()] == ["judge.pt"]
    with pytest.raises(UserError, match="the model expects 16x16x3"):
        judge.predict(model, np.zeros((1, 8, 8, 3), np.uint8))
    (tmp_path / "bad.pt").write_bytes(b"nonsense")
    with pytest.raises(UserError):
        load_model(tmp_path / "bad.pt", judge.MorphologyCNN)
    with pytest.raises(UserError):
        load_model(tmp_path / "missing.pt", judge.MorphologyCNN)


def test_presets():
    assert from_preset(judge.PRESETS, "article").widths == (32, 64, 128, 256)
    assert judge.JudgeConfig.from_dict(judge.PRESETS["demo"].to_dict()) == judge.PRESETS["demo"]
    with pytest.raises(UserError):
        from_preset(judge.PRESETS, "huge")


def test_classification_report_of_a_known_confusion():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    r = metrics.classification_report(y_true, y_pred, 4)
    np.testing.assert_array_equal(r["confusion"][:3, :3], [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert r["accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(r["precision"], [1.0, 0.5, 0.5, 0.0])  # class 3 never predicted: 0
    np.testing.assert_allclose(r["recall"], [2 / 3, 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(r["support"], [3, 2, 1, 0])
    with pytest.raises(ValueError):
        metrics.classification_report(y_true, y_pred + 2, 4)


def test_balanced_accuracy_averages_recall_over_the_classes_present():
    r = metrics.classification_report(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2]), 4)
    assert metrics.balanced_accuracy(r) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # class 3 has no image
    empty = np.array([], dtype=np.int64)
    assert np.isnan(metrics.balanced_accuracy(metrics.classification_report(empty, empty, 4)))


def test_conditional_accuracy():
    probs = np.eye(3)[[0, 1, 1, 2]]  # predictions 0, 1, 1, 2
    per_class, overall = metrics.conditional_accuracy(probs, np.array([0, 1, 2, 2]), 4)
    np.testing.assert_allclose(per_class[:3], [1.0, 1.0, 0.5])
    assert np.isnan(per_class[3]) and overall == pytest.approx(2.5 / 3)  # class-balanced, not 3 of 4


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-6)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T
    assert metrics.frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0.0, abs=1e-6)
    # non-diagonal but commuting: sigma and sigma^2 share eigenvectors, so the distance follows from eigenvalues
    lam = np.linalg.eigvalsh(sigma)
    expected = np.sum(lam + lam**2 - 2 * lam**1.5)
    assert metrics.frechet_distance(mu1, sigma, mu1, sigma @ sigma) == pytest.approx(expected, rel=1e-6)


def test_frechet_from_features_handles_few_samples():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(5, 16))  # rank-deficient covariances
    f2 = rng.normal(size=(5, 16)) + 3.0
    value = metrics.frechet_from_features(f1, f2)
    assert np.isfinite(value) and value > 16 * 9 * 0.5
    assert metrics.frechet_from_features(f1, f1) == pytest.approx(0.0, abs=1e-4)
    mu, sigma = metrics.feature_stats(f1)
    assert mu.shape == (16,) and sigma.shape == (16, 16)


def test_judge_figures_have_titles():
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 20, (10, 10))
    report = metrics.classification_report(rng.integers(0, 10, 50), rng.integers(0, 10, 50), 10)
    figs = [
        figures.confusion_figure(confusion, CLASS_NAMES),
        figures.class_accuracy_curve_figure(
            [1, 3, 9, 100], rng.uniform(size=(4, 10)), rng.uniform(size=4), CLASS_NAMES
        ),
        figures.precision_recall_figure(report, CLASS_NAMES),
    ]
    for fig in figs:
        assert isinstance(fig, Figure) and fig.get_suptitle()
    tick_labels = [t.get_text() for t in figs[0].axes[0].get_xticklabels()]
    assert tick_labels == list(CLASS_NAMES)


def test_judge_figure_titles_lead_with_the_balanced_accuracy():
    # class 0: 3 of 4 right, class 1: 0 of 1, class 2: 2 of 2 -> balanced 58.3 %, plain 71.4 %
    truth, guess = np.array([0, 0, 0, 0, 1, 2, 2]), np.array([0, 0, 0, 1, 0, 2, 2])
    report = metrics.classification_report(truth, guess, 3)
    names = CLASS_NAMES[:3]
    for fig in (figures.confusion_figure(report["confusion"], names), figures.precision_recall_figure(report, names)):
        assert "balanced accuracy 58.3%, plain 71.4%" in fig.get_suptitle()


def test_a_config_stored_before_survey_nuisances_still_loads_and_resumes(tmp_path):
    old = {  # a judge config as checkpoints stored it before the `nuisance` field existed
        "image_size": 16,
        "num_classes": 3,
        "widths": [4, 8],
        "dropout": 0.0,
        "epochs": 4,
        "batch_size": 16,
        "lr": 0.01,
        "weight_decay": 0.0,
        "augment": True,
        "blur": 1.5,
        "seed": 0,
        "device": "cpu",
        "eval_batch_size": 32,
    }
    config = judge.JudgeConfig.from_dict(old)
    assert config.nuisance == 0.0  # it was trained without them
    # the field is a training setting: an old checkpoint resumes under a config that switches them on
    assert config.architecture() == dataclasses.replace(config, nuisance=1.0).architecture()
    save_checkpoint(tmp_path / "judge.pt", judge.MorphologyCNN(config))
    ckpt = torch.load(tmp_path / "judge.pt", weights_only=True)
    torch.save({**ckpt, "config": old}, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt", judge.MorphologyCNN)
    assert loaded.config == config
    assert all(p.nuisance == 1.0 for p in judge.PRESETS.values())


def test_training_applies_survey_nuisances_only_when_switched_on():
    train_x, train_y = colour_task(32, 0)
    base = dataclasses.replace(TINY, epochs=1, blur=0.0)

    def weights(**kw) -> list[torch.Tensor]:
        result = judge.train_judge(dataclasses.replace(base, **kw), train_x, train_y, train_x, train_y)
        return [p.detach() for p in result.model.parameters()]

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b))

    assert not same(weights(nuisance=0.0), weights(nuisance=1.0))
    assert same(weights(nuisance=0.0, augment=False), weights(nuisance=1.0, augment=False))


def test_a_symmetric_judge_gives_every_flip_and_rotation_the_same_verdict():
    config = dataclasses.replace(TINY, symmetric=True)
    model = judge.MorphologyCNN(config)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, config.image_size, config.image_size, 3), dtype=np.uint8)  # no symmetry
    views = [image, image[:, ::-1], image[:, :, ::-1], np.rot90(image, 1, axes=(1, 2)), np.rot90(image, 3, axes=(1, 2))]
    probs = [judge.predict(model, np.ascontiguousarray(v))[0] for v in views]
    for p in probs[1:]:
        np.testing.assert_allclose(p, probs[0], rtol=1e-4, atol=1e-6)
    plain = judge.MorphologyCNN(dataclasses.replace(TINY, symmetric=False))
    plain.load_state_dict(model.state_dict())
    assert not np.allclose(judge.predict(plain, views[3])[0], judge.predict(plain, image)[0], atol=1e-6)


def test_label_smoothing_one_makes_the_labels_irrelevant():
    # smoothing 1 trains toward the uniform distribution whatever the label: shuffled labels, same weights
    train_x, train_y = colour_task(32, 0)
    base = dataclasses.replace(TINY, epochs=1, augment=False)

    def weights(labels: np.ndarray, smoothing: float) -> list[torch.Tensor]:
        config = dataclasses.replace(base, label_smoothing=smoothing)
        return list(judge.train_judge(config, train_x, labels, train_x, train_y).model.parameters())

    shuffled = np.roll(train_y, 1)
    assert all(torch.equal(a, b) for a, b in zip(weights(train_y, 1.0), weights(shuffled, 1.0)))
    assert not all(torch.equal(a, b) for a, b in zip(weights(train_y, 0.0), weights(shuffled, 0.0)))
    assert judge.JudgeConfig.from_dict({"widths": [4, 8]}).label_smoothing == 0.0  # stored before the field
    assert "label_smoothing" not in TINY.architecture()  # a training setting: checkpoints resume across it


def test_pooled_augmentation_trains_and_judges_the_judge_of_the_pooled_images():
    # images constant on 2x2 blocks pool exactly to a half-size set: a judge that pools by 2 and augments after
    # pooling must train (same flips drawn) and judge exactly as a judge of the half-size images that never pools
    small, labels = colour_task(32, 0)  # (32, 16, 16, 3)
    big = small.repeat(2, axis=1).repeat(2, axis=2)  # (32, 32, 32, 3)
    base = dataclasses.replace(TINY, epochs=1, nuisance=0.0, blur=0.0)
    pooled_config = dataclasses.replace(base, image_size=32, input_pool=2, augment_pooled=True)
    pooled = judge.train_judge(pooled_config, big, labels, big, labels).model
    plain = judge.train_judge(base, small, labels, small, labels).model
    for a, b in zip(pooled.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(judge.predict(pooled, big)[0], judge.predict(plain, small)[0], rtol=1e-4, atol=1e-5)
    # stored before the field: augments at full resolution, and the field is a training setting
    assert judge.JudgeConfig.from_dict({"widths": [4, 8]}).augment_pooled is False
    assert "augment_pooled" not in TINY.architecture()


@pytest.mark.parametrize("size, pool", [(16, 2), (18, 4)])  # 18 px: 4 does not divide it, each view pooled alone
def test_symmetric_features_are_the_mean_over_the_8_views_each_pooled(size, pool):
    """The oracle pools every view on its own, as the judge sees an image; pooling once first must agree."""
    model = judge.MorphologyCNN(dataclasses.replace(TINY, image_size=size, input_pool=pool, symmetric=True)).eval()
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (3, 3, size, size)).astype(np.float32))
    views = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    views += [v.transpose(2, 3) for v in views]
    with torch.no_grad():
        expected = torch.stack([model.blocks(F.avg_pool2d(v, pool)).mean(dim=(2, 3)) for v in views]).mean(0)
        torch.testing.assert_close(model.symmetric_features(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "native, asked, expected",
    [(True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)],
)
def test_the_training_step_runs_in_bf16_only_when_asked_and_native(monkeypatch, native, asked, expected):
    # bf16 autocast on a CPU runs anywhere (emulated where there is no AMX), so forcing `native` shows the wiring
    monkeypatch.setattr(judge, "native_bf16", lambda device: native)
    seen: list[tuple[bool, torch.dtype]] = []

    def record(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            seen.append((module.training, output.dtype))

    train_x, train_y = colour_task(32, 0)
    with torch.nn.modules.module.register_module_forward_hook(record):
        result = judge.train_judge(dataclasses.replace(TINY, epochs=1, bf16=asked), train_x, train_y, train_x, train_y)
        judge.predict(result.model, train_x[:4])
    training = {dtype for is_training, dtype in seen if is_training}
    judging = {dtype for is_training, dtype in seen if not is_training}
    assert training == {expected}
    assert judging == {torch.float32}  # validation and judging stay in float32


def test_native_bf16_means_cuda_or_a_cpu_with_amx(monkeypatch):
    from model import training

    assert training.native_bf16(torch.device("cuda"))
    assert not training.native_bf16(torch.device("meta"))
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert training.native_bf16(torch.device("cpu")) is amx


def test_training_pools_once_the_values_each_batch_would_have_pooled():
    images = torch.from_numpy(colour_task(40, 0)[0]).repeat(1, 2, 2, 1)  # (40, 32, 32, 3)
    pooled = judge.MorphologyCNN(dataclasses.replace(TINY, image_size=32, input_pool=2, augment_pooled=True))
    inputs = judge.training_inputs(pooled, images, chunk=16)  # three chunks, the last one short
    assert inputs.shape == (40, 16, 16, 3) and inputs.dtype == torch.float32
    rows = torch.tensor([39, 3, 17, 16])
    assert torch.equal(inputs[rows], pooled.pool(uint8_to_unit(images[rows])).permute(0, 2, 3, 1))
    for config in (TINY, dataclasses.replace(TINY, input_pool=2), dataclasses.replace(TINY, augment=False)):
        assert judge.training_inputs(judge.MorphologyCNN(config), images) is images  # batches pooled as drawn
