"""The decoder of ``generative``: a causal transformer over semantic-ID tokens (TIGER-style).

Items are spelt as m codes (one per level); a window of L items is the flat
token sequence ``[c_1^1 .. c_1^m, ..., c_L^1 .. c_L^m]`` with token id
``offset(level) + code`` (``vocab`` = padding)::

    x_n = Tok[token_n] + Pos[item position] + Lvl[level]    # (B, N, d)
    h   = Blocks(x)                                         # CausalBlock, pre-LN
    p(code at level l | everything before) = softmax(h_{n-1} W_l)  # one output slice per level

:meth:`GenerativeNet.forward` reads whole windows (training);
:meth:`GenerativeNet.read` reads a history once for decoding (its last state
and every position's keys and values) and :meth:`GenerativeNet.step` appends
one code to it for each of M continuations (beam search, teacher-forced
scoring).
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

    def embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """tokens int64[B, N] (columns start.. of the flat layout; padding = vocab) -> float[B, N, d] inputs."""
        m = len(self.config.sizes)
        col = torch.arange(start, start + tokens.shape[1], device=tokens.device)  # (N,)
        return self.drop(self.tokens(tokens) + self.positions(col // m) + self.level_emb(col % m))

    def forward(self, tokens: torch.Tensor, start: int) -> tuple[torch.Tensor, list]:
        """tokens int64[B, N] (as :meth:`embed`) -> (float[B, N, d] states, per-block (k, v) float[B, H, N, d / H])."""
        x = self.embed(tokens, start)  # (B, N, d)
        mask = causal_mask(tokens < self.config.vocab)  # (B, 1, N, N)
        cache = []
        for block in self.blocks:
            x, kv, _ = block(x, mask)
            cache.append(kv)
        return self.norm(x), cache

    def read(self, tokens: torch.Tensor, start: int) -> tuple[torch.Tensor, list, torch.Tensor]:
        """Read B histories for decoding: tokens int64[B, N] (as :meth:`embed`) -> (float[B, d] the last position's
        state, as :meth:`forward` gives it; per-block cache for :meth:`step`: keys transposed float[B H, d / H, N]
        and values float[B H, N, d / H]; attention bias float[B H, 1, N]: 0 on real tokens, -inf on padding)."""
        x = self.embed(tokens, start)  # (B, N, d)
        mask = causal_mask(tokens < self.config.vocab)  # (B, 1, N, N)
        bias = torch.zeros(tokens.shape, device=tokens.device).masked_fill(tokens >= self.config.vocab, float("-inf"))
        bias = bias.repeat_interleave(self.config.heads, 0)[:, None]  # (BH, 1, N)
        cache = []
        for block in self.blocks[:-1]:
            x, (k, v), _ = block(x, mask)  # (B, N, d); (B, H, N, d / H) each
            cache.append((k.flatten(0, 1).transpose(1, 2).contiguous(), v.flatten(0, 1).contiguous()))
        last, kv = self.blocks[-1].last(x, bias)  # (B, d)
        return self.norm(last), cache + [kv], bias

    def step(self, token: torch.Tensor, level: int, cache: list, bias: torch.Tensor,
             own: list | None) -> tuple[torch.Tensor, list]:
        """The next item's code at ``level`` as tokens int64[B, M] after B cached histories (``cache`` and
        ``bias`` from :meth:`read`) and the continuations' earlier codes (per-block ``own`` keys and values
        float[s, B, M, 2, H, d / H], None at the first code) -> (float[B, M, d] states, own caches with the code).

        The first block's input and projections depend on the code alone: they are computed once for the
        level's K codes and looked up.
        """
        lo = self.config.offsets[level]
        x = self.tokens.weight[lo:lo + self.config.sizes[level]] + self.positions.weight[self.config.max_len] + \
            self.level_emb.weight[level]  # (K, d)
        first = self.blocks[0]
        code = token - lo  # (B, M)
        qkv = F.embedding(code, first.qkv(first.norm1(x)))  # (B, M, 3d)
        x = F.embedding(code, x)  # (B, M, d)
        new = []
        for i, (block, past) in enumerate(zip(self.blocks, cache)):
            x, kv = block.step(x, past, bias, None if own is None else own[i], qkv if i == 0 else None)
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
