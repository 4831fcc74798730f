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
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasft_ray.data.records import Example
from tasft_ray.data.registry import fetch_url, resolve_dataset

if TYPE_CHECKING:
    from tasft_ray.config import SourceConfig

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


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return [path]


def describe_source(
    role: str,
    src: SourceConfig,
    root: str | None,
    rows: int,
    examples: Sequence[Example] = (),
) -> DataInput:
    """``src`` as ``load_source`` read it (its fallback when its file is missing). ``examples``:
    the rows loaded from a hub source, which has no file to digest."""
    if src.fallback is not None and not src.path_exists():
        return describe_source(role, src.fallback, root, rows, examples)
    if src.name:
        entry, folder = resolve_dataset(str(src.name), root)
        digest = file_digest(folder / f for f in entry.files)
        return DataInput(role, entry.name, str(folder), "local", digest, rows)
    if src.path:
        path = Path(src.path).expanduser().resolve()
        return DataInput(role, path.name, str(path), "local", file_digest(_files(path)), rows)
    if src.url:
        name = Path(urllib.parse.urlparse(src.url).path).name or src.url
        return DataInput(role, name, src.url, "http", file_digest([fetch_url(src.url)]), rows)
    name = f"{src.hf}" + (f"/{src.hf_config}" if src.hf_config else "") + f":{src.split}"
    return DataInput(role, name, str(src.hf), "hf", rows_digest(examples), rows)


def describe_file(role: str, path: str | os.PathLike[str], rows: int) -> DataInput:
    """A file this project wrote (``generate``'s output), as a training run will name it."""
    p = Path(path).expanduser().resolve()
    return DataInput(role, p.name, str(p), "local", file_digest([p]), rows)
