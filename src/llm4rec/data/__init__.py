"""Data layer: vocabularies, datasets, loaders, protocol splits, synthetic data."""

from llm4rec.data.dataset import Dataset
from llm4rec.data.sources import FORMATS, detect_format, load_dataset
from llm4rec.data.splits import PROTOCOLS, Split, Stage, make_split
from llm4rec.data.synthetic import make_synthetic
from llm4rec.data.vocabulary import Vocabulary

__all__ = ["FORMATS", "PROTOCOLS", "Dataset", "Split", "Stage", "Vocabulary", "detect_format", "load_dataset",
           "make_split", "make_synthetic"]
