"""The one training loop, its options and callbacks, and validation carved from a fit set.

A neural model's config inherits :class:`TrainingConfig`; its ``_fit`` builds a
:class:`TrainingTask` and calls ``Trainer(TrainingConfig.from_config(cfg)).fit(task, valid)``
with ``valid`` from :func:`holdout`. torch is imported only when training runs.
"""

from llm4rec.training.callbacks import Callback, EarlyStopping, ProgressBar, RunLogger
from llm4rec.training.config import TrainingConfig, resolve_device
from llm4rec.training.loop import (
           Trainer,
           TrainingTask,
           TrainResult,
           TrainState,
           Validation,
)
from llm4rec.training.validation import check_valid_stage, holdout

__all__ = ["Callback", "EarlyStopping", "ProgressBar", "RunLogger", "TrainResult", "TrainState", "Trainer",
           "TrainingConfig", "TrainingTask", "Validation", "check_valid_stage", "holdout", "resolve_device"]
