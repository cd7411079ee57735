"""Class-conditional autoregressive transformer prior over VQ-VAE code indices (the network; sampling: model.sampling).

The prior reads a flattened latent grid of code indices (row-major) and predicts each index from the
ones before it, conditioned on a galaxy class or on a learned null class (classifier-free guidance).

    transformer input  (T + 1 positions): [class, SOS, t_0, t_1, ..., t_{T-2}]
    logits returned    (T positions):            SOS->t_0, t_0->t_1, ..., t_{T-2}->t_{T-1}

The class position is dropped from the output, so ``logits[:, i]`` is the distribution of ``tokens[:, i]``.
Labels use ids 0..num_classes-1 for real classes and ``num_classes`` for the null class (as in DiT), so
conditional and unconditional rows can share one batch.

With ``PriorConfig.condition`` set (a numeric column such as ``redshift``), the class position also carries
a Fourier-feature embedding of that value (``FourierFeatures``), added to the class embedding; a missing
value (NaN) or condition dropout gives a learned null vector instead, independently of the class, so
guidance works on (class, value), on the class alone and on the value alone. With ``condition=None`` the
network, its parameters and its outputs are exactly those of the class-only prior.

With ``PriorConfig.crop`` set, the prior models only the central crop x crop codes (T = crop**2): the
galaxy, where the class shows; the codes around it (sky, noise and field sources) are drawn per position from
their frequencies in the training grids (``ConditionalPrior.with_border``), independently of the class.

With ``PriorConfig.pose`` set, the codes it models are those of every image turned to its canonical pose (its
major axis 0-45 degrees from the rows, ``model.pose``); ``model.sampling.sample`` turns each decoded image by a
random symmetry of the square. The network is the same; only its data and the sampler's last step differ.

Dimension letters: N images sampled, B batch, T tokens per image (grid_h * grid_w, or crop**2), S positions fed in
one call, P positions held in the key/value cache, K vocabulary (codebook size), D model width,
H heads, E head width (D / H), F Fourier frequencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from model.config import Config
from model.errors import UserError
from model.galaxy10 import NUM_CLASSES
from model.transformer import Block, FourierFeatures, KVCache

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class PriorConfig(Config):
    """Architecture and training of the conditional prior; vocab and grid are read from the VQ-VAE's config."""

    TRAINING: ClassVar[tuple[str, ...]] = (
        "epochs",
        "batch_size",
        "lr",
        "min_lr_ratio",
        "weight_decay",
        "warmup",
        "grad_clip",
        "seed",
        "device",
        "bf16",
        "eval_batch_size",
        "log_every",
    )

    vocab_size: int = 1024  # K: codebook size of the VQ-VAE whose indices are modelled (set from it, never typed)
    grid_h: int = 16  # latent grid height (the VQ-VAE's grid)
    grid_w: int = 16  # latent grid width
    num_classes: int = NUM_CLASSES  # real classes; the id num_classes is the null class
    dim: int = 256  # D: transformer width (independent of the codebook vector size)
    heads: int = 8  # H: attention heads; must divide dim
    layers: int = 6  # number of pre-norm transformer blocks
    dropout: float = 0.1  # dropout on residual branches and embeddings (and attention weights unless set below)
    attn_dropout: float | None = None  # dropout on attention weights; None: ``dropout`` (> 0 is slow on a CPU)
    class_dropout: float = 0.1  # training-time probability of replacing a label by the null class
    condition: str | None = None  # numeric column of the prepared data (e.g. "redshift"); None: class only
    condition_range: tuple[float, float] | None = None  # (lo, hi) mapped to [0, 1]; set from the training data
    condition_frequencies: int = 6  # F: Fourier frequencies 0.5 * 2^k cycles per range, k = 0..F-1
    condition_dropout: float = 0.1  # training-time probability of replacing a value by the null vector
    crop: int = 0  # model the central crop x crop codes only, the rest drawn from code frequencies; 0: the whole grid
    pose: bool = False  # model every image in its canonical pose (model.pose); samples are turned by a random symmetry
    # training
    epochs: int = 30  # passes over the training sequences
    batch_size: int = 64  # sequences per optimiser step
    lr: float = 3e-4  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.05  # AdamW decay on matrices and embeddings only
    warmup: int = 200  # linear warm-up steps
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    seed: int = 0  # seeds init, shuffling, dropout and class dropout
    device: str | None = None  # None: model.utils.pick_device()
    bf16: bool = True  # bf16 autocast, used on CUDA only
    eval_batch_size: int = 128  # sequences per validation forward
    log_every: int = 50  # log step_loss every this many steps (0: per epoch only)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "grid_h", "grid_w", "num_classes", "dim", "heads", "layers", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UserError("PriorConfig", f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise UserError("PriorConfig", f"heads ({self.heads}) must divide dim ({self.dim})")
        for name in ("dropout", "class_dropout", "condition_dropout", "attn_dropout"):
            if getattr(self, name) is not None and not 0.0 <= float(getattr(self, name)) < 1.0:
                raise UserError("PriorConfig", f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= int(self.crop) <= min(self.grid_h, self.grid_w):
            raise UserError("PriorConfig", f"crop must be in 0..{min(self.grid_h, self.grid_w)}, got {self.crop}")
        if int(self.condition_frequencies) < 1:
            raise UserError("PriorConfig", f"condition_frequencies must be >= 1, got {self.condition_frequencies}")
        if self.condition_range is not None:
            lo, hi = (float(v) for v in self.condition_range)  # a list after a JSON or checkpoint round trip
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise UserError("PriorConfig", f"condition_range must be finite (lo, hi) with lo < hi, got {(lo, hi)}")
            self.condition_range = (lo, hi)

    @property
    def grid_len(self) -> int:
        """Codes per image: grid_h * grid_w (what the VQ-VAE encodes and decodes)."""
        return self.grid_h * self.grid_w

    @property
    def seq_len(self) -> int:
        """T: tokens the transformer models per image: crop**2 with a crop, else the whole grid."""
        return self.crop * self.crop if self.crop else self.grid_len

    @property
    def max_len(self) -> int:
        """Learned positions: seq_len + 2 (class and SOS prepended)."""
        return self.seq_len + 2

    @property
    def null_label(self) -> int:
        """Label id of the null (unconditional) class."""
        return self.num_classes


#: Named presets (model.config.from_preset); vocab_size, grid_h and grid_w are set from the VQ-VAE.
PRESETS: dict[str, PriorConfig] = {
    # The article's prior: 6 pre-norm GELU layers, width 256, 8 heads, dropout and class dropout 0.1.
    "article": PriorConfig(
        dim=256,
        heads=8,
        layers=6,
        dropout=0.1,
        class_dropout=0.1,
        epochs=30,
        batch_size=64,
        lr=3e-4,
        warmup=500,
        weight_decay=0.05,
    ),
    # About 4-5 minutes on 2 CPU cores on ~2.4k grids of 16 x 16 codes (the demo VQ-VAE's). The prior is
    # step-limited (issue 12: more epochs, more accuracy), so it models only the central 12 x 12 codes, where the
    # galaxy is, and draws the border from code frequencies: per epoch 0.57x the time of the whole grid. On one
    # set of codes, scored by one judge (cfg 3, 2 sampling seeds x 500): whole grid, 12 epochs 0.474, 20 epochs
    # 0.528; 12 x 12 crop, 21 epochs (less time than 12 whole-grid ones) 0.604; 10 x 10, 28 epochs 0.570.
    # Batch 8, lr 4e-3: most steps per second (lr 2e-3 0.50 / 6e-3 0.50 vs 0.57 at 12 whole-grid epochs).
    # Stop 25, on the codes of the 8-epoch VQ-VAE (more of the codebook used: 6.09 bits/token, was 5.40), cfg 3,
    # 2 sampling seeds x 500, the flow's judge: no dropout, 24 epochs 0.530 / 0.566; dropout 0.1 everywhere, 24
    # epochs 0.604 / 0.652 (but 2.2x the time per epoch: attention dropout leaves the fused kernel); dropout 0.1
    # on the residual branches and embeddings only, 20 epochs (1.1x the time of 24 without) 0.644 / 0.652, 18
    # epochs 0.602 / 0.580. Stop 27, the flow's codes and redshift condition, samples of seed 0, judged by the
    # flow's judge (30-epoch seed 0) and three others: 24 epochs instead of 20 lowered validation bits per token
    # from 6.086 to 6.059, generated / ceiling FD from 2.97x to 2.56x (down 11-15 % by every judge) and moved
    # cfg-3 accuracy from 0.616 to 0.648 (by the other judges -0.006 to +0.024; samples of seed 1: FD 2.96x ->
    # 2.73x, cfg-3 0.616 -> 0.608, so the FD gain holds and the cfg-3 one is seed 0's luck). ~40 s more.
    # Stop 28: pose-normalised codes (model.pose; the same VQ-VAE, epochs and seed), samples of seeds 0 / 1 by
    # the flow's judge: cfg-3 0.686 / 0.718 (was 0.648 / 0.608), FD generated / ceiling 2.02x / 2.12x (was 2.56x
    # / 2.73x), validation 6.010 bits/token on the turned codes; edge-on disks come out straight, not kinked.
    # The axis of windowed light instead of the central segment's (wrong on 35 % of elongated galaxies): cfg-3
    # 0.650 / 0.664, FD 1.96x / 1.74x, 6.017 bits/token.
    "demo": PriorConfig(
        dim=64,
        heads=4,
        layers=3,
        dropout=0.1,
        attn_dropout=0.0,
        class_dropout=0.1,
        crop=12,
        pose=True,
        epochs=24,
        batch_size=8,
        lr=4e-3,
        warmup=120,
        weight_decay=0.01,
        log_every=20,
    ),
}


def centre_index(config: PriorConfig) -> torch.Tensor:
    """(crop**2,) row-major positions of the central crop x crop codes in the grid_h x grid_w grid."""
    c = config.crop
    rows = torch.arange(c) + (config.grid_h - c) // 2
    cols = torch.arange(c) + (config.grid_w - c) // 2
    return (rows[:, None] * config.grid_w + cols[None, :]).reshape(-1)


class ConditionalPrior(nn.Module):
    """Class-conditional GPT over code indices with a null class for classifier-free guidance."""

    KIND = "prior"  # checkpoint kind (model.checkpoint)
    CONFIG = PriorConfig

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        D = config.dim
        self.token_emb = nn.Embedding(config.vocab_size, D)
        self.pos_emb = nn.Embedding(config.max_len, D)
        self.sos_token = nn.Parameter(torch.zeros(1, 1, D))
        self.class_emb = nn.Embedding(config.num_classes, D)
        self.null_class_emb = nn.Parameter(torch.zeros(1, 1, D))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            [Block(D, config.heads, config.dropout, config.attn_dropout) for _ in range(config.layers)]
        )
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.vocab_size, bias=False)
        self.head.weight = self.token_emb.weight  # weight tying: one (K, D) matrix
        if config.condition is not None:  # only then: a class-only prior keeps its exact parameters and keys
            if config.condition_range is None:
                raise ValueError(f"condition {config.condition!r} needs condition_range (set from the training data)")
            self.condition_emb = FourierFeatures(config.condition_range, config.condition_frequencies, D)
            self.null_condition_emb = nn.Parameter(torch.zeros(1, 1, D))
        if config.crop:  # only then: a whole-grid prior keeps its exact state_dict keys
            self.register_buffer("centre", centre_index(config), persistent=False)  # (T,) positions in the grid
            outside = torch.ones(config.grid_len, dtype=torch.bool)
            outside[self.centre] = False
            self.register_buffer("border", outside.nonzero()[:, 0], persistent=False)  # the other positions
            uniform = torch.full((config.grid_len, config.vocab_size), 1.0 / config.vocab_size)
            self.register_buffer("code_freq", uniform)  # (grid_len, K): set by fit_border from training grids
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) weights and embeddings, residual projections scaled by 1/sqrt(2 * layers)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.layers))
        nn.init.normal_(self.sos_token, std=0.02)
        nn.init.normal_(self.null_class_emb, std=0.02)
        if self.config.condition is not None:
            nn.init.normal_(self.null_condition_emb, std=0.02)

    @property
    def seq_len(self) -> int:
        """T: tokens per image."""
        return self.config.seq_len

    @property
    def num_classes(self) -> int:
        """Real classes (the null class id is num_classes)."""
        return self.config.num_classes

    @property
    def null_label(self) -> int:
        """Label id of the null class."""
        return self.config.null_label

    def num_params(self) -> int:
        """Parameter count (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def fit_border(self, grids: torch.Tensor) -> None:
        """Set the per-position code frequencies from training grids (N, grid_len) (a crop prior only)."""
        counts = torch.zeros_like(self.code_freq)  # (grid_len, K)
        counts.scatter_add_(1, grids.T.to(counts.device, torch.long), torch.ones_like(grids.T, dtype=counts.dtype))
        self.code_freq.copy_(counts / counts.sum(1, keepdim=True).clamp_min(1.0))

    def centre_tokens(self, grids: torch.Tensor) -> torch.Tensor:
        """Whole grids (N, grid_len) -> the tokens the transformer models (N, T): the central crop, or all."""
        return grids[:, self.centre] if self.config.crop else grids

    def with_border(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Modelled tokens (N, T) -> whole grids (N, grid_len): a crop prior draws each border code from its
        position's training frequencies (independently of the class); a whole-grid prior returns them as they are."""
        if not self.config.crop:
            return tokens
        border = self.border
        grids = torch.empty(tokens.size(0), self.config.grid_len, dtype=torch.long, device=self.code_freq.device)
        grids[:, self.centre] = tokens.to(grids.device)
        grids[:, border] = torch.multinomial(self.code_freq[border], len(grids), True, generator=generator).T
        return grids

    def class_embedding(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B,) labels (num_classes = null) or None (all null) -> (B, 1, D); class dropout in train mode."""
        device = self.class_emb.weight.device
        if labels is None:
            return self.null_class_emb.expand(batch, 1, -1)
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
        labels = labels.to(device=device, dtype=torch.long)
        null = labels == self.null_label  # (B,)
        if self.training and self.config.class_dropout > 0:
            null = null | (torch.rand(batch, device=device) < self.config.class_dropout)
        cond = self.class_emb(labels.masked_fill(null, 0))  # (B, D); out-of-range ids still raise
        return torch.where(null[:, None, None], self.null_class_emb, cond[:, None, :])  # (B, 1, D)

    def condition_embedding(self, values: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B,) condition values (NaN = null) or None (all null) -> (B, 1, D); condition dropout in train mode.

        Condition dropout draws its own coin per row, independent of class dropout.
        """
        if values is None:
            return self.null_condition_emb.expand(batch, 1, -1)
        if values.shape != (batch,):
            raise ValueError(f"condition values must have shape ({batch},), got {tuple(values.shape)}")
        values = values.to(device=self.null_condition_emb.device, dtype=self.null_condition_emb.dtype)
        null = torch.isnan(values)  # (B,)
        if self.training and self.config.condition_dropout > 0:
            null = null | (torch.rand(batch, device=values.device) < self.config.condition_dropout)
        emb = self.condition_emb(values.masked_fill(null, self.condition_emb.lo))  # (B, D); no NaN inside
        return torch.where(null[:, None, None], self.null_condition_emb, emb[:, None, :])  # (B, 1, D)

    def start_embedding(
        self, labels: torch.Tensor | None, condition_values: torch.Tensor | None, batch: int
    ) -> torch.Tensor:
        """The class position (B, 1, D): the class embedding, plus the condition embedding when the prior has one.

        A prior without a condition accepts only absent values (None or all NaN).
        """
        cls = self.class_embedding(labels, batch)  # (B, 1, D)
        if self.config.condition is None:
            if condition_values is not None and not torch.isnan(torch.as_tensor(condition_values)).all():
                raise ValueError("this prior was trained without a condition: condition values must be None or NaN")
            return cls
        return cls + self.condition_embedding(condition_values, batch)

    def hidden(self, x: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Input embeddings x (B, S, D) at positions start.. -> final-normed hidden states (B, S, D)."""
        S = x.size(1)
        pos = torch.arange(start, start + S, device=x.device)  # (S,)
        x = self.drop(x + self.pos_emb(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i] if cache is not None else None, start)
        return self.ln_f(x)

    def forward(
        self,
        tokens: torch.Tensor,
        labels: torch.Tensor | None = None,
        condition_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T') with T' <= T, labels (B,) or None, condition values (B,) (NaN = null) or None
        -> logits (B, T', K); logits[:, i] predicts tokens[:, i]."""
        B, T = tokens.shape
        if not 1 <= T <= self.seq_len:
            raise ValueError(f"token sequences must have 1..{self.seq_len} tokens, got {T}")
        cls = self.start_embedding(labels, condition_values, B)  # (B, 1, D)
        sos = self.sos_token.expand(B, 1, -1)  # (B, 1, D)
        tok = self.token_emb(tokens[:, :-1])  # (B, T' - 1, D): the last token is never an input
        h = self.hidden(torch.cat([cls, sos, tok], dim=1))  # (B, T' + 1, D)
        return self.head(h[:, 1:])  # (B, T', K): class position skipped
