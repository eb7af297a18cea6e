"""Readers for the preference TRAINING sets judges are trained on: RLAIF-V, VLFeedback, POVID, UnifiedReward.

    egt data convert --format rlaifv --input RLAIF-V-Dataset/train-00000-of-00001.parquet --output rlaifv.parquet
    egt data convert --format vlfeedback --input VLFeedback/train.parquet --image-root vlfeedback/ --output vlf.parquet
    egt data convert --format povid --input POVID_preference_data_for_VLLMs.json --output povid.parquet
    egt data convert --format unifiedreward --input LLaVA-Critic/pairwise/train_data.json --image-root imgs/ \\
        --output critic.parquet

Each is an adapter `row -> PreferencePair | list[PreferencePair]` run by egt.data.readers.load_benchmark (the
loop that locates rows, stops or skips bad ones, numbers repeated ids `<id>#k`); MM-RLHF's `dpo_pairs.jsonl`
and R1-Reward's RL rows are read by `mmrlhf` / `r1reward` there. The schemas and where they come from are in
docs/datasets.md (one section per format) and docs/cli.md. Where a source needs a rule to make pairs, the rule
is the source's own:

- rlaifv (openbmb/RLAIF-V-Dataset, Parquet): `question, chosen, rejected, image{bytes,path}, idx,
  origin_dataset, origin_split (a JSON string), ds_name, image_path`; chosen first, label 1; id = `idx`
  (rows that repeat an idx become `idx#k`); category = `origin_dataset`; meta: origin_split (parsed),
  ds_name, image_path.
- vlfeedback (MMInstruction/VLFeedback): one prompt, 4 `completions` rated by GPT-4V on 3 aspects
  (string ratings 1-5). Silkie's rule (vlf-silkie/VLFeedback run_dpo.py, make_batch_pairs): EVERY
  unordered pair of completions (i < j); a completion's score is the mean of its aspect ratings; the
  higher mean is the better; equal means and pairs with a rating that is not a number are left out.
  egt also leaves out a pair with an empty response and one with a missing aspect (where Silkie's code
  would crash). The pair keeps index order (response_1 = completion i), label = the better one's
  position, so labels are mixed, not chosen-first. id = `<id>:<i>-<j>`; category = the id without its
  trailing `-<number>` (the instruction source, e.g. `svit-complex_reasoning`); meta: both models, the
  per-aspect ratings, the means, the rationales. Every pair left out is counted with its reason.
- povid (YiyangAiLab/POVID_preference_data_for_VLLMs, one JSON array): `id, image, conversations,
  rejected_conversations` (LLaVA chats); question = the last human turn, chosen / rejected = the reply
  after it in each chat (egt.data.conversations); the two chats' prompt turns must agree; label 1;
  category `hallucination`.
- unifiedreward (CodeGoat24/UnifiedReward, LLaVA-Critic pairwise and UnifiedReward-Think rows):
  `conversations: [human, gpt]` plus `image` / `images`. The two responses are inside the human turn, in
  brackets: `Question: [..]`, `The first response: [..]` / `Answer 1: [..]`, `The second response: [..]` /
  `Answer 2: [..]` (cut at the LAST occurrence of each marker, so a response that quotes the template
  does not split early). The label is read from the gpt turn: `<answer>Answer 1 is better</answer>`
  (Think), else the last "first/second response is better" (or "Response/Answer 1/2 is better") in the
  critique. A tie is left out (counted); image- or video-generation rows ("Image 1 is better": the
  candidates are images, not text) are left out (counted); a verdict that cannot be read is an error
  (the released files' verdict wording is not verified: check the counts). category = the prompt kind
  (`llava-critic`, `unifiedreward`, `unifiedreward-think`); meta.judge_rationale = the gpt critique.

Ids: the source's, else a content id (egt.data.fields.content_id: survives filtering the file).
"""

from __future__ import annotations

import json
import math
import re
from itertools import combinations
from typing import Any

from egt.core.errors import DataError
from egt.core.records import PreferencePair
from egt.data.conversations import split_conversation, strip_placeholders
from egt.data.fields import Ctx, as_id, content_id, get_field, read_image, read_images

# ------------------------------------------------------------------ RLAIF-V


