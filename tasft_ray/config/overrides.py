"""Dotted keys (``loss.lam``) onto nested raw dicts, and a config back into dotted keys."""

from __future__ import annotations

from typing import Any

from tasft_ray.config.base import ConfigError, Section


def set_dotted(raw: dict[str, Any], key: str, value: Any, origin: str) -> None:
    """``raw[a][b] = value`` for ``key`` 'a.b', creating sections; ``origin`` names the
    override in the error when a part of the key is a value, not a section."""
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def flatten(section: Section, prefix: str = "") -> dict[str, Any]:
    """{dotted.key: JSON value} for every field: sections are walked into (except those that
    are ``ONE_VALUE``), anything else (a value, a list, a free-form mapping such as
    ``sweep.space`` or ``data.safe.options``) is one leaf. MLflow params and the check of sweep
    keys use it."""
    out: dict[str, Any] = {}
    dumped = section.model_dump(mode="json")
    for name, value in dumped.items():
        inner = getattr(section, name)
        if isinstance(inner, Section) and not inner.ONE_VALUE:
            out.update(flatten(inner, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out
