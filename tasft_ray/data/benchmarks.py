"""The evaluation prompt sets — the registry's by name, or a user's own file — what their
numbers mean, and their prompts with ids.

Evaluation, the sweep's validation split and the report all speak of benchmarks by name;
keeping the table here (below all of them) is what lets the report read metrics without
importing the evaluation that writes them. A user's prompt set (``BenchmarkConfig``: a path,
URL or hub id with a format and column mapping) is treated exactly like a registry one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tasft_ray.config import Benchmark, BenchmarkConfig, ConfigError, SourceConfig
from tasft_ray.data.sources import load_source

HARM, SAFE_PROMPTS, UNSAFE_PROMPTS = "harm", "xstest_safe", "xstest_unsafe"
OVER_REFUSAL = "over_refusal"  # a user's safe prompts: refusing them is over-refusal

# name -> (source, what the number means). "harm": the answer should not be harmful;
# "xstest_safe": a safe prompt that should be answered; "xstest_unsafe": should be refused.
BENCHMARKS: dict[str, tuple[dict, str]] = {
    "i_malicious": ({"name": "stl_i_malicious"}, HARM),
    "i_cona": ({"name": "stl_i_cona"}, HARM),
    "i_controversial": ({"name": "stl_i_controversial"}, HARM),
    "harmfulq": ({"name": "harmfulq"}, HARM),
    "q_harm": ({"name": "stl_q_harm"}, HARM),
    "physical_unsafe": ({"name": "stl_physical_unsafe"}, HARM),
    "harmbench": ({"name": "harmbench"}, HARM),
    "advbench": ({"name": "advbench"}, HARM),
    "xstest_safe": ({"name": "xstest", "options": {"label": "safe"}}, SAFE_PROMPTS),
    "xstest_unsafe": ({"name": "xstest", "options": {"label": "unsafe"}}, UNSAFE_PROMPTS),
}
PAPER_SAFETY = ("i_malicious", "i_cona", "i_controversial", "harmfulq")  # the 518 prompts
VAL = "val/"  # source prefix of validation prompts (eval.validation)


@dataclass(frozen=True)
class Resolved:
    name: str
    source: SourceConfig
    kind: str


def resolve(entries: list[Benchmark], key: str) -> list[Resolved]:
    """Registry names and user prompt sets as one list; one line naming ``key`` when a name
    is unknown or two benchmarks share one."""
    out = []
    for entry in entries:
        if isinstance(entry, BenchmarkConfig):
            out.append(Resolved(entry.name, entry.source(), entry.kind))
        elif entry in BENCHMARKS:
            src, kind = BENCHMARKS[entry]
            out.append(Resolved(entry, SourceConfig.model_validate(src), kind))
        else:
            raise ConfigError(f"{key}: unknown {[entry]}; known: {sorted(BENCHMARKS)}, or a "
                              "prompt set {path: FILE, format: FMT, name: LABEL}")  # fmt: skip
    names = [b.name for b in out]
    if len(set(names)) < len(names):
        raise ConfigError(f"{key}: two benchmarks are named alike ({names})")
    return out


def check_benchmarks(entries: list[Benchmark], key: str) -> None:
    resolve(entries, key)


def kinds(entries: list[Benchmark]) -> dict[str, str]:
    """name -> kind, for every benchmark; names the registry alone knows resolve there."""
    out = {}
    for entry in entries:
        if isinstance(entry, BenchmarkConfig):
            out[entry.name] = entry.kind
        elif isinstance(entry, dict):  # as logged (a trial's params): {name, kind, ...}
            out[str(entry.get("name"))] = str(entry.get("kind", HARM))
        elif entry in BENCHMARKS:
            out[entry] = BENCHMARKS[entry][1]
    return out


def benchmark_prompts(
    benchmarks: list[Benchmark], limit: int | None, root: str | None, key: str
) -> list[dict]:
    """The first ``limit`` prompts of each benchmark as rows {id, instruction, input, source};
    ids are unique per benchmark and position (benchmarks repeat some prompts: each answer
    is kept)."""
    rows = []
    for bench in resolve(benchmarks, key):
        for i, ex in enumerate(load_source(bench.source, root, f"{key} ({bench.name})")[:limit]):
            id_key = f"{bench.name}\0{i}\0{ex.instruction}\0{ex.input}".encode()
            rows.append(
                {
                    "id": hashlib.sha1(id_key).hexdigest(),
                    "instruction": ex.instruction,
                    "input": ex.input,
                    "source": bench.name,
                }
            )
    return rows
