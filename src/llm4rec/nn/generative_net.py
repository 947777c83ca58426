"""The decoder of ``generative``: a causal transformer over semantic-ID tokens (TIGER-style).

Items are spelt as m codes (one per level); a window of L items is the flat
token sequence ``[c_1^1 .. c_1^m, ..., c_L^1 .. c_L^m]`` with token id
``offset(level) + code`` (``vocab`` = padding)::

    x_n = Tok[token_n] + Pos[item position] + Lvl[level]    # (B, N, d)
    h   = Blocks(x)                                         # CausalBlock, pre-LN
    p(code at level l | everything before) = softmax(h_{n-1} W_l)  # one output slice per level

:meth:`GenerativeNet.forward` reads whole windows (training, and the history
at inference); :meth:`GenerativeNet.step` appends one code to a cached
history for each of M continuations (beam search, teacher-forced scoring).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from llm4rec.nn.transformer import CausalBlock, causal_mask

__all__ = ["GenerativeNet", "GenerativeNetConfig"]


@dataclass(frozen=True)
class GenerativeNetConfig:
    """The decoder's shape.

    Attributes:
        sizes: codes per level (K_1 .. K_m); the token vocabulary is their sum.
        dim: embedding and hidden size d; layers: blocks; heads: attention heads (divide d).
        dropout: on embeddings, attention and feed-forward.
        max_len: items a window holds before the next one (positions 0..max_len; max_len = the next item).
    """

    sizes: tuple[int, ...]
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_len: int = 20

    @property
    def vocab(self) -> int:
        """Real tokens (the padding token's id)."""
        return sum(self.sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """The first token id of each level."""
        return tuple(sum(self.sizes[:level]) for level in range(len(self.sizes)))


class GenerativeNet(nn.Module):
    """Decoder-only transformer over semantic-ID tokens (see the module docstring)."""

    def __init__(self, config: GenerativeNetConfig) -> None:
        super().__init__()
        self.config = config
        d, m = config.dim, len(config.sizes)
        self.tokens = nn.Embedding(config.vocab + 1, d)  # last row: padding
        self.positions = nn.Embedding(config.max_len + 1, d)  # item position in the window; max_len = next item
        self.level_emb = nn.Embedding(m, d)
        for emb in (self.tokens, self.positions, self.level_emb):
            nn.init.normal_(emb.weight, std=0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(CausalBlock(d, config.heads, config.dropout) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab)

    def forward(self, tokens: torch.Tensor, start: int) -> tuple[torch.Tensor, list]:
        """tokens int64[B, N] (columns start.. of the flat layout; padding = vocab) -> (float[B, N, d] states,
        per-block (k, v) float[B, H, N, d / H])."""
        m = len(self.config.sizes)
        col = torch.arange(start, start + tokens.shape[1], device=tokens.device)  # (N,)
        x = self.drop(self.tokens(tokens) + self.positions(col // m) + self.level_emb(col % m))  # (B, N, d)
        mask = causal_mask(tokens < self.config.vocab)  # (B, 1, N, N)
        cache = []
        for block in self.blocks:
            x, kv, _ = block(x, mask)
            cache.append(kv)
        return self.norm(x), cache

    def step(self, token: torch.Tensor, level: int, cache: list, past_ok: torch.Tensor,
             own: list | None) -> tuple[torch.Tensor, list]:
        """The next item's code at ``level`` as tokens int64[B, M] after a cached history (``cache`` from
        :meth:`forward`, ``past_ok`` bool[B, N] its real tokens) and the continuations' earlier codes
        (per-block ``own`` caches, None at the first code) -> (float[B, M, d] states, own caches)."""
        x = self.tokens(token) + self.positions.weight[self.config.max_len] + self.level_emb.weight[level]
        new = []
        for i, (block, past) in enumerate(zip(self.blocks, cache)):
            x, kv = block.step(x, past, past_ok, None if own is None else own[i])
            new.append(kv)
        return self.norm(x), new

    def logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """float[..., d] -> float[..., K_level]: the scores of the codes of one level."""
        lo = self.config.offsets[level]
        hi = lo + self.config.sizes[level]
        return F.linear(h, self.head.weight[lo:hi], self.head.bias[lo:hi])

    def grow(self, level: int, extra: int) -> None:
        """Append ``extra`` codes to ``level`` (items added after training): new token-embedding rows and
        output rows, each the mean of that level's existing rows, so a new code starts as the level's
        average code (its output logit is the mean of the level's logits under any state). Later levels'
        token ids shift up by ``extra``."""
        lo = self.config.offsets[level]
        at = lo + self.config.sizes[level]  # first token id after the level
        with torch.no_grad():
            def grown(weight: torch.Tensor) -> nn.Parameter:
                mean = weight[lo:at].mean(0, keepdim=True).expand(extra, *weight.shape[1:])
                return nn.Parameter(torch.cat([weight[:at], mean, weight[at:]]))

            self.tokens.weight = grown(self.tokens.weight)
            self.head.weight, self.head.bias = grown(self.head.weight), grown(self.head.bias)
        self.tokens.num_embeddings += extra
        self.head.out_features += extra
        sizes = list(self.config.sizes)
        sizes[level] += extra
        self.config = replace(self.config, sizes=tuple(sizes))
