"""The rules an SFT or DPO row must follow to train, and the tally of the rows that break one.

A conversation uses the roles its chat template renders (system, user, assistant, and tool when the template
names it), in the order chat templates expect: an optional system turn first, then user and assistant in
turn, starting with the user (tool results only after an assistant turn, answered by the assistant); every
assistant turn says something. The template itself must render the row (some raise on what they refuse).
Each broken rule is counted per dataset; above `<stage>.max_error_rate` the stage stops with one line naming
the first bad row (file:line) and the counts; below it the rows are dropped and the counts logged.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.errors import DataError
from factory.records import source_position

if TYPE_CHECKING:  # for annotations only
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
BASE_ROLES = ("system", "user", "assistant")
FOLLOWS = {"system": ("user",), "user": ("assistant",), "assistant": ("user", "tool"), "tool": ("tool", "assistant")}
"""Which roles may come after each role."""
_TOOL = re.compile(r"""['"]tool['"]""")


class RowError(Exception):
    """Why one row cannot train: `rule` is the count's name, `why` the message."""

    def __init__(self, rule: str, why: str):
        super().__init__(why)
        self.rule, self.why = rule, why


def template_roles(chat_template: str | None) -> tuple[str, ...]:
    """The roles a chat template renders: system, user and assistant, and tool when the template names it."""
    return BASE_ROLES + (("tool",) if chat_template and _TOOL.search(chat_template) else ())


def check_conversation(messages: list[dict[str, str]], roles: tuple[str, ...]) -> None:
    """RowError for the first rule `messages` breaks (roles, order, an assistant turn that says nothing)."""
    for i, m in enumerate(messages):
        if m["role"] not in roles:
            raise RowError("role", f"message {i}: role {m['role']!r} is not one of {', '.join(roles)}")
    previous = None
    for i, m in enumerate(messages):
        allowed = ("system", "user") if previous is None else FOLLOWS[previous]
        if m["role"] not in allowed:
            after = f"after a {previous} turn" if previous else "as the first turn"
            raise RowError("order", f"message {i}: {m['role']} {after} (expected {' or '.join(allowed)})")
        previous = m["role"]
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("no_assistant", "no assistant turn (nothing to train on)")
    empty = next((i for i, m in enumerate(messages) if m["role"] == "assistant" and not m["content"].strip()), None)
    if empty is not None:
        raise RowError("empty_assistant", f"message {empty}: empty assistant turn (nothing to train on)")


@dataclass
class RowTally:
    """Rows of one dataset and those that broke a rule, by rule; the first bad one is named."""

    path: Path
    stage: str
    max_error_rate: float
    total: int = 0
    rejected: Counter = field(default_factory=Counter)
    first: str = ""
    _first_at: int = 0

    def reject(self, source: str, error: RowError) -> None:
        """Count `error`; the first bad row in file order is the one a message names."""
        self.rejected[error.rule] += 1
        if not self.first or source_position(source) < self._first_at:
            self.first, self._first_at = f"{source}: {error.why}", source_position(source)

    def counts(self) -> str:
        return ", ".join(f"{rule} {n}" for rule, n in sorted(self.rejected.items()))

    def check(self) -> None:
        """DataError above the rate; a warning with the counts below it."""
        bad = sum(self.rejected.values())
        if not bad:
            return
        rate = bad / self.total
        if rate > self.max_error_rate:
            raise DataError(f"{self.path}: {bad} of {self.total} rows break a rule ({self.counts()}; {rate:.1%} > "
                            f"{self.stage}.max_error_rate {self.max_error_rate:.1%}); first: {self.first}")
        log.warning("%s: %s: dropped %d of %d rows that break a rule (%s); first: %s", self.stage, self.path, bad,
                    self.total, self.counts(), self.first)


def token_length(tok: PreTrainedTokenizerBase, row: dict[str, Any]) -> int:
    """Tokens of the longest sequence TRL builds from a normalized row (a conversation, or prompt + chosen /
    rejected); RowError('template') when the chat template refuses the row."""
    from jinja2 import TemplateError

    try:
        if "messages" in row:
            return _encoded(tok, row["messages"])
        return max(_encoded(tok, row["prompt"], row[answer]) for answer in ("chosen", "rejected"))
    except (TemplateError, ValueError) as e:
        raise RowError("template", f"the chat template refuses the row ({str(e).splitlines()[0]})") from None


def _encoded(tok, prompt: Any, answer: Any = None) -> int:
    if isinstance(prompt, str):  # a plain preference pair, tokenized as TRL does: EOS after the answer
        eos = tok.eos_token or ""
        return len(tok(text=prompt + answer + ("" if answer.endswith(eos) else eos))["input_ids"])
    messages = prompt + (answer or [])
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def check_lengths(path: Path, lengths: list[int], max_length: int, stage: str) -> None:
    """DataError when no row of a dataset fits `max_length` (TRL would train on none of it whole and fail
    with "num_samples=0" when every row's trained tokens are cut); the rows over it are counted and logged."""
    over = sum(n > max_length for n in lengths)
    if lengths and over == len(lengths):
        raise DataError(f"{path}: every row is longer than {stage}.max_length={max_length} tokens (the shortest "
                        f"has {min(lengths)}); raise max_length or shorten the rows")
    if over:
        log.warning("%s: %s: %d of %d rows are longer than max_length=%d tokens and are cut to it (the longest has "
                    "%d)", stage, path, over, len(lengths), max_length, max(lengths))
