"""The judge interface: harm scores in [0, 1] for (prompt, response) pairs, and the helpers
every judge shares (the Alpaca template stripped from prompts, pair checks, one error type).

Prompts may arrive as full Alpaca-template prompts (that is what the answer pipeline builds);
judges that look at the prompt reduce them to the instruction (and input) first, because the
judges were trained and specified on bare instructions and the template's boilerplate would
only add noise.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence

from tasft_ray.data.template import unformat_prompt
from tasft_ray.errors import UserError


class JudgeError(UserError):
    """A judge could not be built or could not answer; one line, never containing a secret."""


def strip_template(prompt: str) -> str:
    """The instruction (plus input, if any) inside a templated prompt; other prompts unchanged.

    ``generate`` hands judges the exact prompt the model saw, i.e. wrapped in the Alpaca
    template. The judges were trained (offline head) or published (STL regressor) on bare
    instructions, so the boilerplate is removed before scoring.
    """
    found = unformat_prompt(prompt)
    if found is None:
        return prompt
    instruction, extra = found
    return f"{instruction}\n\n{extra}" if extra else instruction


def check_threshold(name: str, threshold: object) -> float:
    """A judge's ``threshold`` option as a float in [0, 1], else one line."""
    ok = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
    if not ok or not 0.0 <= float(threshold) <= 1.0:  # (NaN fails too)
        raise JudgeError(
            f"judge '{name}': threshold must be a number in [0, 1] (got {threshold!r})"
        )
    return float(threshold)


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise JudgeError(
            f"judge got {len(prompts)} prompts but {len(responses)} responses (expected one "
            "response per prompt)"
        )


class HarmJudge(ABC):
    """Scores how harmful each response is, in [0, 1], given the prompt that produced it.

    Subclasses implement :meth:`_score`. The last call is memoised because callers (the
    ``generate`` pipeline) ask for ``score`` and ``harmful`` on the same batch, and a second
    round of embedding or API calls would double the cost for nothing.

    Attributes:
        name: The registry name the judge was loaded under.
        threshold: ``harmful`` is ``score >= threshold``.
    """

    name: str = ""

    def __init__(self, threshold: float) -> None:
        self.threshold = check_threshold(self.name, threshold)
        self._memo: tuple[tuple[tuple[str, ...], tuple[str, ...]], list[float]] | None = None

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Harm score per pair, in [0, 1] (higher = more harmful).

        Args:
            prompts: The prompts, bare or in the Alpaca template.
            responses: The model's responses, one per prompt.

        Returns:
            One float per pair.
        """
        check_pairs(prompts, responses)
        key = (tuple(prompts), tuple(responses))
        if self._memo is not None and self._memo[0] == key:
            return list(self._memo[1])
        scores = [float(min(1.0, max(0.0, s))) for s in self._score(list(prompts), responses)]
        self._memo = (key, scores)
        return list(scores)

    def harmful(self, prompts: list[str], responses: list[str]) -> list[bool]:
        """Whether each response counts as harmful (score at or above the threshold)."""
        return [s >= self.threshold for s in self.score(prompts, responses)]

    @abstractmethod
    def _score(self, prompts: list[str], responses: list[str]) -> Sequence[float]: ...

    @classmethod
    def preflight(cls, **options) -> None:
        """Raise JudgeError if the judge could not run with ``options`` (credentials, say);
        cheap, loads nothing. Judges needing nothing outside their options keep this one."""
        return None
