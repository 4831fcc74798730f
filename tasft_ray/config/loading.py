"""Configs from YAML: a file (a path, or a bare name in ``configs/``) or text from an object
store, plus dotted ``--set a.b=v`` overrides whose values are parsed as YAML.

Whatever a file holds, a problem is one :class:`ConfigError` line naming it: a folder, an
unreadable or non-text file, invalid YAML, an empty file, a key given twice (PyYAML would keep
the last one silently), anything but a mapping of sections at the top."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tasft_ray.config.base import ConfigError
from tasft_ray.config.overrides import set_dotted
from tasft_ray.config.root import Config, validate

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = "quickstart"
SECTIONS = ", ".join(Config.model_fields)


def resolve_config_path(spec: str | os.PathLike | None) -> Path:
    """A path, or a bare name looked up in configs/ ('tiny' -> configs/tiny.yaml)."""
    if spec is None:
        spec = DEFAULT_CONFIG
    path = Path(spec)
    for candidate in (path, CONFIG_DIR / path, CONFIG_DIR / f"{spec}.yaml"):
        if candidate.is_file():
            return candidate
    if path.is_dir():
        raise ConfigError(f"--config {spec}: is a folder, expected a YAML file")
    raise ConfigError(f"config file not found: {spec} (looked in . and {CONFIG_DIR})")


def load_config(
    spec: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read YAML, apply ``a.b=value`` overrides (values parsed as YAML), validate."""
    path = resolve_config_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML file (not UTF-8 text: {exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_config(text, str(path), overrides)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                again = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if again:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str, origin: str) -> Any:
    """``text`` parsed; one line naming ``origin`` (and the line) when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark and text.count("\n") else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}:{where} invalid YAML ({problem})") from None


def parse_config(text: str, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """YAML text (from a file or an object store, named ``origin`` in errors) + overrides."""
    raw = _yaml(text, origin)
    if raw is None:
        raise ConfigError(f"{origin}: empty; expected a mapping of sections ({SECTIONS})")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{origin}: expected a mapping of sections ({SECTIONS}) at the top level, "
            f"not a {_kind(raw)}"
        )
    given: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        where = f"override '{item}'"
        if not sep or not key:
            raise ConfigError(f"{where}: expected key=value, e.g. loss.lam=2.0")
        if "" in key.split("."):
            raise ConfigError(f"{where}: '{key}' has an empty part; expected a dotted key, "
                              "e.g. loss.lam")  # fmt: skip
        set_dotted(raw, key, _yaml(value, where), origin=where)
        given[key] = where
    return validate(raw, origin=origin, given=given)


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
