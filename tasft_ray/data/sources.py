"""Load a configured data source — registry name, local path, URL or hub id — into records.

The entry points every other layer uses: :func:`read_source` (the examples and what they were
read from, which a training run names in MLflow: ``lineage``) and :func:`load_source` (the
examples alone). One resolution for both, so a source is described as exactly what was read
(a fallback when its file is missing, a registry entry's folder, the cached download of a URL).
The readers live in ``formats``, the named data sets and their downloads in ``registry``.
"""

from __future__ import annotations

import inspect
import logging
import os
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasft_ray.data.formats import (
    FOLDER_FORMATS,
    FORMAT_FIELDS,
    READERS,
    ROW_CONVERTERS,
    convert_all,
    prompt_row,
)
from tasft_ray.data.lineage import DataInput, file_digest, rows_digest, source_files
from tasft_ray.data.records import DataError, Example, check_fields
from tasft_ray.data.registry import fetch_url, resolve_dataset
from tasft_ray.errors import UserError, one_line

if TYPE_CHECKING:
    from tasft_ray.config import SourceConfig

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- entry points


def read_path(
    path: Path, fmt: str, fields: Mapping[str, str] | None = None, **options: Any
) -> list[Example]:
    """Read one file (or folder, for folder formats) with the reader registered for ``fmt``."""
    reader = READERS.get(fmt)
    if reader is None:
        raise DataError(f"{path}: unknown format '{fmt}' (known: {', '.join(READERS)})")
    accepted = list(inspect.signature(reader).parameters)[2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(
            f"{path}: format '{fmt}' has no option {unknown} (options: {accepted or 'none'})"
        )
    return reader(Path(path), dict(fields or {}), **options)


def examples_from_rows(
    rows: Iterable[Mapping[str, Any]],
    fmt: str,
    fields: Mapping[str, str] | None = None,
    origin: str = "rows",
    **options: Any,
) -> list[Example]:
    """Convert already-parsed rows (e.g. a Hugging Face dataset) with the format's row rules.

    Structural formats (stl_eval, red_instruct) have no per-row layout, so their rows are read as
    prompt-only ``instruction``/``input`` columns.
    """
    fields = dict(fields or {})
    if fmt not in READERS:
        raise DataError(f"{origin}: unknown format '{fmt}' (known: {', '.join(READERS)})")
    check_fields(fields, origin, FORMAT_FIELDS[fmt])
    convert = ROW_CONVERTERS.get(fmt, prompt_row)
    numbered = ((f"{origin}: row {i}", row) for i, row in enumerate(rows))
    return convert_all(numbered, convert, fields, **options)


@dataclass(frozen=True)
class Loaded:
    """A source's examples and what they were read from: its name as people know it, where it
    is, and the files (none for a hub data set) whose bytes identify its content."""

    examples: list[Example]
    name: str
    place: str
    place_type: str  # local | http | hf
    files: tuple[Path, ...] = ()

    def describe(self, role: str, rows: int) -> DataInput:
        """The source as a training run used it (``rows`` of it, in ``role``)."""
        digest = file_digest(self.files) if self.files else rows_digest(self.examples)
        return DataInput(role, self.name, self.place, self.place_type, digest, rows)


def read_source(src: SourceConfig, root: str | None = None, key: str | None = None) -> Loaded:
    """Load one configured source (registry name, local path, URL or hub id).

    Args:
        src: The validated source block from the config.
        root: Local data root for registry names (config ``data.root``; if None,
            ``$TASFT_DATA_DIR`` is used).
        key: The config key that names the source (``data.safe``), put before any error.

    Returns:
        The examples in file order, with what they were read from.

    Raises:
        DataError: With a one-line message naming what failed and how to fix it.
    """
    try:
        return _read_source(src, root)
    except UserError as exc:
        if key is None:
            raise
        raise DataError(f"{key}: {exc}") from None


def _read_source(src: SourceConfig, root: str | None) -> Loaded:
    if src.fallback is not None and not src.path_exists():
        logger.warning(
            "%s does not exist yet: using its fallback %s", src.path, src.fallback.origin
        )
        return _read_source(src.fallback, root)
    opts = dict(src.options)
    if src.name:
        entry, folder = resolve_dataset(str(src.name), root)
        loaded = Loaded(_load_registered(src, entry, folder), entry.name, str(folder), "local",
                        tuple(folder / f for f in entry.files))  # fmt: skip
        origin = f"dataset '{src.name}'"
    elif src.path:
        path = Path(src.path).expanduser()
        examples = read_path(path, str(src.format), src.fields, **opts)
        path = path.resolve()
        loaded = Loaded(examples, path.name, str(path), "local", tuple(source_files(path)))
        origin = src.path
    elif src.url:
        local = fetch_url(src.url)
        name = Path(urllib.parse.urlparse(src.url).path).name or src.url
        examples = read_path(local, str(src.format), src.fields, **opts)
        loaded = Loaded(examples, name, src.url, "http", (local,))
        origin = src.url
    else:
        name = f"{src.hf}" + (f"/{src.hf_config}" if src.hf_config else "") + f":{src.split}"
        loaded = Loaded(_load_hf(src), name, str(src.hf), "hf")
        origin = f"hf '{src.hf}'"
    if src.prompt_part != "all":
        loaded = _prompt_part(loaded, src.prompt_part, src.heldout_share)
        origin += f" ({src.prompt_part} prompts)"
    if not loaded.examples:
        logger.warning("%s: no examples (check the file and the filters)", origin)
    logger.info("%s: loaded %d examples", origin, len(loaded.examples))
    return loaded


def in_heldout(instruction: str, share: float) -> bool:
    """Whether a prompt is in the held-out part: a fixed hash of its normalised text, so a
    prompt lands on the same side in every source, run and machine."""
    key = " ".join(instruction.lower().split()).encode()
    return zlib.crc32(key) % 10_000 < share * 10_000


def _prompt_part(loaded: Loaded, part: str, share: float) -> Loaded:
    """The examples of one part of the split by prompt, named so in the run's lineage."""
    keep = [e for e in loaded.examples if in_heldout(e.instruction, share) == (part == "heldout")]
    name = f"{loaded.name} [{part} prompts]"
    return replace(loaded, examples=keep, name=name)


def load_source(
    src: SourceConfig, root: str | None = None, key: str | None = None
) -> list[Example]:
    """The examples of one configured source (``read_source`` without the lineage)."""
    return read_source(src, root, key).examples


def _load_registered(src: SourceConfig, entry, folder: Path) -> list[Example]:
    if src.format is not None and src.format != entry.format:
        raise DataError(
            f"dataset '{entry.name}': format '{src.format}' does not match its registered "
            f"format '{entry.format}' (drop 'format' or use a path source)"
        )
    if entry.format in FOLDER_FORMATS and len(entry.files) > 1:
        targets = [folder / os.path.commonpath(entry.files)]
    else:
        targets = [folder / rel for rel in entry.files]
    out: list[Example] = []
    for target in targets:
        out.extend(read_path(target, entry.format, src.fields, **{**entry.options, **src.options}))
    return out


def _load_hf(src: SourceConfig) -> list[Example]:
    origin = f"hf dataset '{src.hf}'" + (f" ({src.hf_config})" if src.hf_config else "")
    origin += f" split '{src.split}'"
    try:
        import datasets
    except ImportError:
        raise DataError(f"{origin}: the 'datasets' package is not installed") from None
    try:
        rows = datasets.load_dataset(src.hf, src.hf_config, split=src.split)
    except Exception as exc:  # the hub client raises many unrelated types
        raise DataError(
            f"{origin}: could not load ({type(exc).__name__}: {one_line(exc)}); download the "
            "data and use a path source, or check the id, config and split"
        ) from None
    return examples_from_rows(rows, str(src.format), src.fields, origin, **src.options)
