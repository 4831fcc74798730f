"""Configs from YAML: a file (a path, or a bare name in ``configs/``) or text from an object
store, plus dotted ``--set a.b=v`` overrides whose values are parsed as YAML."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tasft_ray.config.base import ConfigError
from tasft_ray.config.overrides import set_dotted
from tasft_ray.config.root import Config, validate

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = "quickstart"


def resolve_config_path(spec: str | os.PathLike | None) -> Path:
    """A path, or a bare name looked up in configs/ ('tiny' -> configs/tiny.yaml)."""
    if spec is None:
        spec = DEFAULT_CONFIG
    path = Path(spec)
    if path.exists():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{spec}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file not found: {spec} (looked in . and {CONFIG_DIR})")


def load_config(
    spec: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read YAML, apply ``a.b=value`` overrides (values parsed as YAML), validate."""
    path = resolve_config_path(spec)
    return parse_config(path.read_text(), str(path), overrides)


def parse_config(text: str, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """YAML text (from a file or an object store, named ``origin`` in errors) + overrides."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{origin}:{where} invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections at the top level")
    given: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected key=value, e.g. loss.lam=2.0")
        set_dotted(raw, key.strip(), yaml.safe_load(value), origin=f"override '{item}'")
        given[key.strip()] = f"override '{item}'"
    return validate(raw, origin=origin, given=given)
