"""The training options every neural model shares (its config inherits them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llm4rec.errors import InputError

__all__ = ["TrainingConfig", "resolve_device"]


class TrainingConfig(BaseModel):
    """Options of :class:`~llm4rec.training.Trainer`.

    A model's config inherits these fields (``class MyConfig(ModelConfig,
    TrainingConfig)``), so ``--set epochs=5`` works the same for every neural
    model and the trainer reads them with :meth:`from_config`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(30, ge=1, description="maximum number of passes over the training examples")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(512, ge=1, description="examples per step (the expected size under DP)")
    l2: float = Field(0.0, ge=0, description="L2 penalty on every weight (Adam's weight_decay)")
    patience: int = Field(3, ge=0, description="stop after this many epochs without a better validation "
                                               "metric; 0 trains all epochs (the best epoch is restored "
                                               "either way)")
    valid: Literal["last", "items", "none"] = Field(
        "last", description="validation carved from the fit set: each user's last interaction "
                            "('last', NDCG@10 over all items), the interactions of 10% of the items "
                            "ranked among those items ('items', pseudo cold-start, NDCG@20), or none")
    valid_users: int = Field(0, ge=0, description="validate on a seeded sample of at most this many users "
                                                  "(slow-to-score models on large data); 0 = all")
    seed: int = Field(2026, description="seeds torch, numpy and every draw of the training loop")
    dp_noise_multiplier: float = Field(0.0, ge=0, description="DP-SGD (Opacus) noise multiplier; 0 = off")
    dp_max_grad_norm: float = Field(1.0, gt=0, description="DP-SGD per-example gradient clipping norm")
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="DP delta at which the spent epsilon is reported")
    run_dir: str | None = Field(None, description="directory for metrics.csv, TensorBoard events, plot, "
                                                  "config, metrics.json and the model; None = no files")
    threads: int = Field(1, ge=0, description="torch threads while training; 0 = torch's default. One "
                                              "thread avoids the heavy slowdown of oversubscribed cores "
                                              "(small models gain little from more)")
    progress: bool = Field(False, description="show a rich progress bar per epoch on stderr")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the network trains and scores: "
                                                                       "'auto' = cuda when available, else cpu")

    @classmethod
    def from_config(cls, config: BaseModel) -> TrainingConfig:
        """The training options held by a model config that inherits this class."""
        return cls(**{k: getattr(config, k) for k in cls.model_fields})


def resolve_device(name: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a device setting; InputError when cuda is asked for and missing."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device='cuda' but torch sees no CUDA device", value=name,
                         expected="device=cpu or device=auto on this machine")
    if name not in ("cpu", "cuda"):
        raise InputError("unknown device", value=name, expected="auto, cpu or cuda")
    return name
