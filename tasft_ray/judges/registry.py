"""Judges and refusal detectors by name, built with their options checked."""

from __future__ import annotations

import inspect
from typing import Any

from tasft_ray.judges.base import HarmJudge, JudgeError, check_threshold
from tasft_ray.judges.deberta import DebertaJudge
from tasft_ray.judges.guard import (
    LlamaGuardJudge,
    Qwen3GuardJudge,
    ShieldGemmaJudge,
    WildGuardJudge,
)
from tasft_ray.judges.moderation import OpenAIModerationJudge
from tasft_ray.judges.offline import OfflineJudge
from tasft_ray.judges.refusal import KeywordRefusalDetector, RefusalDetector

JUDGES: dict[str, type[HarmJudge]] = {
    "offline": OfflineJudge,
    "deberta": DebertaJudge,
    "openai-moderation": OpenAIModerationJudge,
    "llama-guard": LlamaGuardJudge,
    "qwen3guard": Qwen3GuardJudge,
    "wildguard": WildGuardJudge,
    "shieldgemma": ShieldGemmaJudge,
}
REFUSAL_DETECTORS: dict[str, type[RefusalDetector]] = {
    "keywords": KeywordRefusalDetector,
}


def _checked(
    kind: str, registry: dict[str, type[Any]], name: str, options: dict[str, Any]
) -> type[Any]:
    cls = registry.get(name)
    if cls is None:
        raise JudgeError(f"unknown {kind} '{name}' (known: {', '.join(registry)})")
    accepted = _options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise JudgeError(
            f"{kind} '{name}': unknown option(s) {', '.join(unknown)} "
            f"(options: {', '.join(accepted) or 'none'})"
        )
    return cls


def _options(cls: type) -> list[str]:
    """The keyword options of ``cls``, through the ``**options`` a subclass passes up."""
    accepted: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        accepted += [p.name for p in params
                     if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                     and p.name not in accepted]  # fmt: skip
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return accepted


def _build(kind: str, registry: dict[str, type[Any]], name: str, options: dict[str, Any]) -> Any:
    return _checked(kind, registry, name, options)(**options)


def check_judge(name: str, options: dict[str, Any], key: str) -> None:
    """What can be known about a judge without loading it, as one line naming ``key``: the
    name, the options, and the credentials it needs. Run before work starts; the judge itself
    loads later, inside a Ray actor."""
    try:
        cls = _checked("judge", JUDGES, name, options)
        if options.get("threshold") is not None:
            check_threshold(name, options["threshold"])
        cls.preflight(**options)
    except JudgeError as exc:
        raise JudgeError(f"{key}: {exc}") from None


def load_judge(name: str = "offline", **options: Any) -> HarmJudge:
    """Build a harm judge by name.

    Args:
        name: ``offline`` (default, no network), ``deberta``, ``openai-moderation``, or a
            guard model: ``llama-guard``, ``qwen3guard``, ``wildguard``, ``shieldgemma``.
        **options: Judge-specific options (``threshold`` for all; see each class).

    Returns:
        A :class:`HarmJudge`.

    Raises:
        JudgeError: Unknown name or option, or the judge cannot be set up (one line).
    """
    return _build("judge", JUDGES, name, options)


def load_refusal_detector(name: str = "keywords", **options: Any) -> RefusalDetector:
    """Build a refusal detector by name (only ``keywords`` for now; the registry leaves room).

    Raises:
        JudgeError: Unknown name or option (one line).
    """
    return _build("refusal detector", REFUSAL_DETECTORS, name, options)
