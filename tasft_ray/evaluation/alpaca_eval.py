"""AlpacaEval win rate: the model's answers vs reference outputs, judged pairwise by an LLM.

The optional quality plug-in of `tasft-ray evaluate` (Table 1's helpfulness column). The first
``max_instructions`` of AlpacaEval's 805 instructions are answered greedily; an OpenAI-compatible
chat model is asked which of two outputs is better, with the model's output shown as (a) or (b)
by a seeded coin so position bias cancels. Win rate = wins / n, an unparseable verdict counts as
half a win (and is reported). Without ``eval.alpaca_eval.judge_model`` it is skipped with a
message: there is no offline judge good enough to call this AlpacaEval.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

from tasft_ray.config import AlpacaEvalConfig, ConfigError, SamplingConfig, SourceConfig
from tasft_ray.data.records import Example
from tasft_ray.data.sources import load_source
from tasft_ray.errors import UserError
from tasft_ray.inference.generator import generate_responses

log = logging.getLogger(__name__)

SYSTEM = "You compare two responses to an instruction and say which one is better."
TEMPLATE = """Which output follows the instruction better: more helpful, more accurate, and more \
relevant? Ignore their order and length.

### Instruction:
{instruction}

### Output (a):
{a}

### Output (b):
{b}

### Answer with a single letter, a or b."""


class AlpacaEvalError(UserError):
    """The judge endpoint failed (HTTP error, unreachable): one line, key never shown."""


@dataclass
class Verdict:
    instruction: str
    output: str
    reference: str
    model_is_a: bool
    answer: str  # the judge's raw first letter ("a", "b" or other)

    @property
    def win(self) -> float:
        picked = {"a": True, "b": False}.get(self.answer)
        return 0.5 if picked is None else float(picked == self.model_is_a)


def check_judge_model(base_url: str | None) -> None:
    """The AlpacaEval judge's credentials, checked before any work (it runs last)."""
    if not os.environ.get("OPENAI_API_KEY", "").strip() and base_url is None:
        raise ConfigError(
            "eval.alpaca_eval.judge_model needs the OPENAI_API_KEY environment variable "
            "(or eval.alpaca_eval.base_url for a local OpenAI-compatible server)"
        )


class PairwiseJudge:
    """One chat completion per pair (temperature 0, one token); the client retries 429/5xx."""

    def __init__(self, model: str, base_url: str | None = None, max_retries: int = 5):
        import openai

        check_judge_model(base_url)
        key = os.environ.get("OPENAI_API_KEY", "")
        self._openai = openai
        self.model = model
        self.client = openai.OpenAI(
            api_key=key or "unused", base_url=base_url, max_retries=max_retries
        )

    def answer(self, instruction: str, a: str, b: str) -> str:
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": TEMPLATE.format(instruction=instruction, a=a, b=b)},
                ],
                max_tokens=1,
                temperature=0,
            )
        except self._openai.APIStatusError as exc:
            raise AlpacaEvalError(
                f"eval.alpaca_eval: HTTP {exc.status_code} from {self.client.base_url}"
            ) from None
        except self._openai.APIConnectionError:
            raise AlpacaEvalError(
                f"eval.alpaca_eval: cannot reach {self.client.base_url}"
            ) from None
        return (reply.choices[0].message.content or "").strip().lower()[:1]

    def judge(
        self, instructions: list[str], outputs: list[str], references: list[str], seed: int
    ) -> list[Verdict]:
        rng = random.Random(seed)
        verdicts = []
        for instruction, output, reference in zip(instructions, outputs, references, strict=True):
            model_is_a = rng.random() < 0.5
            a, b = (output, reference) if model_is_a else (reference, output)
            verdicts.append(
                Verdict(instruction, output, reference, model_is_a, self.answer(instruction, a, b))
            )
        return verdicts


def reference_outputs(a: AlpacaEvalConfig, root: str | None) -> list[Example]:
    """The first ``max_instructions`` AlpacaEval instructions with their reference outputs."""
    return load_source(SourceConfig(name=a.reference), root)[: a.max_instructions]


def win_rate(
    a: AlpacaEvalConfig,
    model,
    tokenizer,
    root: str | None,
    batch_size: int = 8,
    refs: list[Example] | None = None,
) -> tuple[dict[str, float], list[Verdict]]:
    """alpaca_eval/{win_rate, n, unparsed} of the in-memory model, or ({}, []) when skipped."""
    if not a.judge_model:
        log.info(
            "AlpacaEval skipped: set eval.alpaca_eval.judge_model (an OpenAI-compatible chat "
            "model) to compute the win rate"
        )
        return {}, []
    from tqdm.auto import tqdm

    judge = PairwiseJudge(a.judge_model, a.base_url)
    refs = reference_outputs(a, root) if refs is None else refs
    sampling = SamplingConfig(do_sample=False, max_new_tokens=a.max_new_tokens)
    outputs: list[str] = []
    for i in tqdm(range(0, len(refs), batch_size), desc="alpaca_eval", unit="batch"):
        part = refs[i : i + batch_size]
        instr, inputs = [r.instruction for r in part], [r.input for r in part]
        outputs += generate_responses(model, tokenizer, instr, inputs, sampling)
    verdicts = judge.judge(
        [r.instruction for r in refs], outputs, [r.output or "" for r in refs], a.seed
    )
    n = len(verdicts)
    metrics = {
        "alpaca_eval/n": n,
        "alpaca_eval/win_rate": sum(v.win for v in verdicts) / n if n else 0.0,
        "alpaca_eval/unparsed": sum(v.answer not in ("a", "b") for v in verdicts),
    }
    return metrics, verdicts
