"""The causal transformer block shared by ``sasrec`` and ``generative``.

:class:`CausalBlock` is pre-LayerNorm multi-head self-attention plus a
position-wise feed-forward layer, both residual (as in SASRec and GPT-2).
``forward`` runs a whole sequence under a mask and can return the attention
weights (attention rollout explanations); ``step`` appends one token to a
cached sequence for each of M continuations (beam search).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalBlock", "causal_mask"]


def causal_mask(real: torch.Tensor) -> torch.Tensor:
    """bool[B, 1, N, N] (True = may attend): no attention to the future or to padding, but every position
    keeps itself (no empty softmax row). ``real``: bool[B, N], True on real tokens."""
    n = real.shape[1]
    past = torch.ones(n, n, dtype=torch.bool, device=real.device).tril()
    itself = torch.eye(n, dtype=torch.bool, device=real.device)
    return (past[None] & (real[:, None, :] | itself))[:, None]


class CausalBlock(nn.Module):
    """Pre-LN causal self-attention + feed-forward, both residual.

    Args:
        dim: model width d; heads: attention heads (must divide d); dropout:
            on the attention weights, the attention output and the feed-forward.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim),
                                nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """float[..., S, d] -> q, k, v float[..., H, S, d / H]."""
        return tuple(t.unflatten(-1, (self.heads, self.head_dim)).transpose(-2, -3)
                     for t in self.qkv(self.norm1(x)).chunk(3, -1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """x float[B, N, d], mask bool[B, 1, N, N] (True = may attend) -> (float[B, N, d], the keys and values
        float[B, H, N, d / H] for a decoding cache, head-averaged attention float[B, N, N] or None)."""
        q, k, v = self.split(x)
        weights = None
        if need_weights:  # the explicit softmax, to hand the weights out
            w = torch.softmax((q @ k.transpose(-1, -2) * self.head_dim ** -0.5).masked_fill(~mask, float("-inf")),
                              -1)  # (B, H, N, N)
            weights = w.mean(1)
            a = F.dropout(w, self.dropout, self.training) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).flatten(2)))
        return x + self.ff(self.norm2(x)), (k, v), weights

    def step(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor], past_ok: torch.Tensor,
             own: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One new token for each of M continuations, x float[B, M, d], attending to the cached sequence
        (past: k, v float[B, H, T, d / H]; past_ok bool[B, T]) and to the continuation's earlier tokens
        (own: k, v float[B, M, H, s, d / H], or None) -> (float[B, M, d], own with the token appended)."""
        q, k, v = self.split(x[:, :, None])  # (B, M, H, 1, d / H)
        if own is not None:
            k, v = torch.cat([own[0], k], -2), torch.cat([own[1], v], -2)
        b, m = x.shape[:2]
        qh = q[:, :, :, 0].transpose(1, 2)  # (B, H, M, d / H)
        s_past = (qh @ past[0].transpose(-1, -2)).masked_fill(~past_ok[:, None, None, :], float("-inf"))
        s_own = (q @ k.transpose(-1, -2))[:, :, :, 0].transpose(1, 2)  # (B, H, M, s + 1)
        w = torch.softmax(torch.cat([s_past, s_own], -1) * self.head_dim ** -0.5, -1)
        t = past[0].shape[2]
        a = w[..., :t] @ past[1] + torch.einsum("bhms,bmhsc->bhmc", w[..., t:], v)  # (B, H, M, d / H)
        x = x + self.out(a.transpose(1, 2).reshape(b, m, -1))
        return x + self.ff(self.norm2(x)), (k, v)
