"""The base of the neural models (``llm-two-tower``, ``sasrec``, ``sasrec-text``, ``generative``).

:class:`NeuralRecommender` owns what they share: the validation hold-out (or
a given ``valid`` stage, checked), the :class:`~llm4rec.training.Trainer`
with early stopping and the caller's callbacks, the run directory, device
placement, and saving the network's weights as ``.npz`` arrays. A model
supplies its network and its task::

    class MyModel(NeuralRecommender):
        def _prepare(self, data): ...                 # item text embeddings, codes: what the net is built from
        def _task(self, train, data): ...             # a TrainingTask over the training part
        def _build(self, arrays=None): ...            # the nn.Module (from saved arrays on load)
        def _score_histories(self, histories, items): ...
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.models.base import Recommender
from llm4rec.models.torch_state import module_arrays, module_weights

if TYPE_CHECKING:
    import torch

    from llm4rec.data import Dataset, Stage

__all__ = ["NeuralRecommender"]


@dataclass
class _Run:
    """What one call of :meth:`NeuralRecommender.fit` was given besides the data."""

    valid: Any = None
    callbacks: list = field(default_factory=list)
    parallel: Any = None


class NeuralRecommender(Recommender):
    """A recommender whose network trains in epochs through :class:`~llm4rec.training.Trainer`.

    Learned attributes: ``net_`` (the torch module, on the configured device),
    ``train_summary_`` (epochs run, best epoch and value, seconds),
    ``training_history_`` (one record per epoch).
    """

    def fit(self, data: Dataset, valid: Stage | None = None, *, callbacks: list | None = None,
            parallel: Any = None) -> NeuralRecommender:
        """Fit on ``data``; validate on ``valid`` (a protocol's ``valid`` stage of this very fit set) or,
        by default, on a hold-out carved from ``data`` (the ``valid`` setting). ``callbacks``
        (:class:`~llm4rec.training.Callback`) see every batch and epoch, e.g. a progress display.
        ``parallel`` (:class:`~llm4rec.training.parallel.DataParallel`) makes this process one rank of a
        data-parallel fit (:func:`llm4rec.distributed.train.fit_distributed` sets it up)."""
        from llm4rec.training import check_valid_stage

        check_valid_stage(valid, data)
        self._run = _Run(valid, list(callbacks or []), parallel)
        try:
            return super().fit(data)
        finally:
            del self._run

    # ----------------------------------------------------------------- hooks
    def _prepare(self, data: Dataset) -> None:
        """Compute what the network is built from (text embeddings, semantic IDs...) on the whole fit set."""

    @abstractmethod
    def _task(self, train: Dataset, data: Dataset) -> Any:
        """The :class:`~llm4rec.training.TrainingTask` over ``train`` (``data`` minus the hold-out)."""

    def _validation(self, task: Any, data: Dataset, stage: Stage | None) -> Any:
        """What the trainer validates on: the stage itself (NDCG), or a model's own metric."""
        return stage

    def _after_training(self, task: Any, data: Dataset, stage: Stage | None, result: Any) -> None:
        """Anything after the main training (e.g. fine-tuning the text encoder)."""

    @abstractmethod
    def _build(self, arrays: dict[str, np.ndarray] | None = None) -> torch.nn.Module:
        """The network: built for training (``arrays`` None, after the trainer has seeded torch) or
        from saved arrays (weights are loaded after)."""

    def _extra_state(self) -> dict[str, np.ndarray]:
        """Arrays to save beside the network's weights."""
        return {}

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_extra_state` saved (called before :meth:`_build`)."""

    # ------------------------------------------------------------------ fit
    def _fit(self, data: Dataset) -> None:
        from llm4rec.training import Trainer, TrainingConfig, holdout

        cfg = self.config
        run = getattr(self, "_run", None) or _Run()
        self._prepare(data)
        stage, train = run.valid, data
        if stage is None:
            train, stage = holdout(data, cfg.valid, seed=cfg.seed)
        task = self._task(train, data)
        record = {"model": self.name, "config": cfg.model_dump(mode="json")}
        result = Trainer(TrainingConfig.from_config(cfg), config=record, callbacks=run.callbacks,
                         parallel=run.parallel).fit(task, self._validation(task, data, stage))
        self.net_ = result.module
        self.train_summary_ = result.summary()
        self.training_history_ = result.history
        self._after_training(task, data, stage, result)
        self._save_run()

    def _save_run(self) -> None:
        """Save the model into the run directory when one is configured."""
        if self.config.run_dir is not None:
            self.save(Path(self.config.run_dir) / "model", overwrite=True)

    def _fit_outcome(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What a fit produced beyond the fit set: (the state arrays :meth:`save` writes, a JSON-friendly
        dict of the config, ``train_summary_``, ``training_history_`` and ``provenance_``).
        :meth:`_adopt_fit` installs them in another process's model of the same config."""
        info = {"config": self.config.model_dump(mode="json"), "train_summary": self.train_summary_,
                "training_history": self.training_history_, "provenance": self.provenance_}
        return self._state(), info

    def _adopt_fit(self, data: Dataset, arrays: dict[str, np.ndarray], info: dict[str, Any],
                   keep: tuple[str, ...] = ("device", "run_dir", "progress")) -> NeuralRecommender:
        """Become the model that :meth:`_fit_outcome` described after fitting ``data`` elsewhere (rank 0 of a
        data-parallel fit): this model's ``keep`` settings stay, the others (e.g. the architecture adopted
        under ``init_from``) come from the fitted model; the run directory is written as :meth:`fit` would."""
        self._remember(data)
        settings = {k: v for k, v in info["config"].items() if k not in keep}
        self.config = self.make_config({**self.config.model_dump(mode="json"), **settings})
        self.provenance_.update(info["provenance"])
        self._set_state(arrays)
        self.train_summary_ = info["train_summary"]
        self.training_history_ = info["training_history"]
        self._save_run()
        return self

    @property
    def device(self) -> torch.device:
        """Where the network scores (the ``device`` setting, resolved)."""
        import torch

        from llm4rec.training import resolve_device

        return torch.device(resolve_device(self.config.device))

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        return {**self._extra_state(), **module_arrays(self.net_)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        import warnings

        import torch

        if self.config.device == "cuda" and not torch.cuda.is_available():  # trained on a GPU, served on CPUs
            warnings.warn("this model was saved with device='cuda' and no CUDA device is here: it loads on the CPU",
                          stacklevel=3)
            self.config = self.config.model_copy(update={"device": "cpu"})
        self._set_extra_state(arrays)
        net = self._build(arrays)
        net.load_state_dict(module_weights(arrays))
        self.net_ = net.to(self.device).eval()
