"""Which data trained an adapter: each source a mixture drew on, by name, place, rows used and a
digest of its content, so a training run and the ``generate`` run that wrote its harmful pairs
can be matched in MLflow (same file, same digest) wherever they ran.

The digest is of the file's bytes (every file of a folder source), not of the rows read from
it: a generated file is read differently as training data (harmful rows only) than it was
written, and both sides must still name the same content. Hub data sets have no file here, so
theirs is a digest of the rows as loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasft_ray.data.records import Example

DIGEST_CHARS = 16  # MLflow keeps at most 36 characters of a dataset digest


@dataclass(frozen=True)
class DataInput:
    """One source as one training run used it."""

    role: str  # safe | harmful | refusals | contrastive | generated
    name: str  # what the MLflow UI shows: the registry name, or the file's name
    source: str  # where it is: a local path, a URL or a hub id
    source_type: str  # local | http | hf
    digest: str
    rows: int  # rows this run used (or, for a generated file, wrote)


def file_digest(paths: Iterable[Path]) -> str:
    """sha256 over the files' bytes, in sorted path order."""
    h = hashlib.sha256()
    for path in sorted(paths):
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:DIGEST_CHARS]


def rows_digest(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.instruction, e.input, e.output]).encode("utf-8"))
    return h.hexdigest()[:DIGEST_CHARS]


def source_files(path: Path) -> list[Path]:
    """The files a path source is: itself, or every file of a folder but hidden ones."""
    if path.is_dir():
        return [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return [path]


def describe_file(role: str, path: str | os.PathLike[str], rows: int) -> DataInput:
    """A file this project wrote (``generate``'s output), as a training run will name it."""
    p = Path(path).expanduser().resolve()
    return DataInput(role, p.name, str(p), "local", file_digest([p]), rows)
