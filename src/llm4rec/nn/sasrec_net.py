"""The SASRec network: item (and optionally text) embeddings, causal transformer blocks, tied output table.

::

    x_t = E[i_t] * sqrt(d) + P[t]       # item + learned position embedding (positions aligned to the right)
    h   = Blocks(x)                     # CausalBlock: pre-LayerNorm causal self-attention + feed-forward
    s(j) = LayerNorm(h)_L . E[j]        # the last state against the tied item table

With text (``text_dim > 0``) an item is ``A(t_i)`` (a learned linear adapter
of its frozen LM embedding ``t_i``), plus, with ``id_embeddings``, an ID
embedding for the items seen in training (``seen``), dropped at random while
training (``id_dropout``) so that the text part learns to stand alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from llm4rec.nn.transformer import CausalBlock, causal_mask

__all__ = ["SASRecNet", "SASRecNetConfig"]


@dataclass(frozen=True)
class SASRecNetConfig:
    """The shape of a :class:`SASRecNet`.

    Attributes:
        n_items: item indices 0..n_items-1 (the tables hold a padding row 0 first, so ``index + 1``).
        max_len: longest input sequence (positions).
        dim: embedding and hidden size d; heads: attention heads (divide d); layers: transformer blocks.
        dropout: on embeddings, attention and feed-forward.
        text_dim: width T of the LM item embeddings; 0 = an ID-only model.
        id_embeddings: (text) add an ID embedding for items seen in training.
        id_dropout: (text) while training, drop an item's ID part with this probability.
    """

    n_items: int
    max_len: int
    dim: int = 64
    heads: int = 1
    layers: int = 2
    dropout: float = 0.2
    text_dim: int = 0
    id_embeddings: bool = True
    id_dropout: float = 0.0


class SASRecNet(nn.Module):
    """Causal self-attention over right-aligned item sequences (see the module docstring).

    Buffers (text models only): ``text`` float32[n_items + 1, T] LM embeddings (row 0 zeros) and
    ``seen`` float32[n_items + 1] (1 = the item has an ID part). Without ``text`` / ``seen`` they start
    at zero (to be filled by ``load_state_dict``).
    """

    def __init__(self, config: SASRecNetConfig, text: torch.Tensor | None = None,
                 seen: torch.Tensor | None = None) -> None:
        super().__init__()
        cfg = self.config = config
        rows = cfg.n_items + 1
        with_text = cfg.text_dim > 0
        self.register_buffer("text", _buffer(text, (rows, cfg.text_dim)) if with_text else None)  # (I + 1, T)
        self.register_buffer("seen", _buffer(seen, (rows,)) if with_text else None)  # (I + 1,)
        if with_text:  # starts at 0: training starts from the ID model and learns what text adds
            self.adapter = nn.Linear(cfg.text_dim, cfg.dim)
            nn.init.zeros_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)
        self.items = None
        if not with_text or cfg.id_embeddings:
            self.items = nn.Embedding(rows, cfg.dim, padding_idx=0)  # row 0: padding
            nn.init.normal_(self.items.weight, std=cfg.dim ** -0.5)
            with torch.no_grad():
                self.items.weight[0].zero_()
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(CausalBlock(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        for block in self.blocks:  # the initialisation of nn.MultiheadAttention, which the defaults were tuned on
            nn.init.xavier_uniform_(block.qkv.weight)
            nn.init.zeros_(block.qkv.bias)
            nn.init.zeros_(block.out.bias)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, inputs: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """inputs int64[B, L] item index + 1 (0 = padding; L <= max_len) -> (states float[B, L, d], per-block
        head-averaged attention float[B, L, L], or None each without ``need_weights``)."""
        n = inputs.shape[1]
        x = self.embed(inputs) * math.sqrt(self.config.dim) + self.positions.weight[self.config.max_len - n:][None]
        real = inputs > 0  # (B, L)
        x = self.drop(x) * real[..., None]  # (B, L, d)
        mask = causal_mask(real)  # (B, 1, L, L)
        weights = []
        for block in self.blocks:
            x, _, w = block(x, mask, need_weights)
            x = x * real[..., None]
            weights.append(w)
        return self.norm(x), weights

    def embed(self, index: torch.Tensor) -> torch.Tensor:
        """int64[...] item index + 1 (0 = padding) -> float[..., d] item representations."""
        if self.text is None:
            return self.items(index)
        rep = self.adapter(self.text[index])
        if self.items is not None:
            keep = self.seen[index, None]
            if self.training and self.config.id_dropout > 0:
                keep = keep * (torch.rand(keep.shape, device=keep.device) >= self.config.id_dropout)
            rep = rep + keep * self.items(index)
        return rep

    def item_table(self) -> torch.Tensor:
        """float[n_items, d]: the output embedding of every item (the padding row left out)."""
        if self.text is None:
            return self.items.weight[1:]
        return self.embed(torch.arange(1, len(self.text), device=self.text.device))

    def set_item_text(self, index: torch.Tensor, vectors: torch.Tensor) -> None:
        """Give items ``index`` (int64[n], item indices) the LM embeddings ``vectors`` (float[n, T]).

        Indices from ``n_items`` on are new items: the tables grow to hold
        them, with no ID part (``seen`` 0), like items never seen in training.
        """
        n = max(self.config.n_items, int(index.max()) + 1)
        if n > self.config.n_items:
            extra = n - self.config.n_items
            self.text = torch.cat([self.text, self.text.new_zeros(extra, self.text.shape[1])])
            self.seen = torch.cat([self.seen, self.seen.new_zeros(extra)])
            if self.items is not None:
                weight = self.items.weight.detach()
                weight = torch.cat([weight, weight.new_zeros(extra, weight.shape[1])])  # (n + 1, d)
                self.items = nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=0)
            self.config = dataclasses.replace(self.config, n_items=n)
        self.text[index.to(self.text.device) + 1] = vectors.to(self.text)


def _buffer(value: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """float32 ``value`` checked against ``shape``, or zeros of that shape."""
    if value is None:
        return torch.zeros(shape)
    value = torch.as_tensor(value, dtype=torch.float32)
    if tuple(value.shape) != shape:
        raise ValueError(f"a buffer of shape {tuple(value.shape)} where {shape} was expected")
    return value
