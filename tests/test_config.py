"""Every config round-trips through plain values; presets come from one registry shape; bad settings are refused."""

import pytest
import torch

from model import judge, prior, vqvae
from model.config import from_preset
from model.errors import UserError
from model.judge import JudgeConfig
from model.prior import PriorConfig
from model.vqvae import VQVAEConfig


@pytest.mark.parametrize(
    "config", [VQVAEConfig(widths=(8, 16)), PriorConfig(vocab_size=32, grid_h=4, grid_w=4), JudgeConfig()]
)
def test_round_trip_through_plain_values(config, tmp_path):
    d = config.to_dict()
    assert not any(isinstance(v, tuple) for v in d.values())  # lists only: weights_only-loadable
    torch.save(d, tmp_path / "c.pt")
    assert type(config).from_dict(torch.load(tmp_path / "c.pt", weights_only=True)) == config
    with pytest.raises(UserError, match=f"{type(config).__name__}: unknown setting 'nope'"):
        type(config).from_dict({**d, "nope": 1})


@pytest.mark.parametrize("module", [vqvae, prior, judge])
def test_every_model_has_one_preset_registry_of_its_config(module):
    config_type = {vqvae: VQVAEConfig, prior: PriorConfig, judge: JudgeConfig}[module]
    assert set(module.PRESETS) == {"demo", "article"}
    assert all(type(c) is config_type for c in module.PRESETS.values())
    # training fields exist and are excluded from the architecture
    names = set(config_type.__dataclass_fields__)
    assert set(config_type.TRAINING) <= names and "epochs" in config_type.TRAINING
    assert "epochs" not in module.PRESETS["demo"].architecture()


def test_from_preset_overrides_and_refuses_unknowns():
    base = vqvae.PRESETS["demo"]
    config = from_preset(vqvae.PRESETS, "demo", epochs=1, codebook_size=64)
    assert (config.epochs, config.codebook_size, config.widths) == (1, 64, base.widths)
    assert vqvae.PRESETS["demo"].epochs == base.epochs  # the registry itself is never changed
    with pytest.raises(UserError, match="unknown VQVAEConfig preset 'huge'"):
        from_preset(vqvae.PRESETS, "huge")
    with pytest.raises(UserError, match="unknown PriorConfig setting 'colour'"):
        from_preset(prior.PRESETS, "demo", colour="red")
    with pytest.raises(UserError, match="heads .* must divide dim"):
        from_preset(prior.PRESETS, "demo", heads=5)
