"""Data loading for TA-SFT: named data sets, per-format readers and the prompt template."""

from tasft_ray.data.sources import DataError, Example, load_source

__all__ = ["DataError", "Example", "load_source"]
