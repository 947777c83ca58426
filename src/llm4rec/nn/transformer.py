"""The causal transformer block shared by ``sasrec`` and ``generative``.

:class:`CausalBlock` is pre-LayerNorm multi-head self-attention plus a
position-wise feed-forward layer, both residual (as in SASRec and GPT-2).
``forward`` runs a whole sequence under a mask and can return the attention
weights (attention rollout explanations); ``last`` reads a sequence for
decoding (the last position's output and every position's keys and values);
``step`` appends one token to such a cached sequence for each of M
continuations (beam search).
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

    def step(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor], past_bias: torch.Tensor,
             own: torch.Tensor | None, qkv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One new token for each of M continuations of B cached sequences (beam search).

        Args:
            x: float[B, M, d], the new tokens' inputs.
            past: the cached sequence's keys, transposed, float[B H, d / H, T] and values float[B H, T, d / H]
                (row b H + h: sequence b, head h).
            past_bias: float[B H, 1, T] added to the attention scores on the cache: 0, or -inf on padding.
            own: the continuation's earlier tokens' keys and values float[s, B, M, 2, H, d / H], or None (s = 0).
            qkv: float[B, M, 3 d], the tokens' projections ``self.qkv(self.norm1(x))`` when already known.

        Returns:
            (float[B, M, d], own with the new token appended: float[s + 1, B, M, 2, H, d / H]).
        """
        b, m, d = x.shape
        h, c = self.heads, self.head_dim
        scale = c ** -0.5
        qkv = (self.qkv(self.norm1(x)) if qkv is None else qkv).view(b, m, 3, h, c)
        q, kv = qkv[:, :, 0], qkv[None, :, :, 1:]  # (B, M, H, c), (1, B, M, 2, H, c)
        if own is not None:
            kv = torch.cat([own, kv])  # (s + 1, B, M, 2, H, c)
        k, v = kv.unbind(3)  # (s + 1, B, M, H, c)
        q = q * scale  # (B, M, H, c)
        s_past = torch.baddbmm(past_bias, q.transpose(1, 2).reshape(b * h, m, c), past[0])  # (BH, M, T)
        s_own = (q * k).sum(-1)  # (s + 1, B, M, H)
        # softmax over the cache and the own tokens together, without concatenating them
        top = torch.maximum(s_past.amax(-1).view(b, h, m).transpose(1, 2), s_own.amax(0))  # (B, M, H)
        e_past = s_past.sub_(top.transpose(1, 2).reshape(b * h, m, 1)).exp_()  # (BH, M, T)
        e_own = (s_own - top).exp_()  # (s + 1, B, M, H)
        total = e_past.sum(-1).view(b, h, m).transpose(1, 2) + e_own.sum(0)  # (B, M, H)
        a = torch.bmm(e_past, past[1]).view(b, h, m, c).transpose(1, 2) + (e_own[..., None] * v).sum(0)  # (B, M, H, c)
        x = x + self.out((a / total[..., None]).reshape(b, m, d))
        return x + self.ff(self.norm2(x)), kv

    def last(self, x: torch.Tensor, bias: torch.Tensor
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`forward` for the last position of B sequences only, and the keys and values of all of them
        (a history read once before decoding).

        Args:
            x: float[B, N, d].
            bias: float[B H, 1, N] added to the attention scores: 0, or -inf on padding (the last position
                attends to itself in any case, as under :func:`causal_mask`).

        Returns:
            (float[B, d], (keys transposed float[B H, d / H, N], values float[B H, N, d / H])), as
            :meth:`step` reads them.
        """
        b, n, d = x.shape
        h, c = self.heads, self.head_dim
        y = self.norm1(x)
        weight, offset = self.qkv.weight, self.qkv.bias
        q = F.linear(y[:, -1], weight[:d], offset[:d]).view(b * h, 1, c)
        k, v = F.linear(y, weight[d:], offset[d:]).view(b, n, 2, h, c).unbind(2)  # (B, N, H, c)
        k, v = k.permute(0, 2, 3, 1).reshape(b * h, c, n), v.transpose(1, 2).reshape(b * h, n, c)
        itself = torch.cat([bias[..., :-1], bias.new_zeros(b * h, 1, 1)], -1)
        a = torch.bmm(torch.baddbmm(itself, q, k, alpha=c ** -0.5).softmax(-1), v).view(b, d)
        x = x[:, -1] + self.out(a)
        return x + self.ff(self.norm2(x)), (k, v)
