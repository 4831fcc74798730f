"""One reader per upstream layout, each turning files into :class:`Example` records.

Every layout the project uses (Alpaca JSON, STL evaluation sets, XSTest, JailbreakBench
artifacts, HarmBench, red-instruct question lists, HH-RLHF dialogues, our own ``generate`` output
and the multiple-choice quality sets) gets exactly one reader in :data:`READERS`, so a data set's
quirks are handled in one place and everything downstream sees the same record type. Row-shaped
formats also have a row converter (:data:`ROW_CONVERTERS`) that hub rows go through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tasft_ray.data.choice_sets import read_boolq, read_openbookqa, read_piqa
from tasft_ray.data.records import (
    CANONICAL_FIELDS,
    DataError,
    Example,
    check_fields,
    check_option,
    flag_field,
    iter_records,
    load_json,
    read_csv,
    require_object,
    text_field,
    type_name,
)
from tasft_ray.data.template import unformat_prompt

logger = logging.getLogger(__name__)

# Formats whose reader takes a whole folder; a multi-file registry entry is read in one call so
# that cross-file de-duplication sees every file.
FOLDER_FORMATS = frozenset({"jbb", "piqa"})
XSTEST_LABELS = ("safe", "unsafe")

Reader = Callable[..., list[Example]]
RowConverter = Callable[..., "Example | None"]


# --------------------------------------------------------------------------- row converters
# A row converter maps one record (a JSON object, a CSV row, a hub row) to an Example, or None
# when an option filters it out. Readers and the Hugging Face path share them.


def _alpaca_row(rec: Mapping[str, Any], where: str, fields: Mapping[str, str]) -> Example:
    return Example(
        instruction=text_field(rec, where, fields, "instruction", "instruction", nonempty=True),
        input=text_field(rec, where, fields, "input", "input", required=False),
        output=text_field(rec, where, fields, "output", "output"),
    )


def prompt_row(rec: Mapping[str, Any], where: str, fields: Mapping[str, str]) -> Example:
    return Example(
        instruction=text_field(rec, where, fields, "instruction", "instruction", nonempty=True),
        input=text_field(rec, where, fields, "input", "input", required=False),
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
        instruction=text_field(rec, where, fields, "instruction", "prompt", nonempty=True),
        output=text_field(rec, where, fields, "output", "completion") if has_output else None,
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
        instruction=text_field(rec, where, fields, "instruction", "Behavior", nonempty=True),
        input=text_field(rec, where, fields, "input", "ContextString", required=False),
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
        text_field(rec, where, fields, "output", "rejected"), where, col
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
    if harmful_only and not flag_field(rec, where, "harmful", "needed by harmful_only"):
        return None
    # generate writes instruction and input, and the templated prompt the model saw; files
    # with only a prompt column give their instruction back untemplated
    default = "instruction" if "instruction" in rec else "prompt"
    cols = {fields.get("instruction", default), fields.get("output", "response"), "prompt"}
    cols.add(fields.get("input", "input"))
    instruction = text_field(rec, where, fields, "instruction", default, nonempty=True)
    input_text = text_field(rec, where, fields, "input", "input", required=False)
    if "instruction" not in fields and default == "prompt":
        instruction, input_text = unformat_prompt(instruction) or (instruction, input_text)
    return Example(
        instruction=instruction,
        input=input_text,
        output=text_field(rec, where, fields, "output", "response"),
        meta={k: v for k, v in rec.items() if k not in cols},
    )


def _jbb_row(
    rec: Mapping[str, Any], where: str, fields: Mapping[str, str], jailbroken: bool | None = True
) -> Example | None:
    """Skips attacks whose response is null or empty: there is nothing to learn from them."""
    flag = flag_field(rec, where, "jailbroken", "JailbreakBench artifact record")
    if jailbroken is not None and flag is not jailbroken:
        return None
    response = rec.get(fields.get("output", "response"))
    if response is None or (isinstance(response, str) and not response.strip()):
        return None
    meta = {"jailbroken": flag}
    if rec.get("category"):
        meta["category"] = rec["category"]
    return Example(
        instruction=text_field(rec, where, fields, "instruction", "goal", nonempty=True),
        output=text_field(rec, where, fields, "output", "response"),
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
    "csv": CANONICAL_FIELDS,
}


def convert_all(
    rows: Iterable[tuple[str, Any]],
    convert: RowConverter,
    fields: Mapping[str, str],
    **options: Any,
) -> list[Example]:
    out = []
    for where, rec in rows:
        example = convert(require_object(where, rec), where, fields, **options)
        if example is not None:
            out.append(example)
    return out


# --------------------------------------------------------------------------- readers


def read_alpaca(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """Alpaca records ``{instruction, input?, output}`` as a JSON array or JSON lines."""
    check_fields(fields, path, FORMAT_FIELDS["alpaca"])
    return convert_all(iter_records(path), _alpaca_row, fields)


def read_stl_eval(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """STL evaluation file ``{"instructions": [...], "inputs": [...], "tags"?: [...]}``.

    ``inputs`` is empty in every shipped file; when present it must align with instructions.
    """
    check_fields(fields, path, FORMAT_FIELDS["stl_eval"])
    data = load_json(path)
    if not isinstance(data, Mapping):
        raise DataError(
            f"{path}: expected an object with an 'instructions' list (got {type_name(data)})"
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
                raise DataError(f"{path}: {col}[{i}] must be a string (got {type_name(value)})")
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
        raise DataError(f"{path}: field '{col}' must be a list (got {type_name(value)})")
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
    check_fields(fields, path, FORMAT_FIELDS["xstest"])
    if label is not None:
        check_option(path, "label", label, (*XSTEST_LABELS, None))
    rows = read_csv(path, [fields.get("instruction", "prompt")])
    header = rows[0][1].keys() if rows else ()
    is_completions = "final_label" in header and fields.get("output", "completion") in header
    examples = convert_all(rows, _xstest_row, fields, label=label, with_output=is_completions)
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
    check_fields(fields, path, FORMAT_FIELDS["jbb"])
    check_option(path, "jailbroken", jailbroken, (True, False, None))
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
    data = load_json(file)
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
    examples = convert_all(rows, _jbb_row, fields, jailbroken=jailbroken)
    return [replace(e, meta=(*e.meta, *extra)) for e in examples]


def _csv_row(rec: Mapping[str, Any], where: str, fields: Mapping[str, str]) -> Example:
    """A row of any CSV: its instruction column (renamed by ``fields``), input and output when
    the file has those columns; every other column kept in meta."""
    used = {fields.get(k, k) for k in CANONICAL_FIELDS}
    output_col = fields.get("output", "output")
    return Example(
        instruction=text_field(rec, where, fields, "instruction", "instruction", nonempty=True),
        input=text_field(rec, where, fields, "input", "input", required=False),
        output=rec[output_col] if output_col in rec else None,
        meta={k: v for k, v in rec.items() if k not in used},
    )


ROW_CONVERTERS["csv"] = _csv_row  # hub rows of a CSV-shaped dataset convert the same way


def read_csv_rows(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """A CSV of prompts (or pairs) with a header row; ``fields`` maps instruction / input /
    output to its columns, e.g. {instruction: forbidden_prompt}."""
    check_fields(fields, path, FORMAT_FIELDS["csv"])
    rows = read_csv(path, [fields.get("instruction", "instruction")])
    return convert_all(rows, _csv_row, fields)


def read_harmbench(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """HarmBench / AdvBench behaviour CSV; a non-empty ContextString becomes the input."""
    check_fields(fields, path, FORMAT_FIELDS["harmbench"])
    rows = read_csv(path, [fields.get("instruction", "Behavior")])
    return convert_all(rows, _harmbench_row, fields)


def read_red_instruct(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """red-instruct question files: a list of questions, or topic -> subtopic -> [questions].

    Nested files are flattened in file order with topic/subtopic kept in meta. List items may
    also be objects with an instruction field (e.g. the refusal-direction splits).
    """
    check_fields(fields, path, FORMAT_FIELDS["red_instruct"])
    data = load_json(path)
    if isinstance(data, list):
        return [_question(item, f"{path}: record {i}", fields, {}) for i, item in enumerate(data)]
    if not isinstance(data, Mapping):
        raise DataError(
            f"{path}: expected a list of questions or an object of topics (got {type_name(data)})"
        )
    out = []
    for topic, subtopics in data.items():
        if not isinstance(subtopics, Mapping):
            raise DataError(
                f"{path}: topic '{topic}': expected an object of subtopic -> [questions] "
                f"(got {type_name(subtopics)})"
            )
        for subtopic, questions in subtopics.items():
            where = f"{path}: topic '{topic}' / '{subtopic}'"
            if not isinstance(questions, list):
                raise DataError(
                    f"{where}: expected a list of questions (got {type_name(questions)})"
                )
            meta = {"topic": topic, "subtopic": subtopic}
            out.extend(
                _question(q, f"{where} item {j}", fields, meta) for j, q in enumerate(questions)
            )
    return out


def _question(item: Any, where: str, fields: Mapping[str, str], meta: Mapping[str, str]) -> Example:
    if isinstance(item, Mapping):
        example = prompt_row(item, where, fields)
        return replace(example, meta=(*example.meta, *meta.items()))
    if not isinstance(item, str):
        raise DataError(f"{where}: expected a question string (got {type_name(item)})")
    if not item.strip():
        raise DataError(f"{where}: empty question (expected non-empty text)")
    return Example(instruction=item, meta=meta)


def read_hh_rlhf(path: Path, fields: Mapping[str, str]) -> list[Example]:
    """Anthropic HH-RLHF JSON lines ``{chosen, rejected}``.

    instruction = the last Human turn, output = the final Assistant reply of ``rejected`` (the
    less harmless one; map ``output: chosen`` to train on the preferred reply), meta holds the
    other dialogue's final reply and the human-turn count. Earlier turns are dropped.
    """
    check_fields(fields, path, FORMAT_FIELDS["hh_rlhf"])
    return convert_all(iter_records(path), _hh_row, fields)


def read_generated(
    path: Path, fields: Mapping[str, str], harmful_only: bool = True
) -> list[Example]:
    """Rows written by ``generate``: prompt/response plus judge fields (kept in meta).

    ``harmful_only`` defaults to True because these files feed the harmful (penalised) set; a
    row without a boolean ``harmful`` field is then an error rather than a silent keep or drop.
    """
    check_fields(fields, path, FORMAT_FIELDS["generated"])
    check_option(path, "harmful_only", harmful_only, (True, False))
    return convert_all(iter_records(path), _generated_row, fields, harmful_only=harmful_only)


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
    "csv": read_csv_rows,
}
