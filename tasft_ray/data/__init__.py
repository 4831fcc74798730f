"""Data for TA-SFT: named data sets, per-format readers, the prompt template, the tokenised
training mixture and the evaluation prompt sets.

Layers inside: records (Example, DataError) <- formats (readers) <- registry (names, downloads)
<- sources (load_source) <- template, mixture, benchmarks.
"""

from tasft_ray.data.records import DataError, Example
from tasft_ray.data.sources import load_source

__all__ = ["DataError", "Example", "load_source"]