def rlaifv(row: dict, ctx: Ctx, line: int) -> PreferencePair:
    question = strip_placeholders(get_field(row, "question", ctx, line))
    chosen, rejected = get_field(row, "chosen", ctx, line), get_field(row, "rejected", ctx, line)
    image = get_field(row, "image", ctx, line, (dict, str, bytes), required=False)
    if image is None or isinstance(image, dict) and image.get("bytes") is None and not image.get("path"):
        image = get_field(row, "image_path", ctx, line)   # no embedded bytes: the file the row names
        images = read_images(image, ctx, line, "image_path")
    else:
        images = read_images(image, ctx, line, "image")
    meta: dict[str, Any] = {k: row[k] for k in ("ds_name", "origin_dataset", "image_path") if row.get(k)}
    split = row.get("origin_split")
    if isinstance(split, str) and split:
        try:
            meta["origin_split"] = json.loads(split)
        except json.JSONDecodeError:
            meta["origin_split"] = split   # kept as given: it is description, not something egt uses
    elif split is not None:
        meta["origin_split"] = split
    if row.get("idx") is not None:
        pair_id = as_id(row["idx"], ctx, line, "idx")
        meta["original_id"] = pair_id
    else:
        pair_id = content_id("rlaifv", [r.path or r.data for r in images], question, chosen, rejected)
    category = row.get("origin_dataset") if isinstance(row.get("origin_dataset"), str) else ""
    return PreferencePair(pair_id, images, question, chosen, rejected, 1, "rlaifv", category, meta)


# ------------------------------------------------------------------ VLFeedback

_TRAILING_NUMBER = re.compile(r"[-_]\d+$")


def _completions(value: Any, ctx: Ctx, line: int) -> list[dict]:
    """The completions as a list of {response, model, annotations}: Arrow gives a list of structs, the
    legacy `datasets` Sequence(dict) decoding a dict of lists (Silkie's code reads that one)."""
    if isinstance(value, dict):
        keys = list(value)
        lengths = {len(v) for v in value.values() if isinstance(v, list)}
        if len(lengths) != 1 or not all(isinstance(v, list) for v in value.values()):
            raise DataError(ctx.file, line, "completions", "expected a list of completions or a dict of equal lists")
        value = [{k: value[k][i] for k in keys} for i in range(lengths.pop())]
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise DataError(ctx.file, line, "completions", f"expected a list of completion objects, "
                                                      f"got {type(value).__name__}")
    return value


def _mean_rating(annotations: Any) -> tuple[float | None, str]:
    """(mean of the aspect ratings, "") or (None, why it has none) -- Silkie's score of a completion."""
    if not isinstance(annotations, dict) or not annotations:
        return None, "completion has no annotations"
    ratings = []
    for aspect, value in annotations.items():
        rating = value.get("Rating") if isinstance(value, dict) else None
        if rating is None:
            return None, f"missing rating ({aspect})"
        try:
            number = float(rating)
        except (TypeError, ValueError):
            return None, f"non-numeric rating ({aspect}: {rating!r})"
        if not math.isfinite(number):
            return None, f"non-numeric rating ({aspect}: {rating!r})"
        ratings.append(number)
    return sum(ratings) / len(ratings), ""


