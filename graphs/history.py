"""Fitting a conversation into the planner's context window: the oldest turns go first.

The system prompt (which holds the case description) and the current turn are always kept;
earlier turns, each a question with its tool loop and answer, are left out from the oldest
until the estimate fits. Tokens are estimated from characters (the client has no tokenizer
for a remote model), at a rate the backend corrects once its server reports a real count.

    fitted = fit_history(system, messages, budget=6000, chars_per_token=4.0, image_tokens=196)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from surgagent.tools.errors import BackendError

__all__ = ["Fitted", "TurnTooLong", "fit_history", "message_chars"]


class TurnTooLong(BackendError):
    """The current turn alone does not fit the planner's context."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(
            f"this question and its tool results need about {needed:,} tokens, more than the "
            f"{budget:,} the planner's context leaves for them; ask a narrower question, look "
            "at fewer frames, or serve the model with a larger --max-model-len",
            retryable=False,
        )


class Fitted(NamedTuple):
    """What `fit_history` keeps."""

    messages: list[BaseMessage]  # system, the kept earlier turns, the current turn
    dropped: int  # earlier turns left out
    tokens: int  # the estimate for what is kept


def message_chars(message: BaseMessage) -> tuple[int, int]:
    """Characters of a message's text (with thinking and call arguments) and its images."""
    text = len(message.text)
    images = (
        0
        if isinstance(message.content, str)
        else len([p for p in message.content if isinstance(p, dict) and p.get("type") != "text"])
    )
    if isinstance(message, AIMessage):
        text += sum(len(str(value)) for value in message.additional_kwargs.values())
        calls = message.tool_calls
        text += sum(len(json.dumps(call["args"])) + len(call["name"]) for call in calls)
    return text + 16, images  # the template's role markers


def _tokens(messages: Sequence[BaseMessage], chars_per_token: float, image_tokens: int) -> int:
    total = 0.0
    for message in messages:
        text, images = message_chars(message)
        total += text / chars_per_token + images * image_tokens
    return int(total) + 1


def _turns(messages: Sequence[BaseMessage]) -> list[list[BaseMessage]]:
    """The conversation cut before each question."""
    turns: list[list[BaseMessage]] = [[]]
    for message in messages:
        if isinstance(message, HumanMessage) and turns[-1]:
            turns.append([])
        turns[-1].append(message)
    return turns


def fit_history(
    system: BaseMessage,
    messages: Sequence[BaseMessage],
    *,
    budget: int,
    chars_per_token: float,
    image_tokens: int,
    fixed_chars: int = 0,
) -> Fitted:
    """Keep ``system``, the current turn and as many of the latest earlier turns as fit.

    Args:
        system: The system message (kept whole).
        messages: The conversation after it; its last question starts the current turn.
        budget: Tokens the prompt may take (the context less the reply's reserve).
        chars_per_token: The estimate's rate.
        image_tokens: Tokens one image takes.
        fixed_chars: Characters sent besides the messages (the tool schemas).

    Raises:
        TurnTooLong: Even with every earlier turn left out, the estimate is over ``budget``.
    """
    *earlier, current = _turns(messages)
    fixed = _tokens([system, *current], chars_per_token, image_tokens)
    fixed += int(fixed_chars / chars_per_token)
    sizes = [_tokens(turn, chars_per_token, image_tokens) for turn in earlier]
    dropped = 0
    while dropped < len(earlier) and fixed + sum(sizes[dropped:]) > budget:
        dropped += 1
    tokens = fixed + sum(sizes[dropped:])
    if tokens > budget:
        raise TurnTooLong(tokens, budget)
    kept = [message for turn in earlier[dropped:] for message in turn]
    return Fitted([system, *kept, *current], dropped, tokens)
