"""Data layer: vocabularies, datasets, loaders, protocol splits, synthetic data."""

from llm4rec.data.dataset import Dataset
from llm4rec.data.splits import PROTOCOLS, Split, Stage, make_split
from llm4rec.data.vocabulary import Vocabulary

__all__ = ["PROTOCOLS", "Dataset", "Split", "Stage", "Vocabulary", "make_split"]
