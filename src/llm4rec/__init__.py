"""llm4rec: language models inside recommender systems.

The top level stays light: heavy modules (torch, implicit, polars) are imported
where they are used. Import from ``llm4rec.data``, ``llm4rec.models`` and
``llm4rec.evaluation`` for the full API.
"""

from llm4rec.errors import InputError, Llm4recError

__version__ = "0.1.0"
__all__ = ["InputError", "Llm4recError", "__version__"]
