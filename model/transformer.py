"""The prior's transformer parts: a pre-norm GPT block with causal self-attention and a key/value cache for
decoding one position at a time, and the Fourier-feature embedding of a physical condition (model.prior).

Dimension letters: B batch, S positions fed in one call, P positions held in the cache, D model width,
H heads, E head width (D / H), F Fourier frequencies.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


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
    """Multi-head causal self-attention with F.scaled_dot_product_attention and an optional KV cache.

    ``attn_dropout`` (default: ``dropout``) drops attention weights; ``dropout`` the output branch. Any attention
    dropout takes a CPU off the fused attention kernel (2.2x the prior's time per epoch at width 64).
    """

    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.resid_dropout = nn.Dropout(dropout)

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

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim)
        self.proj = nn.Linear(4 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, D) -> (B, S, D)."""
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float | None = None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout, attn_dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dropout)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None, start: int = 0) -> torch.Tensor:
        """x (B, S, D) -> (B, S, D)."""
        x = x + self.attn(self.ln1(x), cache, start)
        return x + self.mlp(self.ln2(x))


class FourierFeatures(nn.Module):
    """Fourier-feature embedding of one number per row, (B,) -> (B, D), as the article proposes for physical properties.

        u     = clamp((x - lo) / (hi - lo), 0, 1)          (lo, hi) = PriorConfig.condition_range
        f_k   = 0.5 * 2^k,  k = 0 .. F-1                    log-spaced: octaves, from half a cycle over the range
        phi   = [sin(2 pi f_k u) for k] ++ [cos(2 pi f_k u) for k]        (B, 2F)
        embed = W phi + b                                   W (D, 2F), b (D,)

    The lowest frequency makes cos(pi u) strictly decreasing on [0, 1], so phi (and, for a generic W, the
    embedding) tells every normalised value apart; the higher octaves give the linear layer finer detail.
    Values outside (lo, hi) are clamped to its ends (the range is robust percentiles of the training data).
    """

    def __init__(self, value_range: tuple[float, float], frequencies: int, dim: int) -> None:
        super().__init__()
        self.lo, self.hi = float(value_range[0]), float(value_range[1])
        freqs = 0.5 * 2.0 ** torch.arange(frequencies, dtype=torch.float32)  # (F,)
        self.register_buffer("freqs", freqs, persistent=False)  # derived from the config: not in the state_dict
        self.proj = nn.Linear(2 * frequencies, dim)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) values -> (B,) in [0, 1]."""
        return ((x - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) values -> phi (B, 2F): sines then cosines, lowest frequency first."""
        angles = 2.0 * math.pi * self.normalise(x)[:, None] * self.freqs.to(x.dtype)  # (B, F)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, 2F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) values -> (B, D)."""
        return self.proj(self.features(x))
