"""Experiments over many runs: hyperparameter search (:mod:`~llm4rec.experiments.tune`, with its search spaces in
:mod:`~llm4rec.experiments.space`) and experiment files (:mod:`~llm4rec.experiments.config`, the typed TOML
configs; :mod:`~llm4rec.experiments.pipeline`, every model under every seed into one results folder). Import
from the modules; each lists its exports."""
