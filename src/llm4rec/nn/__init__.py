"""Reusable torch blocks: losses, adversarial perturbation, the causal transformer block.

Import from here (``from llm4rec.nn import bpr_loss``); torch is imported when
this package is, so ``import llm4rec`` alone stays light.
"""

from llm4rec.nn.adversarial import apr_loss, fgsm_delta
from llm4rec.nn.losses import LOSSES, bce_loss, bpr_loss, full_softmax_loss, mse_loss, sampled_softmax_loss
from llm4rec.nn.transformer import CausalBlock, causal_mask

__all__ = ["LOSSES", "CausalBlock", "apr_loss", "bce_loss", "bpr_loss", "causal_mask", "fgsm_delta",
           "full_softmax_loss", "mse_loss", "sampled_softmax_loss"]
