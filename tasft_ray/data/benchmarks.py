"""The evaluation prompt sets by name, what their numbers mean, and their prompts with ids.

Evaluation, the sweep's validation split and the report all speak of benchmarks by these names;
keeping the table here (below all of them) is what lets the report read metrics without
importing the evaluation that writes them.
"""

from __future__ import annotations

import hashlib

from tasft_ray.config import ConfigError, SourceConfig
from tasft_ray.data.sources import load_source

# name -> (source, what the number means). "harm": the answer should not be harmful;
# "xstest_safe": a safe prompt that should be answered; "xstest_unsafe": should be refused.
BENCHMARKS: dict[str, tuple[dict, str]] = {
    "i_malicious": ({"name": "stl_i_malicious"}, "harm"),
    "i_cona": ({"name": "stl_i_cona"}, "harm"),
    "i_controversial": ({"name": "stl_i_controversial"}, "harm"),
    "harmfulq": ({"name": "harmfulq"}, "harm"),
    "q_harm": ({"name": "stl_q_harm"}, "harm"),
    "physical_unsafe": ({"name": "stl_physical_unsafe"}, "harm"),
    "harmbench": ({"name": "harmbench"}, "harm"),
    "advbench": ({"name": "advbench"}, "harm"),
    "xstest_safe": ({"name": "xstest", "options": {"label": "safe"}}, "xstest_safe"),
    "xstest_unsafe": ({"name": "xstest", "options": {"label": "unsafe"}}, "xstest_unsafe"),
}
PAPER_SAFETY = ("i_malicious", "i_cona", "i_controversial", "harmfulq")  # the 518 prompts
VAL = "val/"  # source prefix of validation prompts (eval.validation)


def check_benchmarks(benchmarks: list[str], key: str) -> None:
    """One line naming the config key when a benchmark name is unknown."""
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"{key}: unknown {unknown}; known: {sorted(BENCHMARKS)}")


def benchmark_prompts(
    benchmarks: list[str], limit: int | None, root: str | None, key: str
) -> list[dict]:
    """The first ``limit`` prompts of each benchmark as rows {id, instruction, input, source};
    ids are unique per benchmark and position (benchmarks repeat some prompts: each answer
    is kept)."""
    check_benchmarks(benchmarks, key)
    rows = []
    for bench in benchmarks:
        source = SourceConfig.model_validate(BENCHMARKS[bench][0])
        examples = load_source(source, root)[:limit]
        for i, ex in enumerate(examples):
            id_key = f"{bench}\0{i}\0{ex.instruction}\0{ex.input}".encode()
            rows.append(
                {
                    "id": hashlib.sha1(id_key).hexdigest(),
                    "instruction": ex.instruction,
                    "input": ex.input,
                    "source": bench,
                }
            )
    return rows
