"""Every config round-trips through plain values; unknown keys are refused."""

import pytest
import torch

from model.judge import JudgeConfig
from model.prior import PriorConfig, PriorTrainConfig
from model.train_vqvae import TrainConfig
from model.vqvae import VQVAEConfig


@pytest.mark.parametrize(
    "config",
    [VQVAEConfig(widths=(8, 16)), TrainConfig(), PriorConfig(vocab_size=32, grid_h=4, grid_w=4), PriorTrainConfig(), JudgeConfig()],
)
def test_round_trip_through_plain_values(config, tmp_path):
    d = config.to_dict()
    assert not any(isinstance(v, tuple) for v in d.values())  # lists only: weights_only-loadable
    torch.save(d, tmp_path / "c.pt")
    assert type(config).from_dict(torch.load(tmp_path / "c.pt", weights_only=True)) == config
    with pytest.raises(ValueError, match=f"unknown {type(config).__name__} fields: \\['nope'\\]"):
        type(config).from_dict({**d, "nope": 1})
