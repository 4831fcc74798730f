"""Writing files so that no reader ever sees half of one; every writer of the project uses it.

A file is written to a temporary sibling and renamed over its target (``os.replace`` is atomic
within a filesystem); a folder is built under a temporary sibling name and renamed into place.
An interrupted writer leaves at most a dot-prefixed temporary behind, never a truncated result,
and a failed one leaves the previous version where it was. Results get the permissions any
other file of the user would get (the umask's), not ``mkstemp``'s private 0600/0700: datasets,
checkpoints and reports are shared with collaborators.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(path: Path, directory: bool) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; once the block succeeds it replaces ``path``.

    A failing block removes the temporary and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publishable(tmp, directory=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically; returns the path."""
    with atomic_file(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yields an empty temporary folder beside ``target``; once the block succeeds it becomes
    ``target``.

    ``replace=True`` swaps out an existing ``target`` (a newer checkpoint or report);
    ``replace=False`` keeps one that another process published meanwhile and discards ours (a
    cache that several workers may fill at once).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        _publishable(tmp, directory=True)
        if target.exists():
            if not replace:
                return
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if replace or not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def to_jsonl(rows: Iterable[dict]) -> str:
    """One JSON object per line, UTF-8 kept as is (answers are multilingual)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file written by :func:`to_jsonl`; a missing file has none."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
