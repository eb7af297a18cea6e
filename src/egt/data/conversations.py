"""Conversation-style prompts and responses -> the plain text of an egt pair (THE rule, used by every reader).

    from egt.data.conversations import response_text, prompt_text
    response_text([{"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}], file, line, "chosen")
    prompt_text([{"from": "human", "value": "<image>\\nWhat is it?"}], file, line, "question")

Sources give a prompt or a response either as a string or as a list of chat turns:
LLaVA `conversations` (`{"from": "human"|"gpt", "value": str}`: POVID, UnifiedReward), OpenAI / TRL
messages (`{"role": "user"|"assistant", "content": str | [{"type": "text", "text": ...},
{"type": "image"}]}`: TRL's conversational preference sets), or one such turn alone. The rule:

- roles: `human`/`user` are the user; `gpt`/`assistant`/`model`/`bot` the assistant; `system` turns
  are kept apart (`Conversation.system`), never in the question or the response.
- a turn's text: `value`, or `content` when it is a string, or the `text` parts of a `content`
  list joined by a newline; `{"type": "image"|"video"|"image_url"}` parts are image slots: they are
  counted (`Conversation.image_slots`), never written into the text (the images are the pair's
  `images` list, in list order).
- a response is the assistant turns after the LAST user turn, joined by a blank line (in the usual
  alternating chat: the last assistant turn). A list without any assistant turn is an error.
- the prompt is the last user turn. Earlier turns of a multi-turn prompt go INTO the question, as a
  transcript the judge reads (`User: ...` / `Assistant: ...` lines, then `User: <last turn>`), so a
  follow-up question keeps its context; their number is `Conversation.context_turns`.
- `<image>` / `<video>` placeholders (LLaVA's, one per image, usually at the start of the first user
  turn) are removed from every text by `strip_placeholders`: egt's prompt puts the image slots itself.

Anything else (a turn that is not an object, an unknown role, a list with no user turn where a prompt
is wanted) is a DataError naming the file, line and field: a conversation is never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from egt.core.errors import DataError

USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "model", "bot")
SYSTEM_ROLES = ("system",)
IMAGE_PART_TYPES = ("image", "image_url", "video")
_PLACEHOLDER = re.compile(r"[ \t]*<(?:image|video)>[ \t]*\n?")


def strip_placeholders(text: str) -> str:
    """`text` without LLaVA's `<image>` / `<video>` placeholders (and the newline after each)."""
    return _PLACEHOLDER.sub("", text).strip()


@dataclass
class Conversation:
    """A list of chat turns split by egt's rule (see the module docstring)."""

    prompt: str | None         # the question as the judge reads it (transcript when multi-turn); None: no user turn
    response: str | None       # the assistant turns after the last user turn; None: there are none
    prompt_turns: list[tuple[str, str]]   # (role, text) of every user/assistant turn up to the last user turn
    context_turns: int         # turns before the last user turn (0: single-turn prompt)
    system: str                # system turns' text ("" if none)
    image_slots: int           # image/video parts and placeholders seen in the turns


def _role(turn: dict, file: str, line: int | None, field: str) -> str:
    role = turn.get("role", turn.get("from"))
    if not isinstance(role, str):
        raise DataError(file, line, field, f"chat turn has no 'role' (or 'from'): {sorted(turn)}")
    role = role.lower()
    for kind, names in (("user", USER_ROLES), ("assistant", ASSISTANT_ROLES), ("system", SYSTEM_ROLES)):
        if role in names:
            return kind
    raise DataError(file, line, field, f"unknown chat role '{role}' (expected one of "
                                       f"{', '.join(USER_ROLES + ASSISTANT_ROLES + SYSTEM_ROLES)})")


def _turn_text(turn: dict, file: str, line: int | None, field: str) -> tuple[str, int]:
    """(text without placeholders, image slots) of one turn."""
    content = turn.get("value", turn.get("content"))
    if isinstance(content, str):
        return strip_placeholders(content), len(_PLACEHOLDER.findall(content))
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        raise DataError(file, line, field, "chat turn has no text: expected 'value' or 'content' as a string or "
                                           f"a list of parts, got {type(content).__name__}")
    texts, slots = [], 0
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("text") or ""))
        elif isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES:
            slots += 1
        else:
            raise DataError(file, line, field, f"unknown content part {part!r:.80} (expected text or image parts)")
    joined = "\n".join(texts)
    return strip_placeholders(joined), slots + len(_PLACEHOLDER.findall(joined))


def is_conversation(value: Any) -> bool:
    """A chat turn or a list of them (a string is not)."""
    if isinstance(value, dict):
        return any(k in value for k in ("role", "from"))
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)


def has_user_turn(value: Any) -> bool:
    """A conversation (see `is_conversation`) with at least one user turn."""
    turns = [value] if isinstance(value, dict) else value
    return is_conversation(value) and any(
        str(t.get("role", t.get("from", ""))).lower() in USER_ROLES for t in turns)


def split_conversation(value: Any, file: str, line: int | None, field: str) -> Conversation:
    """Split one turn or a list of turns by egt's rule (module docstring)."""
    turns = [value] if isinstance(value, dict) else value
    if not isinstance(turns, list) or not turns:
        raise DataError(file, line, field, "expected a chat: a list of turns with role/content or from/value")
    parsed, system, slots = [], [], 0
    for turn in turns:
        if not isinstance(turn, dict):
            raise DataError(file, line, field, f"chat turn is a {type(turn).__name__}, expected an object")
        role = _role(turn, file, line, field)
        text, n = _turn_text(turn, file, line, field)
        slots += n
        (system.append(text) if role == "system" else parsed.append((role, text)))
    last_user = max((i for i, (role, _) in enumerate(parsed) if role == "user"), default=None)
    after = parsed[last_user + 1:] if last_user is not None else parsed
    replies = [text for role, text in after if role == "assistant"]
    prompt = None
    if last_user is not None:
        earlier = parsed[:last_user]
        prompt = parsed[last_user][1] if not earlier else "\n".join(
            [f"{role.capitalize()}: {text}" for role, text in earlier] + [f"User: {parsed[last_user][1]}"])
    return Conversation(prompt=prompt, response="\n\n".join(replies) if replies else None,
                        prompt_turns=parsed[:last_user + 1] if last_user is not None else [],
                        context_turns=last_user or 0, system="\n".join(system), image_slots=slots)


def response_text(value: Any, file: str, line: int | None, field: str) -> str:
    """A response given as a string (kept as it is) or as chat turns (the assistant reply, by the rule)."""
    if isinstance(value, str):
        return value
    conversation = split_conversation(value, file, line, field)
    if conversation.response is None:
        raise DataError(file, line, field, "chat has no assistant turn after its last user turn: no response to judge")
    return conversation.response


def prompt_text(value: Any, file: str, line: int | None, field: str) -> str:
    """A question given as a string (placeholders removed) or as chat turns (the prompt, by the rule)."""
    if isinstance(value, str):
        return strip_placeholders(value)
    conversation = split_conversation(value, file, line, field)
    if conversation.prompt is None:
        raise DataError(file, line, field, "chat has no user turn: no question")
    return conversation.prompt
