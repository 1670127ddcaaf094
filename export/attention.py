"""Attention for ONNX export that reads each key/value head once for its whole query group.

Hugging Face's eager attention copies every key/value head ``groups`` times
(``repeat_kv``) before the matmuls, so with grouped-query attention (SmolLM2
has 9 query heads and 3 key/value heads) the traced graph writes the whole
cache three times per layer and step. Here the query heads that share a
key/value head are stacked as rows of one matrix instead, which gives the
same scores without the copies: plain MatMul/Softmax ops that work for every
past length, as with eager attention.

Importing this module registers :data:`GROUPED_ATTENTION` with transformers'
attention and mask interfaces; the mask is the eager (additive float) one.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

GROUPED_ATTENTION = "shopsynth_grouped"


def grouped_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute attention like transformers' eager attention, without repeating key/value heads.

    Parameters
    ----------
    query : torch.Tensor
        (B, Hq, S, D) queries after the rotary embedding.
    key, value : torch.Tensor
        (B, Hkv, T, D) keys and values of the past and the new positions; Hq is a multiple of Hkv.
    attention_mask : torch.Tensor or None
        (B, 1, S, T) additive mask (0 where allowed, a large negative value where not).
    scaling, softcap
        Score scale (default D**-0.5) and optional tanh soft cap, as in the eager functions.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        (B, S, Hq, D) attention output and the (B, Hkv, groups * S, T) attention weights.
    """
    batch, query_heads, sequence, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = query_heads // kv_heads
    if scaling is None:
        scaling = head_dim**-0.5
    # Query head h uses key/value head h // groups, as repeat_kv orders them.
    grouped_query = query.reshape(batch, kv_heads, groups * sequence, head_dim)  # (B, Hkv, groups*S, D)
    scores = torch.matmul(grouped_query, key.transpose(2, 3)) * scaling  # (B, Hkv, groups*S, T)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        total = key.shape[2]
        scores = scores.reshape(batch, kv_heads, groups, sequence, total)  # (B, Hkv, groups, S, T)
        scores = scores + attention_mask[:, :, None, :, :total]  # mask (B, 1, 1, S, T)
        scores = scores.reshape(batch, kv_heads, groups * sequence, total)
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (B, Hkv, groups*S, D)
    output = output.reshape(batch, query_heads, sequence, head_dim).transpose(1, 2).contiguous()
    return output, weights


AttentionInterface.register(GROUPED_ATTENTION, grouped_attention_forward)
AttentionMaskInterface.register(GROUPED_ATTENTION, eager_mask)
