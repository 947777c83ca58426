"""Recommendation losses over scores of positive and sampled negative items.

Shapes: ``B`` examples per batch, ``N`` negatives per example. Every loss
returns a scalar: the mean over the batch of a per-example loss, so it suits
DP-SGD's per-example gradients (no term couples two examples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "bce_loss", "bpr_loss", "mse_loss", "sampled_softmax_loss"]


def _valid(neg: torch.Tensor, neg_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(neg, dtype=torch.bool) if neg_mask is None else neg_mask


def bce_loss(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with negative sampling.

    ``loss_b = -log σ(pos_b) - mean_j log(1 - σ(neg_bj))``, averaged over b:
    the positive and the (mean of the) negatives weigh the same whatever N.

    Args:
        pos: float[B] scores (logits) of the positive items.
        neg: float[B, N] scores of the sampled negatives.
        neg_mask: bool[B, N], False drops a negative (e.g. an accidental hit).
    """
    valid = _valid(neg, neg_mask)
    neg_term = (F.softplus(neg) * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B,)
    return (F.softplus(-pos) + neg_term).mean()


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bayesian personalised ranking: ``loss_b = -mean_j log σ(pos_b - neg_bj)``.

    Args:
        pos: float[B]; neg: float[B, N]; neg_mask: bool[B, N] (False drops a pair).
    """
    valid = _valid(neg, neg_mask)
    pair = F.softplus(neg - pos[:, None]) * valid  # -log σ(pos - neg), (B, N)
    return (pair.sum(1) / valid.sum(1).clamp(min=1)).mean()


def sampled_softmax_loss(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None, *,
                         log_q_pos: torch.Tensor | None = None, log_q_neg: torch.Tensor | None = None,
                         temperature: float = 1.0) -> torch.Tensor:
    """Sampled softmax: cross-entropy of the positive among itself and N negatives.

    ``loss_b = -log softmax([pos_b, neg_b1..neg_bN] / T)[0]``. With logQ
    correction (Yi et al., RecSys 2019) each logit first loses the log
    probability that the sampler draws that item, ``s - log q``, which removes
    the popularity bias of sampled negatives.

    Args:
        pos: float[B]; neg: float[B, N]; neg_mask: bool[B, N] (False drops a negative).
        log_q_pos: float[B] log sampling probability of each positive, or None.
        log_q_neg: float[B, N] log sampling probability of each negative, or None.
        temperature: T > 0 divides every logit.
    """
    if log_q_pos is not None:
        pos = pos - log_q_pos
    if log_q_neg is not None:
        neg = neg - log_q_neg
    neg = neg.masked_fill(~_valid(neg, neg_mask), float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1) / temperature  # (B, 1 + N)
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error for explicit ratings: ``mean_b (pred_b - target_b)^2``; pred, target: float[B]."""
    return ((pred - target) ** 2).mean()


#: ranking losses by config name (MSE is the rating loss and takes other arguments)
LOSSES = {"bce": bce_loss, "bpr": bpr_loss, "softmax": sampled_softmax_loss}
