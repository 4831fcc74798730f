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
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tasft_ray.errors import UserError


def cache_root(explicit: str | None = None) -> Path:
    """Downloads and model conversions: explicit, $TASFT_CACHE_DIR, else ~/.cache/tasft_ray.

    Read per call so tests can redirect it.
    """
    return Path(explicit or os.environ.get("TASFT_CACHE_DIR") or "~/.cache/tasft_ray").expanduser()


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


LOCK_FILE = ".tasft.lock"


def folder_bytes(folder: str | os.PathLike) -> dict[str, bytes]:
    """The files of a flat folder (a saved adapter), name -> bytes: what Ray ships between
    processes that share no disk."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def write_folder(folder: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """The inverse of :func:`folder_bytes`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def check_writable(path: str | os.PathLike, key: str, folder: bool = True) -> None:
    """One line naming ``key`` when ``path`` (a folder, or with ``folder=False`` a file) could
    not be created or written: checked before any work starts, not at the first write."""
    target = Path(path).expanduser().absolute()
    if target.exists() and target.is_dir() != folder:
        kind = "a folder" if target.is_dir() else "a file"
        raise UserError(f"{key} {path}: is {kind}, expected {'a folder' if folder else 'a file'}")
    probe = target if folder else target.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{key} {path}: {probe} is a file, so nothing can be created below it")
    blocked = target.exists() and not os.access(target, os.W_OK)
    if blocked or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{key} {path}: {probe} is not writable by this user")


def _holder(lock: Path) -> dict | None:
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _alive(holder: dict) -> bool:
    """Only a process on this host can be checked; one elsewhere is taken to be running."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(lock: str | os.PathLike, key: str, what: str) -> Iterator[None]:
    """One writer per output: the lock file holds the owner's pid, host and start time.

    A second writer fails with one line naming the holder and ``key``; a lock left by a process
    that is gone (same host, pid not running) is taken over. Taking over renames the stale file
    away first, so of two processes that find it stale only one gets the lock. A block that
    fails leaves no folder behind that the lock created and nothing else filled (a run stopped
    by bad input before it wrote anything).
    """
    lock = Path(lock)
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%FT%T")}
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is None:  # being written this instant, or garbage: look again shortly
                if time.time() - _mtime(lock) < 5:
                    time.sleep(0.1)
                    continue
            elif _alive(holder):
                where = holder.get("host")
                hint = "" if where == me["host"] else f"; if that run is gone, delete {lock}"
                raise UserError(
                    f"{key} {what} is in use by pid {holder['pid']} on {where} since "
                    f"{holder.get('since')}: one run per output{hint}"
                ) from None
            stale = lock.with_name(f"{lock.name}.stale.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(lock, stale)
                stale.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        _remove_empty(made)
        raise UserError(f"{key} {what}: could not take the lock {lock}")
    try:
        yield
    except BaseException:
        _release(lock, me)
        _remove_empty(made)
        raise
    _release(lock, me)


def _release(lock: Path, me: dict) -> None:
    if (_holder(lock) or {}).get("pid") == me["pid"]:
        lock.unlink(missing_ok=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): neither it nor its parents are ours to remove
            return


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
