"""Load a configured data source — registry name, local path, URL or hub id — into records.

The entry point every other layer uses (:func:`load_source`); the readers live in
``formats``, the named data sets and their downloads in ``registry``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Mapping
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
from tasft_ray.data.records import DataError, Example, check_fields
from tasft_ray.data.registry import fetch_url, resolve_dataset
from tasft_ray.errors import one_line

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


def load_source(src: SourceConfig, root: str | None = None) -> list[Example]:
    """Load one configured source (registry name, local path, URL or hub id) into examples.

    Args:
        src: The validated source block from the config.
        root: Local data root for registry names (config ``data.root``; if None,
            ``$TASFT_DATA_DIR`` is used).

    Returns:
        The examples in file order.

    Raises:
        DataError: With a one-line message naming what failed and how to fix it.
    """
    if src.fallback is not None and not src.path_exists():
        logger.warning(
            "%s does not exist yet: using its fallback %s", src.path, src.fallback.origin
        )
        return load_source(src.fallback, root)
    opts = dict(src.options)
    if src.name:
        examples = _load_registered(src, root)
        origin = f"dataset '{src.name}'"
    elif src.path:
        examples = read_path(Path(src.path).expanduser(), str(src.format), src.fields, **opts)
        origin = src.path
    elif src.url:
        examples = read_path(fetch_url(src.url), str(src.format), src.fields, **opts)
        origin = src.url
    else:
        examples = _load_hf(src)
        origin = f"hf '{src.hf}'"
    if not examples:
        logger.warning("%s: no examples (check the file and the filters)", origin)
    logger.info("%s: loaded %d examples", origin, len(examples))
    return examples


def _load_registered(src: SourceConfig, root: str | None) -> list[Example]:
    entry, folder = resolve_dataset(str(src.name), root)
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