def vlfeedback(row: dict, ctx: Ctx, line: int) -> list[PreferencePair]:
    row_id = as_id(row.get("id"), ctx, line, "id")
    question = strip_placeholders(get_field(row, "prompt", ctx, line))
    completions = _completions(get_field(row, "completions", ctx, line, (list, dict)), ctx, line)
    if row.get("img_path") is not None:
        images = read_images(get_field(row, "img_path", ctx, line), ctx, line, "img_path")
    else:
        images = read_images(get_field(row, "image", ctx, line, (str, bytes, dict, list)), ctx, line, "image")
    scored = []
    for index, completion in enumerate(completions):
        response = completion.get("response")
        if not isinstance(response, str):
            raise DataError(ctx.file, line, f"completions[{index}].response",
                            f"expected a string, got {type(response).__name__}")
        mean, why = _mean_rating(completion.get("annotations"))
        scored.append((response, mean, why))
    if len(completions) < 2:
        ctx.drop(line, row_id, f"fewer than 2 completions ({len(completions)})")
        return []
    category = _TRAILING_NUMBER.sub("", row_id)
    pairs = []
    for i, j in combinations(range(len(completions)), 2):
        pair_id = f"{row_id}:{i}-{j}"
        (r_i, mean_i, why_i), (r_j, mean_j, why_j) = scored[i], scored[j]
        if mean_i is None or mean_j is None:
            ctx.drop(line, pair_id, why_i or why_j)
        elif mean_i == mean_j:
            ctx.drop(line, pair_id, "tie: equal mean ratings")
        elif not r_i.strip() or not r_j.strip():
            ctx.drop(line, pair_id, "empty response")
        else:
            a_i, a_j = completions[i].get("annotations"), completions[j].get("annotations")
            meta = {"original_id": row_id, "completion_indices": [i, j],
                    "models": [completions[i].get("model"), completions[j].get("model")],
                    "mean_ratings": [mean_i, mean_j],
                    "ratings": {a: [a_i[a].get("Rating"), a_j.get(a, {}).get("Rating")] for a in a_i},
                    "rationales": {a: [a_i[a].get("Rationale"), a_j.get(a, {}).get("Rationale")] for a in a_i}}
            pairs.append(PreferencePair(pair_id, images, question, r_i, r_j, 1 if mean_i > mean_j else 2,
                                        "vlfeedback", category, meta))
    return pairs


# ------------------------------------------------------------------ POVID


def povid(row: dict, ctx: Ctx, line: int) -> PreferencePair:
    chosen_chat = split_conversation(get_field(row, "conversations", ctx, line, list), ctx.file, line, "conversations")
    rejected_chat = split_conversation(get_field(row, "rejected_conversations", ctx, line, list), ctx.file, line,
                                       "rejected_conversations")
    for name, chat in (("conversations", chosen_chat), ("rejected_conversations", rejected_chat)):
        if chat.prompt is None:
            raise DataError(ctx.file, line, name, "chat has no human turn: no question")
        if chat.response is None:
            raise DataError(ctx.file, line, name, "chat has no gpt turn after its last human turn: no response")
    if chosen_chat.prompt_turns != rejected_chat.prompt_turns:
        raise DataError(ctx.file, line, "rejected_conversations",
                        "its human turns differ from those of conversations (both must answer the same prompt)")
    images = read_images(get_field(row, "image", ctx, line, (str, list)), ctx, line, "image")
    if row.get("id") is not None:
        pair_id = as_id(row["id"], ctx, line, "id")
    else:
        pair_id = content_id("povid", [r.path for r in images], chosen_chat.prompt, chosen_chat.response,
                             rejected_chat.response)
    meta = {"original_id": pair_id, "context_turns": chosen_chat.context_turns}
    return PreferencePair(pair_id, images, chosen_chat.prompt, chosen_chat.response, rejected_chat.response, 1,
                          "povid", "hallucination", meta)


# ------------------------------------------------------------------ UnifiedReward

_QUESTION = re.compile(r"Question: \[")
_FIRST = re.compile(r"\n(?:The first response|Answer 1): \[")
_SECOND = re.compile(r"\n(?:The second response|Answer 2): \[")
_TAIL = re.compile(r"\]\s*(?:ASSISTANT:\s*)?\Z")
_THINK_ANSWER = re.compile(r"<answer>\s*(?P<kind>Answer|Image|Video|Response)\s*(?P<n>[12])\s+is\s+better\s*\.?\s*"
                           r"</answer>", re.I)
_ANSWER_TAG = re.compile(r"<answer>(?P<body>.*?)</answer>", re.S | re.I)
_FREE_VERDICT = re.compile(r"\b(?:(?:the\s+)?(?P<word>first|second)\s+(?:response|answer)|"
                           r"(?:response|answer)\s*(?P<n>[12]))\s+is\s+(?:better|superior|preferred|"
                           r"the\s+better(?:\s+one)?)", re.I)
_GENERATION = re.compile(r"\b(?:image|video)\s*[12]\s+is\s+better", re.I)
_TIE = re.compile(r"\b(?:it\s+is\s+a\s+tie|a\s+tie\b|tie\b|equally\s+good|equally\s+(?:helpful|accurate|"
                  r"correct))", re.I)


