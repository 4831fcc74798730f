"""The record every data set becomes (:class:`Example`), the error every reader raises
(:class:`DataError`), and the parsing primitives the format readers share.

Problems are raised as :class:`DataError` with a one-line message that names the file, the line
or record and the field, so the CLI can print it and exit without a traceback. Record contents are
never put into messages or logs: several data sets contain genuinely harmful text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasft_ray.errors import UserError, one_line

CANONICAL_FIELDS = ("instruction", "input", "output")


class DataError(UserError):
    """A data problem, phrased as one line that names the file, the record and the field."""


def _meta_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Example:
    """One instruction with an optional input and (for training sets) a response.

    ``output`` is None for prompt-only evaluation sets. ``meta`` is a sorted tuple of string
    pairs rather than a dict so that examples stay hashable (de-duplication, sets, caching); a
    mapping may be passed and is normalised, non-string values become JSON text.
    """

    instruction: str
    input: str = ""
    output: str | None = None
    meta: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        pairs = dict(self.meta.items() if isinstance(self.meta, Mapping) else self.meta)
        norm = tuple(sorted((str(k), _meta_value(v)) for k, v in pairs.items()))
        object.__setattr__(self, "meta", norm)

    @property
    def meta_dict(self) -> dict[str, str]:
        """The metadata as a plain dict, for lookups by key."""
        return dict(self.meta)


# --------------------------------------------------------------------------- parsing


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc.strerror or exc)})") from None


def parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def load_json(path: Path) -> Any:
    return parse_json(path, read_text(path))


def iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, record)`` from a JSON array or a JSON-lines file.

    The layout is decided by content (first non-space character ``[``), not by the suffix,
    because upstream repos name JSON-lines files ``.json`` and vice versa.
    """
    text = read_text(path)
    if text.lstrip().startswith("["):
        for i, rec in enumerate(parse_json(path, text)):
            yield f"{path}: record {i}", rec
        return
    # split("\n"), not splitlines(): JSON strings may legally hold U+2028 and friends.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        yield f"{path}:{lineno}", rec


def read_csv(path: Path, required: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """Rows as dicts, each with the line its record starts on (fields may span lines)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    rows: list[tuple[str, dict[str, str]]] = []
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty CSV file (expected a header row)")
        for col in required:
            if col not in header:
                cols = ", ".join(header)
                raise DataError(f"{path}:1: missing column '{col}' (columns: {cols})")
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{start}: expected {len(header)} columns, got {len(row)}")
            rows.append((f"{path}:{start}", dict(zip(header, row, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: invalid CSV ({one_line(exc)})") from None
    return rows


def require_object(where: str, rec: Any) -> Mapping[str, Any]:
    if not isinstance(rec, Mapping):
        raise DataError(f"{where}: expected a JSON object (got {type_name(rec)})")
    return rec


def check_fields(
    fields: Mapping[str, str], origin: object, allowed: Iterable[str] = CANONICAL_FIELDS
) -> Mapping[str, str]:
    allowed = tuple(allowed)
    for key, col in fields.items():
        if key not in allowed:
            raise DataError(
                f"{origin}: fields: key '{key}' is not used by this format "
                f"(expected one of: {', '.join(allowed)})"
            )
        if not isinstance(col, str) or not col:
            raise DataError(f"{origin}: fields: '{key}' must name a column (got {col!r})")
    return fields


def text_field(
    rec: Mapping[str, Any],
    where: str,
    fields: Mapping[str, str],
    name: str,
    default: str,
    *,
    required: bool = True,
    nonempty: bool = False,
) -> str:
    """Fetch one text field, honouring the ``fields`` rename; optional fields default to ""."""
    col = fields.get(name, default)
    if col not in rec or (rec[col] is None and not required):
        if required:
            raise DataError(f"{where}: missing field '{col}'")
        return ""
    value = rec[col]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{col}' must be a string (got {type_name(value)})")
    if nonempty and not value.strip():
        raise DataError(f"{where}: field '{col}' is empty (expected non-empty text)")
    return value


def flag_field(rec: Mapping[str, Any], where: str, key: str, why: str) -> bool:
    if key not in rec:
        raise DataError(f"{where}: missing field '{key}' ({why})")
    value = rec[key]
    if not isinstance(value, bool):
        raise DataError(f"{where}: field '{key}' must be a boolean (got {type_name(value)})")
    return value


def check_option(origin: object, name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    # type() equality so that 1 is not accepted for True, nor "" for None.
    if not any(type(value) is type(a) and value == a for a in allowed):
        shown = ", ".join(repr(a) for a in allowed)
        raise DataError(f"{origin}: option '{name}' must be one of {shown} (got {value!r})")
