"""Prompt templates that wrap an instruction (and optional input) before the response.

The paper trains and evaluates with the Stanford Alpaca / Safety-Tuned LLaMAs template
(appendix A.1). Training and generation must use byte-identical prompts, otherwise the response
boundary the loss masks on and the prompt the model is evaluated with drift apart; keeping the
strings in one module is what guarantees that.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

# name -> (template used when there is an input, template used without one)
TEMPLATES: dict[str, tuple[str, str]] = {"alpaca": (ALPACA_WITH_INPUT, ALPACA_NO_INPUT)}


def format_prompt(instruction: str, input: str = "", template: str = "alpaca") -> str:
    """Build the model prompt; the response is appended by the caller.

    An input made only of whitespace counts as no input: an empty ``### Input:`` section would
    only teach the model a format the paper never uses.

    Args:
        instruction: The task text.
        input: Optional context; empty selects the shorter no-input template.
        template: Template name (only ``"alpaca"`` exists).

    Returns:
        The full prompt, ending with ``"### Response:\\n"``.

    Raises:
        ValueError: If ``template`` is not a known template name.
    """
    try:
        with_input, without_input = TEMPLATES[template]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise ValueError(f"unknown prompt template '{template}' (known: {known})") from None
    if input.strip():
        return with_input.format(instruction=instruction, input=input)
    return without_input.format(instruction=instruction)


def _template_patterns() -> list[re.Pattern[str]]:
    """Regexes that recover instruction/input from every template's prompts."""
    patterns = []
    for with_input, without_input in TEMPLATES.values():
        for template in (with_input, without_input):
            parts = re.split(r"\{(instruction|input)\}", template)
            regex = ""
            for i, part in enumerate(parts):
                regex += f"(?P<{part}>.*?)" if i % 2 else re.escape(part)
            patterns.append(re.compile(regex + r"\s*\Z", re.DOTALL))
    return patterns


_TEMPLATE_PATTERNS = _template_patterns()


def unformat_prompt(prompt: str) -> tuple[str, str] | None:
    """(instruction, input) of a prompt built by :func:`format_prompt`; None for any other
    text. Files of answered prompts keep the exact prompt the model saw; what is read back
    for training or judging is the instruction, templated again where needed."""
    for pattern in _TEMPLATE_PATTERNS:
        match = pattern.match(prompt)
        if match:
            found = match.groupdict()
            return found["instruction"].strip(), (found.get("input") or "").strip()
    return None