def _last(pattern: re.Pattern, text: str, end: int) -> re.Match | None:
    found = None
    for match in pattern.finditer(text, 0, end):
        found = match
    return found


def _pair_sections(text: str) -> tuple[str, str, str] | None:
    """Question and the two responses of a UnifiedReward / LLaVA-Critic pair prompt (None: not one)."""
    tail = _TAIL.search(text)
    second = _last(_SECOND, text, len(text))
    first = second and _last(_FIRST, text, second.start())
    question = first and _last(_QUESTION, text, first.start())
    if not (tail and second and first and question) or tail.start() < second.end():
        return None
    q, r1, r2 = text[question.end():first.start()], text[first.end():second.start()], text[second.end():tail.start()]
    if not q.endswith("]") or not r1.endswith("]"):
        return None
    return q[:-1].strip(), r1[:-1].strip(), r2.strip()


def _prompt_kind(text: str) -> str:
    if "Answer 1: [" in text:
        return "unifiedreward-think"
    if text.lstrip().startswith("Given an image and a corresponding question"):
        return "llava-critic"
    return "unifiedreward"


def critique_verdict(text: str) -> tuple[int | None, str]:
    """(label, "") from a judge's critique, or (None, why there is none: 'tie', 'generation', 'unreadable')."""
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        body = f"<answer>{tagged[-1]}</answer>"
        match = _THINK_ANSWER.search(body)
        if match:
            kind = match.group("kind").lower()
            return (None, "generation") if kind in ("image", "video") else (int(match.group("n")), "")
        text = tagged[-1]
    if _GENERATION.search(text):
        return None, "generation"
    verdicts = list(_FREE_VERDICT.finditer(text))
    if verdicts:
        last = verdicts[-1]
        if last.group("word"):
            return (1 if last.group("word").lower() == "first" else 2), ""
        return int(last.group("n")), ""
    if _TIE.search(text):
        return None, "tie"
    return None, "unreadable"


def unifiedreward(row: dict, ctx: Ctx, line: int) -> PreferencePair | list:
    chat = get_field(row, "conversations", ctx, line, list)
    turns = [t for t in chat if isinstance(t, dict)]
    human = next((t for t in turns if str(t.get("from", t.get("role", ""))).lower() in ("human", "user")), None)
    gpt = next((t for t in reversed(turns) if str(t.get("from", t.get("role", ""))).lower() in ("gpt", "assistant")),
               None)
    if human is None or gpt is None or not isinstance(human.get("value"), str) or not isinstance(gpt.get("value"), str):
        raise DataError(ctx.file, line, "conversations", "expected a human turn and a gpt turn with string 'value'")
    prompt, critique = strip_placeholders(human["value"]), gpt["value"]
    media = row.get("images") if row.get("images") is not None else row.get("image")
    pair_id = (as_id(row["id"], ctx, line, "id") if row.get("id") is not None
               else content_id("unifiedreward", media, prompt, critique))
    label, why = critique_verdict(critique)
    if why == "generation":
        ctx.drop(line, pair_id, "generation preference: the candidates are images or videos, not text responses")
        return []
    sections = _pair_sections(prompt)
    if sections is None:
        raise DataError(ctx.file, line, "conversations[0].value",
                        "human turn lacks the pair prompt sections 'Question: [..]', 'The first response: [..]' "
                        "(or 'Answer 1: [..]') and 'The second response: [..]' (or 'Answer 2: [..]')")
    if why == "tie":
        ctx.drop(line, pair_id, "tie: the critique prefers neither response")
        return []
    if label is None:
        raise DataError(ctx.file, line, "conversations[1].value",
                        "no verdict found in the critique (expected '<answer>Answer 1 is better</answer>', "
                        "'... the first/second response is better', or a tie)")
    question, r1, r2 = sections
    images = [read_image(v, ctx, line, "images" if row.get("images") is not None else "image")
              for v in (media if isinstance(media, list) else [media] if media is not None else [])]
    meta = {"judge_rationale": critique, "prompt_kind": _prompt_kind(prompt)}
    if row.get("id") is not None:
        meta["original_id"] = pair_id
    return PreferencePair(pair_id, images, question, r1, r2, label, "unifiedreward", meta["prompt_kind"], meta)
