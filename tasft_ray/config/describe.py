"""Pydantic's validation errors as the lines a user reads: the dotted key, what was expected and
what was given; an unknown key with the key it was probably meant to be; a union (a benchmark
name or a prompt set) reported for the branch the input was written for."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

UNION_STR = "str"  # the tag pydantic puts in a location inside the `str` branch of a union
SECTION_TYPES = ("model_type", "model_attributes_type", "dict_type")


def describe(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """(dotted key, its line) for each problem; the line starts with the key."""
    errors = exc.errors()
    str_branches = {_loc(e["loc"]) for e in errors if UNION_STR in e["loc"]}
    out = []
    for err in errors:
        loc, value = _loc(err["loc"]), err.get("input")
        if UNION_STR in err["loc"] and isinstance(value, dict):
            continue  # a mapping was meant for the other branch, whose errors say what is wrong
        if loc in str_branches and UNION_STR not in err["loc"] and not isinstance(value, dict):
            continue  # a value was meant for the str branch
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(loc, root)
        elif err["type"] in SECTION_TYPES and value is None:
            msg = "empty; give its keys (key: value) below it, or delete the line"
        elif err["type"] in SECTION_TYPES:
            msg = f"expected a mapping of keys (key: value), not a value (got {value!r})"
        elif err["type"] == "string_type" and isinstance(value, int | float | bool):
            kind = "boolean" if isinstance(value, bool) else "number"
            msg += f" (got {value!r}: YAML reads that as a {kind}; quote it)"
        elif "input" in err and not isinstance(value, dict) and err["type"] != "missing":
            msg += f" (got {value!r})"
        out.append((loc, msg if loc and msg.startswith(f"{loc}") else _join(loc, msg)))
    return out


def _join(loc: str, msg: str) -> str:
    return f"{loc}: {msg}" if loc else msg


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts if not str(p).startswith("function-") and p != UNION_STR)


# what other trainers call a key of ours
ALIASES = {
    "learning_rate": "train.lr",
    "batch_size": "train.micro_batch_size",
    "per_device_train_batch_size": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "num_train_epochs": "train.epochs",
    "lambda": "loss.lam",
    "lora_r": "lora.r",
    "rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
}


def _did_you_mean(loc: str, root: type[BaseModel]) -> str:
    """' (did you mean loss.lam?)': what other trainers call it, the same key in another
    section, else a close spelling."""
    *parent, name = loc.split(".")
    keys = _keys(root)
    alias = ALIASES.get(name, "")
    if alias and alias.rpartition(".")[0] == ".".join(parent):
        return f" (did you mean {alias}?)"
    elsewhere = sorted(k for k in keys if k.rsplit(".", 1)[-1] == name and k != loc)
    if elsewhere or alias:
        return f" (did you mean {' or '.join(elsewhere[:2]) or alias}?)"
    prefix = ".".join(parent)
    siblings = [k.rsplit(".", 1)[-1] for k in keys if k.rpartition(".")[0] == prefix]
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    return f" (did you mean {'.'.join([*parent, close[0]])}?)" if close else ""


def _keys(model: type[BaseModel], prefix: str = "", within: tuple[type, ...] = ()) -> list[str]:
    """Every dotted key of the config's sections (not inside lists or free-form mappings; a
    section inside itself, such as a source's fallback, once)."""
    out = []
    for name, field in model.model_fields.items():
        out.append(f"{prefix}{name}")
        inner = _section(field.annotation)
        if inner is not None and inner not in (*within, model):
            out += _keys(inner, f"{prefix}{name}.", (*within, model))
    return out


def _section(annotation: Any) -> type[BaseModel] | None:
    """The section class of a field (``X``, ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_section(a) for a in typing.get_args(annotation)]
        return next((f for f in found if f is not None), None)
    return None
