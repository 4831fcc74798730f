"""Shared test setup: point the data loaders at the shipped offline data and a scratch cache."""

import os
import tempfile
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TASFT_DATA_DIR", str((_REPO_ROOT / ".." / "shared" / "data").resolve()))
os.environ.setdefault("TASFT_CACHE_DIR", tempfile.mkdtemp(prefix="tasft_test_cache_"))
