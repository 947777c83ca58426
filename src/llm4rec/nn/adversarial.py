"""APR-style adversarial training on embeddings (He et al., SIGIR 2018).

The adversary adds to each embedding the perturbation of norm ``eps`` that
raises the loss most to first order (the fast gradient sign method's
direction, L2-normalised per row); the model then minimises
``loss(x) + weight * loss(x + delta)``, which makes it robust to small
changes of its embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["apr_loss", "fgsm_delta"]


def fgsm_delta(grad: torch.Tensor, eps: float) -> torch.Tensor:
    """``eps * grad / ||grad||`` along the last dimension (zero where the gradient is zero).

    Args:
        grad: float[..., d], the gradient of the loss at an embedding.
    Returns:
        float[..., d], detached: the adversary's perturbation.
    """
    return eps * F.normalize(grad.detach(), dim=-1)


def apr_loss(loss_fn: Callable[[Sequence[torch.Tensor]], torch.Tensor], embeddings: Sequence[torch.Tensor],
             eps: float, weight: float) -> torch.Tensor:
    """Clean loss plus ``weight`` times the loss at the worst-case perturbation.

    Args:
        loss_fn: maps embeddings (same shapes as ``embeddings``) to a scalar loss.
        embeddings: tensors of the autograd graph (e.g. float[B, d] user and
            float[B, 1 + N, d] item representations) to perturb.
        eps: L2 norm of each row's perturbation.
        weight: weight of the adversarial term.
    Returns:
        scalar ``loss_fn(x) + weight * loss_fn(x + delta)``; gradients flow
        through both terms, not through ``delta``.
    """
    clean = loss_fn(embeddings)
    grads = torch.autograd.grad(clean, list(embeddings), retain_graph=True)
    perturbed = [x + fgsm_delta(g, eps) for x, g in zip(embeddings, grads)]
    return clean + weight * loss_fn(perturbed)
