"""Reusable torch blocks: losses and adversarial perturbation.

Import from here (``from llm4rec.nn import bpr_loss``); torch is imported when
this package is, so ``import llm4rec`` alone stays light.
"""

from llm4rec.nn.adversarial import apr_loss, fgsm_delta
from llm4rec.nn.losses import LOSSES, bce_loss, bpr_loss, mse_loss, sampled_softmax_loss

__all__ = ["LOSSES", "apr_loss", "bce_loss", "bpr_loss", "fgsm_delta", "mse_loss", "sampled_softmax_loss"]
