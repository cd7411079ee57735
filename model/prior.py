"""Class-conditional autoregressive transformer prior over VQ-VAE code indices, and its cached sampler.

The prior reads a flattened latent grid of code indices (row-major) and predicts each index from the
ones before it, conditioned on a galaxy class or on a learned null class (classifier-free guidance).

    transformer input  (T + 1 positions): [class, SOS, t_0, t_1, ..., t_{T-2}]
    logits returned    (T positions):            SOS->t_0, t_0->t_1, ..., t_{T-2}->t_{T-1}

The class position is dropped from the output, so ``logits[:, i]`` is the distribution of ``tokens[:, i]``.
Labels use ids 0..num_classes-1 for real classes and ``num_classes`` for the null class (as in DiT), so
conditional and unconditional rows can share one batch.

Dimension letters: N images sampled, B batch, T tokens per image (grid_h * grid_w), S positions fed in
one call, P positions held in the key/value cache, K vocabulary (codebook size), D model width,
H heads, E head width (D / H).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from model.config import Config, route_overrides
from model.errors import UserError
from model.galaxy10 import NUM_CLASSES
from model.utils import atomic_save, read_checkpoint

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class PriorConfig(Config):
    """Architecture of the conditional prior; vocab and grid come from the VQ-VAE's stored config."""

    vocab_size: int  # K: codebook size of the VQ-VAE whose indices are modelled (read, never typed)
    grid_h: int  # latent grid height (image_size // 8 for the article's VQ-VAE)
    grid_w: int  # latent grid width
    num_classes: int = NUM_CLASSES  # real classes; the id num_classes is the null class
    dim: int = 256  # D: transformer width (independent of the codebook vector size)
    heads: int = 8  # H: attention heads; must divide dim
    layers: int = 6  # number of pre-norm transformer blocks
    dropout: float = 0.1  # dropout on attention weights, residual branches and embeddings
    class_dropout: float = 0.1  # training-time probability of replacing a label by the null class

    def __post_init__(self) -> None:
        for name in ("vocab_size", "grid_h", "grid_w", "num_classes", "dim", "heads", "layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PriorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"PriorConfig.heads ({self.heads}) must divide dim ({self.dim})")
        for name in ("dropout", "class_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"PriorConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def seq_len(self) -> int:
        """T: tokens per image."""
        return self.grid_h * self.grid_w

    @property
    def max_len(self) -> int:
        """Learned positions: seq_len + 2 (class and SOS prepended)."""
        return self.seq_len + 2

    @property
    def null_label(self) -> int:
        """Label id of the null (unconditional) class."""
        return self.num_classes


@dataclass
class PriorTrainConfig(Config):
    """How the prior is trained (see model.train_prior.train_prior)."""

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


#: Named presets: architecture ("model") and training ("train") settings. vocab/grid come from the VQ-VAE.
PRIOR_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The article's prior: 6 pre-norm GELU layers, width 256, 8 heads, dropout and class dropout 0.1.
    "article": {
        "model": dict(dim=256, heads=8, layers=6, dropout=0.1, class_dropout=0.1),
        "train": dict(epochs=30, batch_size=64, lr=3e-4, warmup=500, weight_decay=0.05),
    },
    # Small enough to train in a couple of minutes on 2 CPU cores on ~3k sequences of 256 tokens.
    "demo": {
        "model": dict(dim=64, heads=4, layers=3, dropout=0.0, class_dropout=0.1),
        "train": dict(epochs=8, batch_size=32, lr=2e-3, warmup=30, weight_decay=0.01, log_every=20),
    },
}


def prior_preset(
    name: str, vocab_size: int, grid_h: int, grid_w: int, **overrides: Any
) -> tuple[PriorConfig, PriorTrainConfig]:
    """Model and training configs of a named preset; overrides go to whichever config has the field."""
    if name not in PRIOR_PRESETS:
        raise UserError("preset", f"unknown prior preset {name!r}; choose one of {sorted(PRIOR_PRESETS)}")
    model_names = {f.name for f in fields(PriorConfig)} - {"vocab_size", "grid_h", "grid_w"}  # from the VQ-VAE
    (model_over, train_over), unknown = route_overrides(overrides, model_names, {f.name for f in fields(PriorTrainConfig)})
    if unknown:
        raise UserError("preset", f"unknown prior setting {unknown[0]!r}")
    model_kw = {**PRIOR_PRESETS[name]["model"], **model_over}
    train_kw = {**PRIOR_PRESETS[name]["train"], **train_over}
    config = PriorConfig(vocab_size=vocab_size, grid_h=grid_h, grid_w=grid_w, **model_kw)
    return config, PriorTrainConfig(**train_kw)


# --------------------------------------------------------------------------------------------------
# Sampling filters


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k largest logits per row (ties at the k-th kept), set the rest to -inf; 0 disables."""
    if top_k <= 0 or top_k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches top_p; 1 disables."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., K)
    probs = F.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    drop_sorted = mass_before >= top_p  # the most likely token always has mass_before 0: kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sampling_dtype_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32 at least (bf16/fp16 are promoted; float64 kept) before guidance and sampling."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + cfg_scale * (cond - uncond)."""
    return uncond + cfg_scale * (cond - uncond)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(N, K) logits -> (N, 1) sampled ids: temperature, top-k, top-p, softmax, one multinomial draw."""
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    probs = F.softmax(logits, dim=-1)  # (N, K)
    return torch.multinomial(probs, 1, generator=generator)  # (N, 1)


def check_sampling_args(
    n: int,
    num_classes: int,
    labels: torch.Tensor | None,
    cfg_scale: float,
    temperature: float,
    top_k: int,
    top_p: float,
) -> None:
    """Raise ValueError naming the first bad sampling argument."""
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 disables), got {top_p}")
    if not (cfg_scale >= 0 and math.isfinite(cfg_scale)):
        raise ValueError(f"cfg_scale must be a finite number >= 0, got {cfg_scale}")
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
            raise ValueError(
                f"labels must be in [0, {num_classes - 1}] (or {num_classes} for the null class), "
                f"got values in [{int(labels.min())}, {int(labels.max())}]"
            )


# --------------------------------------------------------------------------------------------------
# Transformer


class LayerCache:
    """Preallocated keys and values of one attention layer: (B, H, P, E) each, filled as decoding goes."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, H, S, E) keys/values at positions start..start+S-1; return those of 0..start+S-1."""
        B, H, S, E = k.shape
        if self.k is None:  # allocate once, in the dtype the layer produces (bf16 under autocast)
            self.k = k.new_empty(B, H, self.max_len, E)
            self.v = v.new_empty(B, H, self.max_len, E)
        end = start + S
        if end > self.max_len:
            raise ValueError(f"key/value cache holds {self.max_len} positions, asked for {end}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, H, start + S, E)


class KVCache:
    """Key/value caches of every layer, for decoding one new position per step."""

    def __init__(self, layers: int, max_len: int) -> None:
        self.layers = [LayerCache(max_len) for _ in range(layers)]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with F.scaled_dot_product_attention and an optional KV cache."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None, start: int = 0) -> torch.Tensor:
        """x (B, S, D) at positions start..start+S-1 -> (B, S, D); attends to cached positions too."""
        S = x.size(1)
        q, k, v = rearrange(self.qkv(x), "b s (three h e) -> three b h s e", three=3, h=self.heads)
        if cache is not None:
            k, v = cache.update(k, v, start)  # (B, H, start + S, E)
        elif start != 0:
            raise ValueError("start > 0 needs a key/value cache")
        mask = None
        if start > 0 and S > 1:  # queries start..start+S-1 see keys 0..their own position
            mask = torch.ones(S, start + S, dtype=torch.bool, device=x.device).tril(diagonal=start)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=start == 0 and S > 1,  # a single new query may see every cached key
        )  # (B, H, S, E)
        y = rearrange(y, "b h s e -> b s (h e)")
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: D -> 4D -> GELU -> D, dropout."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.dim, 4 * config.dim)
        self.proj = nn.Linear(4 * config.dim, config.dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, D) -> (B, S, D)."""
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.dim)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None, start: int = 0) -> torch.Tensor:
        """x (B, S, D) -> (B, S, D)."""
        x = x + self.attn(self.ln1(x), cache, start)
        return x + self.mlp(self.ln2(x))


class ConditionalPrior(nn.Module):
    """Class-conditional GPT over code indices with a null class for classifier-free guidance."""

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
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.layers)])
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.vocab_size, bias=False)
        self.head.weight = self.token_emb.weight  # weight tying: one (K, D) matrix
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

    def tokens_to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) tokens -> (N, grid_h, grid_w) indices (row-major flattening undone)."""
        return rearrange(tokens, "n (h w) -> n h w", h=self.config.grid_h, w=self.config.grid_w)

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

    def _hidden(self, x: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Input embeddings x (B, S, D) at positions start.. -> final-normed hidden states (B, S, D)."""
        S = x.size(1)
        pos = torch.arange(start, start + S, device=x.device)  # (S,)
        x = self.drop(x + self.pos_emb(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i] if cache is not None else None, start)
        return self.ln_f(x)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T') with T' <= T, labels (B,) or None -> logits (B, T', K); logits[:, i] predicts tokens[:, i]."""
        B, T = tokens.shape
        if not 1 <= T <= self.seq_len:
            raise ValueError(f"token sequences must have 1..{self.seq_len} tokens, got {T}")
        cls = self.class_embedding(labels, B)  # (B, 1, D)
        sos = self.sos_token.expand(B, 1, -1)  # (B, 1, D)
        tok = self.token_emb(tokens[:, :-1])  # (B, T' - 1, D): the last token is never an input
        h = self._hidden(torch.cat([cls, sos, tok], dim=1))  # (B, T' + 1, D)
        return self.head(h[:, 1:])  # (B, T', K): class position skipped

    @torch.no_grad()
    def generate(
        self,
        n: int,
        labels: torch.Tensor | Sequence[int] | None = None,
        *,
        cfg_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Sample n token sequences -> (n, T) long; labels (n,) or None (unconditional).

        Guided (labels given, cfg_scale != 1): the conditional and unconditional rows run as one
        batch of 2n and logits = uncond + cfg_scale * (cond - uncond). Each step feeds only the newest
        token through the layers, reading earlier keys/values from a cache. Runs in eval mode (the
        previous mode is restored). ``progress(i)`` is called with the number of tokens made so far.
        """
        device = self.token_emb.weight.device
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        check_sampling_args(n, self.num_classes, labels, cfg_scale, temperature, top_k, top_p)
        guided = labels is not None and cfg_scale != 1.0
        null = torch.full((n,), self.null_label, dtype=torch.long, device=device)
        if labels is None:
            batch_labels = null
        elif guided:
            batch_labels = torch.cat([labels, null])  # (2n,): conditional rows first
        else:
            batch_labels = labels
        B = batch_labels.size(0)

        was_training = self.training
        self.eval()
        try:
            cache = KVCache(self.config.layers, self.config.max_len)
            start = torch.cat([self.class_embedding(batch_labels, B), self.sos_token.expand(B, 1, -1)], dim=1)
            h = self._hidden(start, 0, cache)[:, -1]  # (B, D) at SOS
            tokens = torch.empty(n, self.seq_len, dtype=torch.long, device=device)
            for i in range(self.seq_len):
                logits = sampling_dtype_logits(self.head(h))  # (B, K)
                if guided:
                    cond, uncond = logits.chunk(2)  # (n, K) each
                    logits = guided_logits(cond, uncond, cfg_scale)
                nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
                tokens[:, i] = nxt[:, 0]
                if progress is not None:
                    progress(i + 1)
                if i + 1 < self.seq_len:
                    inp = nxt.repeat(2, 1) if guided else nxt  # (B, 1)
                    h = self._hidden(self.token_emb(inp), 2 + i, cache)[:, -1]  # (B, D)
        finally:
            self.train(was_training)
        return tokens


# --------------------------------------------------------------------------------------------------
# Checkpoints


def save_prior(path: str | Path, model: ConditionalPrior, **extra: Any) -> None:
    """Write {'model', 'model_config', **extra} atomically (temp name, then os.replace)."""
    atomic_save({"model": model.state_dict(), "model_config": model.config.to_dict(), **extra}, path)


def load_prior(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ConditionalPrior, dict]:
    """Rebuild the prior from a checkpoint's stored config and load its weights strictly (eval mode)."""
    ckpt = read_checkpoint(path, "prior", map_location)
    model = ConditionalPrior(PriorConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    return model, ckpt
