"""Data for TA-SFT: named data sets, per-format readers, the prompt template, the tokenised
training mixture and the evaluation prompt sets.

Layers inside: records (Example, DataError) <- formats (readers) <- registry (names, downloads)
<- lineage (digests) <- sources (read_source: examples and what they came from; load_source)
<- template, mixture, benchmarks.
"""

from tasft_ray.data.records import DataError, Example
from tasft_ray.data.sources import Loaded, load_source, read_source

__all__ = ["DataError", "Example", "Loaded", "load_source", "read_source"]
