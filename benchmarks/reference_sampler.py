"""The article's sampling loop, kept as the reference the cached sampler is tested and timed against.

Each step re-runs the model's full forward on the whole prefix plus a dummy token (the forward drops
the last token), and guidance runs the conditional and unconditional passes separately and mixes them
with its own copy of the formula (an oracle independent of ``model.sampling.guided_logits``). Its random
draws are made exactly as in ``model.sampling.generate`` (one ``multinomial(probs (N, K), 1)`` per
step, same order), so with one seed both return the same tokens up to floating-point differences.

Dimension letters: N images, L tokens made so far, T tokens per image, K vocabulary.
"""

from __future__ import annotations

import torch

from model.prior import ConditionalPrior
from model.sampling import check_sampling_args, sample_next, sampling_dtype_logits
from model.utils import evaluating


@torch.no_grad()
def reference_generate(
    model: ConditionalPrior,
    n: int,
    labels: torch.Tensor | None = None,
    *,
    condition_values: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample n sequences -> (n, T) long by recomputing the full prefix every step (O(T^2) work).

    ``condition_values`` (n,) (NaN = none) condition the rows too; the unconditional pass of guidance
    has neither a class nor a value.
    """
    device = model.token_emb.weight.device
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    check_sampling_args(n, model.num_classes, labels, cfg_scale, temperature, top_k, top_p)
    values = None
    if condition_values is not None and not torch.isnan(torch.as_tensor(condition_values, dtype=torch.float64)).all():
        values = torch.as_tensor(condition_values, dtype=model.token_emb.weight.dtype, device=device)
    conditional = labels is not None or values is not None
    with evaluating(model):
        tokens = torch.zeros((n, 0), dtype=torch.long, device=device)  # (N, L)
        for _ in range(model.seq_len):
            dummy = torch.zeros((n, 1), dtype=torch.long, device=device)
            x_in = torch.cat([tokens, dummy], dim=1)  # (N, L + 1): the forward drops the dummy
            if conditional and cfg_scale != 1.0:
                cond = sampling_dtype_logits(model(x_in, labels, values)[:, -1])  # (N, K)
                uncond = sampling_dtype_logits(model(x_in, None, None)[:, -1])
                logits = cond * cfg_scale + uncond * (1.0 - cfg_scale)  # the article's formula, written out
            elif conditional:
                logits = sampling_dtype_logits(model(x_in, labels, values)[:, -1])
            else:
                logits = sampling_dtype_logits(model(x_in, None)[:, -1])
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            tokens = torch.cat([tokens, nxt], dim=1)  # (N, L + 1)
    return tokens
