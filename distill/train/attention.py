"""Attention that keeps packed rows apart without FlashAttention: `attn_implementation="segment_sdpa"`.

With packing, TRL's padding-free collator concatenates a batch's rows into one sequence, restarts the
position ids at each row and passes the row boundaries (`cu_seq_lens_q`). FlashAttention's varlen
kernel uses them; sdpa and eager ignore them, so every token attends to the rows packed before it
(measured on the tiny model: per-token losses off by up to 0.23). Where FlashAttention is not used
(CPU, or a GPU without flash-attn) the student is loaded with this attention instead: causal sdpa
per row, which computes exactly the loss of unpacked training (tests/test_train.py) and costs
attention per row, not over the whole packed batch.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

NAME = "segment_sdpa"


def segment_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,  # (batch, heads, tokens, head_dim)
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if cu_seq_lens_q is None or query.shape[0] != 1:  # not a padding-free packed batch: plain sdpa
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    bounds = cu_seq_lens_q.tolist()
    p = dropout if module.training else 0.0
    rows = [
        F.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=scaling, dropout_p=p,
            enable_gqa=True,
        )
        for s, e in itertools.pairwise(bounds)
    ]  # fmt: skip
    return torch.cat(rows, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `attn_implementation="segment_sdpa"` known to transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, segment_sdpa)
    AttentionMaskInterface.register(NAME, lambda *args, **kwargs: None)  # the rows are the mask
    return NAME
