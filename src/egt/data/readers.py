"""Readers: public reward benchmarks, training sets and generic preference data -> PreferencePair.

    from egt.data.readers import load_benchmark
    result = load_benchmark("vlrewardbench", "vl_rewardbench.parquet", image_root="imgs/")
    result.pairs, result.skipped, result.warnings, result.dropped

Each format is a small adapter `row -> PreferencePair` (or a list of them: one VLFeedback row gives up to
six pairs, or none); the training sets' adapters are in egt.data.training_sets, the field helpers in
egt.data.fields, conversation-style prompts and responses follow egt.data.conversations. Pairs that a
format's own pairing rule leaves out (a tie, an unrated completion) are not errors: they go to `dropped`
({file, line, id, reason}) in both modes. The loop around the adapters reads
the file (JSONL, JSON array, Parquet or a `datasets.save_to_disk` folder),
locates every record (JSONL: 1-based line number; JSON array, Parquet, dataset:
0-based row index, as egt.core.records.read_pairs does), and
either stops at the first bad record (`on_error="fail"`, one DataError naming
file, line, field and what was expected) or skips it into `skipped` (a list of
{file, line, field, reason}). File-level problems (empty file, unreadable JSON
array, wrong format for the reader) stop in both modes.

Conventions (others compute metrics on them):
- Order and label. Where the source gives an order it is kept (VL-RewardBench HF
  `response[0]` is response_1, label from `human_ranking`, rank 0 = better;
  Multimodal RewardBench Output1/Output2 with `Better`; R1-Reward RL from the
  prompt text, label from `answer`). Chosen/rejected sources (VL-RewardBench in
  R1-Reward's JSONL, MM-RLHF-RewardBench, generic chosen/rejected columns) put
  the chosen response first with label 1, as the official scripts do
  (`rewards[0] > rewards[1]`). Evaluate both orders to remove that bias.
- `source` is the format name; `meta["original_id"]` the id in the source.
- Categories: vlrewardbench general / hallucination / reasoning from the id,
  case-insensitively; mmrb `safety/bias`, `safety/toxicity`, `reasoning/math`,
  `reasoning/coding`, others as given in Meta.Category (the official script's
  split, ID prefix matched case-insensitively as it does); mmrlhf the first of
  mcq, long, short, safety, video found in the image/video path (else "other");
  r1reward and pairs: "" unless a category column is mapped.
- Ids: the source's id as a string; R1-Reward RL rows without one get
  `r1reward-<line>`, generic rows without an id column `pairs-<line>`.
- MM-RLHF rows that share an id: egt id `<id>#<k>` (k = 0-based position among
  the file's rows with that id, skipped rows included, so ids are stable),
  meta group_id (original id), group_index, group_size (rows in the file).
- Repeated ids elsewhere (vlrewardbench, mmrb, r1reward, pairs). Rows that share
  an id but differ in any field are distinct items -- the public VL-RewardBench
  release repeats 25 ids over its 1,250 rows (same question, other responses
  and images) -- so all of them are kept: EVERY row of such an id becomes
  `<id>#<k>`, k = 0-based position among that id's distinct rows in file order
  (bad rows included, so ids do not depend on on_error), with
  meta["original_id"] = the source id, and one warning counts them. No row keeps
  the bare id: none of them is the original and the others copies. A row that
  is identical in every field to an earlier one is a true duplicate: an error
  naming both (on_error="fail") or a skipped record (on_error="skip").
- Images: embedded bytes stay bytes; paths are resolved against `image_root`
  (default: the input file's folder) to absolute paths and must stay inside it
  (`egt.core.records.resolve_image_path`: `..` may not leave the root; an absolute
  path outside it needs `allow_absolute_paths`). Each image's
  header is read (egt.core.images) to check that it is an image and, with `limits`, within
  the caller's pixel cap; pixels are decoded later.
  MM-RLHF video rows: a folder of frames gives up to 8 evenly spaced frames;
  a video file is kept as meta["video"] with no images (a warning).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from egt.core.errors import DataError
from egt.core.images import ImageLimits
from egt.core.prompts import parse_verdict
from egt.core.records import PreferencePair
from egt.data.conversations import (has_user_turn, is_conversation, prompt_text, response_text, split_conversation,
                                    strip_placeholders)
from egt.data.fields import (Ctx, as_id, even_frames, folder_frames, get_field, read_image, read_images,
                             resolve_path)
from egt.data import training_sets
from egt.data.source_files import RepeatedIds, is_json_array, iter_records

BENCHMARK_FORMATS = ("vlrewardbench", "mmrb", "mmrlhf")
TRAINING_FORMATS = ("rlaifv", "vlfeedback", "povid", "unifiedreward", "r1reward")   # and mmrlhf's dpo_pairs.jsonl
FORMATS = ("vlrewardbench", "mmrb", "mmrlhf", "r1reward", "rlaifv", "vlfeedback", "povid", "unifiedreward", "pairs")
MMRLHF_CATEGORIES = ("mcq", "long", "short", "safety", "video")
# `pairs` column map: egt field -> source column (chosen/rejected replace response_1/response_2/label)
COLUMN_MAP_FIELDS = ("id", "question", "response_1", "response_2", "label", "chosen", "rejected",
                     "image", "images", "source", "category", "meta")


@dataclass
class LoadResult:
    pairs: list[PreferencePair]
    skipped: list[dict] = field(default_factory=list)   # bad records: {file, line, field, reason}
    warnings: list[str] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)   # left out by the format's pairing rule: {file, line, id, reason}


# ------------------------------------------------------------------ adapters

def vlrewardbench_category(pair_id: str) -> str:
    text = pair_id.lower()
    if "mmmu" in text or "mathverse" in text:
        return "reasoning"
    if "hallucination" in text or "rlhf" in text or "rlaif" in text:
        return "hallucination"
    return "general"


def mmrb_category(pair_id: str, category: str) -> str:
    if category == "safety":
        return "safety/bias" if pair_id.lower().startswith("pairs") else "safety/toxicity"
    if category == "reasoning":
        return "reasoning/math" if pair_id.lower().startswith("math") else "reasoning/coding"
    return category


def mmrlhf_category(media_path: str) -> str:
    return next((k for k in MMRLHF_CATEGORIES if k in media_path), "other")


def _vlrewardbench(row: dict, ctx: Ctx, line: int) -> PreferencePair:
    pair_id = as_id(row.get("id"), ctx, line, "id")
    images = read_images(get_field(row, "image", ctx, line, (str, bytes, dict, list)), ctx, line, "image")
    if "query" in row:  # Hugging Face form
        responses = get_field(row, "response", ctx, line, list)
        ranking = get_field(row, "human_ranking", ctx, line, list)
        if len(responses) != 2 or not all(isinstance(r, str) for r in responses):
            raise DataError(ctx.file, line, "response", "expected a list of 2 strings")
        if (len(ranking) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranking)
                or ranking[0] == ranking[1]):
            raise DataError(ctx.file, line, "human_ranking",
                            f"expected 2 distinct integer ranks (0 = better), got {ranking!r}")
        meta = {k: row[k] for k in ("query_source", "models", "judge", "rationale", "ground_truth")
                if row.get(k) is not None}
        question, r1, r2 = get_field(row, "query", ctx, line), responses[0], responses[1]
        label = 1 if ranking[0] < ranking[1] else 2
    else:  # R1-Reward's JSONL copy: chosen first
        question, r1, r2 = (get_field(row, k, ctx, line) for k in ("prompt", "chosen", "rejected"))
        meta = {k: row[k] for k in ("chosen_reason", "rejected_reason") if row.get(k)}
        label = 1
    return PreferencePair(pair_id, images, question, r1, r2, label, "vlrewardbench",
                          vlrewardbench_category(pair_id), {"original_id": pair_id, **meta})


def _mmrb(row: dict, ctx: Ctx, line: int) -> PreferencePair:
    pair_id = as_id(row.get("ID"), ctx, line, "ID")
    question, r1, r2 = (get_field(row, k, ctx, line) for k in ("Text", "Output1", "Output2"))
    better = get_field(row, "Better", ctx, line)
    if better not in ("Output1", "Output2"):
        raise DataError(ctx.file, line, "Better", f"expected 'Output1' or 'Output2', got {better!r}")
    meta = get_field(row, "Meta", ctx, line, dict)
    category = meta.get("Category")
    if not isinstance(category, str) or not category:
        raise DataError(ctx.file, line, "Meta.Category", "expected a non-empty string")
    images = read_images(get_field(row, "Image", ctx, line, (str, bytes, dict, list)), ctx, line, "Image")
    return PreferencePair(pair_id, images, question, r1, r2, 1 if better == "Output1" else 2, "mmrb",
                          mmrb_category(pair_id, category), {"original_id": pair_id, "mmrb_meta": meta})


def _mmrlhf(row: dict, ctx: Ctx, line: int) -> PreferencePair:
    group_id = as_id(row.get("id"), ctx, line, "id")
    k, size = ctx.group_pos[group_id]
    ctx.group_pos[group_id] = (k + 1, size)
    question, r1, r2 = (get_field(row, key, ctx, line) for key in ("prompt", "chosen", "rejected"))
    question = strip_placeholders(question)   # the training file's prompts may carry LLaVA's <image>
    meta = {"original_id": group_id, "group_id": group_id, "group_index": k, "group_size": size,
            **{key: row[key] for key in ("chosen_reason", "rejected_reason") if row.get(key)}}
    if row.get("image") is not None:
        media_key = "image"
        media = get_field(row, "image", ctx, line, (str, bytes, dict, list))
        images = read_images(media, ctx, line, "image")
    elif row.get("video") is not None:
        media_key = "video"
        media = get_field(row, "video", ctx, line)
        full = resolve_path(media, ctx, line, "video")
        if os.path.isdir(full):
            images = [read_image(p, ctx, line, "video") for p in folder_frames(full)]
        elif os.path.isfile(full):
            images = []
            meta["video"] = full
            ctx.warnings.append(f"{ctx.file}:{line}: video file kept as meta['video'] without frames "
                                f"(give a folder of frames to judge it with images)")
        else:
            raise DataError(ctx.file, line, "video", f"video file or frame folder not found: {full}")
    else:
        raise DataError(ctx.file, line, "image", "missing required field (expected 'image' or 'video')")
    # a list of images (train_dpo.py accepts one): the category comes from the first path
    path_text = media if isinstance(media, str) else next((m for m in media if isinstance(m, str)), "") \
        if isinstance(media, list) else ""
    meta["media"] = media_key
    meta["media_path"] = path_text
    return PreferencePair(f"{group_id}#{k}", images, question, r1, r2, 1, "mmrlhf",
                          mmrlhf_category(path_text), meta)


_R1_PROMPT = re.compile(
    r"#+\s*\[Question\]:?[ \t]*\n?(?P<q>.*?)\s*#+\s*\[Response 1\]:?[ \t]*\n?(?P<r1>.*?)"
    r"\s*#+\s*\[Response 2\]:?[ \t]*\n?(?P<r2>.*?)\s*(?:#+\s*\*\*Output Format.*)?\Z", re.S)


def _r1reward(row: dict, ctx: Ctx, line: int) -> PreferencePair:
    message = get_field(row, "message", ctx, line, (str, list))
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except json.JSONDecodeError as exc:
            raise DataError(ctx.file, line, "message", f"expected a JSON chat string ({exc.msg})") from None
    turns = message if isinstance(message, list) else [message]
    texts, image_values = [], []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("role") != "user":
            continue
        content = turn.get("content")
        for part in ([{"type": "text", "text": content}] if isinstance(content, str) else content or []):
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "image":
                image_values.append(part.get("image"))
            elif isinstance(part, dict) and part.get("type") == "video":
                # a video as a list of frame paths (how R1-Reward passes MM-RLHF's videos): evenly spaced frames
                frames = part.get("video")
                if not isinstance(frames, list) or not frames:
                    raise DataError(ctx.file, line, "message.video", "expected a list of frame paths "
                                                                     "(a video file cannot be judged; give its frames)")
                image_values.extend(even_frames(frames))
    match = _R1_PROMPT.search("\n".join(texts))
    if not match:
        raise DataError(ctx.file, line, "message",
                        "user text lacks the R1-Reward judge prompt sections "
                        "'[Question]:', '[Response 1]:', '[Response 2]:'")
    answer = get_field(row, "answer", ctx, line, (str, list))
    answer_text = " ".join(str(a) for a in answer) if isinstance(answer, list) else answer
    verdict = parse_verdict(answer_text).verdict
    if verdict is None:
        raise DataError(ctx.file, line, "answer", f"expected '<answer>1</answer>' or '<answer>2</answer>', "
                                                  f"got {answer!r}")
    question = row.get("question") if isinstance(row.get("question"), str) else match.group("q")
    pair_id = as_id(row["id"], ctx, line, "id") if row.get("id") is not None else f"r1reward-{line}"
    return PreferencePair(pair_id, read_images(image_values or None, ctx, line, "message.image"), question,
                          match.group("r1"), match.group("r2"), verdict, "r1reward", "",
                          {"original_id": row.get("id")} if row.get("id") is not None else {})


def _label(value: Any, ctx: Ctx, line: int, key: str) -> int:
    if isinstance(value, str) and value.strip() in ("1", "2"):
        return int(value)
    if isinstance(value, float) and value in (1.0, 2.0):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 2):
        return value
    raise DataError(ctx.file, line, key, f"expected label 1 or 2, got {value!r}")


def _uses_chosen(row: dict, cmap: dict) -> bool:
    """chosen/rejected columns (label 1) unless response_1/response_2/label are mapped or present."""
    return "chosen" in cmap or ("response_1" not in cmap and "response_1" not in row and "chosen" in row)


def _texts(row: dict, ctx: Ctx, line: int, question_col: str, r1_col: str, r2_col: str) -> tuple[str, str, str, dict]:
    """Question and the two responses as plain text: strings as given (placeholders removed from the
    question), chat turns by egt's one rule (egt.data.conversations). A response holding its whole
    conversation (user turn included, as POVID's) also gives the question when no question column
    exists; the two responses' prompt turns must then agree."""
    r1_value = get_field(row, r1_col, ctx, line, (str, list, dict))
    r2_value = get_field(row, r2_col, ctx, line, (str, list, dict))
    r1, r2 = response_text(r1_value, ctx.file, line, r1_col), response_text(r2_value, ctx.file, line, r2_col)
    meta: dict = {}
    if question_col in row:
        value = get_field(row, question_col, ctx, line, (str, list, dict))
        question = prompt_text(value, ctx.file, line, question_col)
        if is_conversation(value):
            conversation = split_conversation(value, ctx.file, line, question_col)
            meta = {"context_turns": conversation.context_turns, **({"system": conversation.system}
                                                                     if conversation.system else {})}
        return question, r1, r2, meta
    question, meta = _question_from_responses(r1_value, r2_value, ctx, line, r1_col, r2_col)
    return question, r1, r2, meta


def _question_from_responses(r1_value, r2_value, ctx: Ctx, line: int, r1_col: str, r2_col: str) -> tuple[str, dict]:
    if not is_conversation(r1_value):
        raise DataError(ctx.file, line, r1_col, "no question: the row has no question column and the response "
                                                "is not a conversation holding the user turn")
    first = split_conversation(r1_value, ctx.file, line, r1_col)
    if first.prompt is None:
        raise DataError(ctx.file, line, r1_col, "no question: the row has no question column and the "
                                                "conversation has no user turn")
    if is_conversation(r2_value):
        second = split_conversation(r2_value, ctx.file, line, r2_col)
        if second.prompt_turns and second.prompt_turns != first.prompt_turns:
            raise DataError(ctx.file, line, r2_col, f"the prompt turns differ from those of {r1_col} "
                                                    "(the two responses must answer the same conversation)")
    meta = {"context_turns": first.context_turns, **({"system": first.system} if first.system else {})}
    return first.prompt, meta


def _pairs(row: dict, ctx: Ctx, line: int) -> PreferencePair:
    cmap = ctx.column_map
    col = lambda name: cmap.get(name, name)  # noqa: E731 - tiny local alias
    if _uses_chosen(row, cmap):
        r1_col, r2_col, label = col("chosen"), col("rejected"), 1
    else:
        r1_col, r2_col = col("response_1"), col("response_2")
        label = _label(get_field(row, col("label"), ctx, line, (int, float, str)), ctx, line, col("label"))
    question, r1, r2, text_meta = _texts(row, ctx, line, col("question"), r1_col, r2_col)
    image_col = cmap.get("images") or cmap.get("image") or ("images" if "images" in row else "image")
    meta = row.get(col("meta")) or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise DataError(ctx.file, line, col("meta"), "expected a JSON object") from None
    if not isinstance(meta, dict):
        raise DataError(ctx.file, line, col("meta"), f"expected an object, got {type(meta).__name__}")
    source, category = row.get(col("source")), row.get(col("category"))
    source = source if isinstance(source, str) and source else "pairs"
    category = category if isinstance(category, str) else ""
    # a dataset without ids gets `pairs-<line>`; a mapped id column must be present
    pair_id = (f"pairs-{line}" if "id" not in cmap and "id" not in row
               else as_id(row.get(col("id")), ctx, line, col("id")))
    return PreferencePair(pair_id, read_images(row.get(image_col), ctx, line, image_col),
                          question, r1, r2, label, source, category, {**text_meta, **meta})


_ADAPTERS: dict[str, Callable[[dict, Ctx, int], PreferencePair | list[PreferencePair]]] = {
    "vlrewardbench": _vlrewardbench, "mmrb": _mmrb, "mmrlhf": _mmrlhf, "r1reward": _r1reward, "pairs": _pairs,
    "rlaifv": training_sets.rlaifv, "vlfeedback": training_sets.vlfeedback, "povid": training_sets.povid,
    "unifiedreward": training_sets.unifiedreward,
}
# Fields that identify a format (any one set suffices); used to catch a wrong --format.
_SIGNATURES = {
    "vlrewardbench": [("id", "query", "response", "human_ranking"), ("id", "prompt", "chosen", "rejected", "image")],
    "mmrb": [("ID", "Text", "Output1", "Output2", "Better")],
    "mmrlhf": [("id", "prompt", "chosen", "rejected")],
    "r1reward": [("message", "answer")],
    "rlaifv": [("question", "chosen", "rejected", "idx"), ("question", "chosen", "rejected", "image_path")],
    "vlfeedback": [("id", "prompt", "completions")],
    "povid": [("conversations", "rejected_conversations")],
    "unifiedreward": [("conversations", "image"), ("conversations", "images")],
}


def _check_format(fmt: str, row: dict, ctx: Ctx, line: int) -> None:
    if fmt == "pairs":
        cmap = ctx.column_map
        responses = ([cmap.get("chosen", "chosen"), cmap.get("rejected", "rejected")] if _uses_chosen(row, cmap)
                     else [cmap.get(k, k) for k in ("response_1", "response_2", "label")])
        # a response that holds its whole conversation also gives the question
        needs_question = "question" in cmap or not has_user_turn(row.get(responses[0]))
        wanted = ([cmap.get("question", "question")] if needs_question else []) + responses
        missing = [c for c in wanted if c not in row]
        if missing:
            raise DataError(ctx.file, line, missing[0],
                            f"column(s) {missing} not found (columns: {sorted(row)}); map them with "
                            "--column-map '{\"question\": \"...\", \"chosen\": \"...\", \"rejected\": \"...\"}' "
                            "or response_1/response_2/label")
        return
    if any(all(k in row for k in sig) for sig in _SIGNATURES[fmt]):
        return
    expected = " or ".join("(" + ", ".join(sig) + ")" for sig in _SIGNATURES[fmt])
    looks = [name for name, sigs in _SIGNATURES.items()
             if name != fmt and any(all(k in row for k in sig) for sig in sigs)]
    hint = f"; this looks like {' or '.join('--format ' + name for name in looks)}" if looks else ""
    raise DataError(ctx.file, line, None, f"not a {fmt} file: expected fields {expected}, "
                                          f"found {sorted(row)}{hint}")


# ------------------------------------------------------------------ entry point

# The source's id field per format; mmrlhf numbers its groups itself (`_mmrlhf`).
_ID_FIELDS = {"vlrewardbench": "id", "mmrb": "ID", "r1reward": "id", "rlaifv": "idx", "vlfeedback": "id",
              "povid": "id", "unifiedreward": "id"}


def _id_field(fmt: str, column_map: dict) -> str | None:
    return column_map.get("id", "id") if fmt == "pairs" else _ID_FIELDS.get(fmt)


def load_benchmark(format: str, input: str | Path, image_root: str | Path | None = None,
                   on_error: str = "fail", column_map: dict | None = None,
                   allow_absolute_paths: bool = False, limits: ImageLimits | None = None) -> LoadResult:
    """Read one benchmark / dataset file into validated pairs (see the module docstring); `limits`: the pixel
    cap a command that decodes the images applies (egt.core.images; None: any image PIL would open)."""
    if format not in _ADAPTERS:
        raise DataError(str(input), None, None, f"unknown format '{format}' (expected one of {', '.join(FORMATS)})")
    if on_error not in ("fail", "skip"):
        raise DataError(str(input), None, None, f"on_error must be 'fail' or 'skip', got {on_error!r}")
    path = Path(input)
    unknown = sorted(set(column_map or {}) - set(COLUMN_MAP_FIELDS))
    if column_map and format != "pairs":
        raise DataError(str(path), None, None, "a column map applies only to --format pairs")
    if unknown:
        raise DataError(str(path), None, None, f"column map has unknown field(s) {unknown}; "
                                               f"expected some of {', '.join(COLUMN_MAP_FIELDS)}")
    if not path.exists():
        raise DataError(str(path), None, None, "input file not found")
    if image_root is not None and not Path(image_root).is_dir():
        raise DataError(str(image_root), None, None, "image root is not a folder")
    base = Path(image_root) if image_root is not None else (path if path.is_dir() else path.parent)
    ctx = Ctx(str(path), base.resolve(), allow_absolute_paths, dict(column_map or {}), [], limits=limits)
    records = list(iter_records(path))
    if not records:
        raise DataError(str(path), None, None, "file is empty: no records")
    first = next(((ln, r) for ln, r in records if isinstance(r, dict)), None)
    if first is None:
        bad = records[0][1]
        raise bad if isinstance(bad, DataError) else DataError(
            str(path), records[0][0], None, f"expected JSON objects, got {type(bad).__name__}")
    _check_format(format, first[1], ctx, first[0])
    if format == "mmrlhf":
        sizes: dict[str, int] = {}
        for _, row in records:
            if isinstance(row, dict) and isinstance(row.get("id"), (str, int)):
                sizes[str(row["id"])] = sizes.get(str(row["id"]), 0) + 1
        ctx.group_pos = {gid: (0, n) for gid, n in sizes.items()}

    result = LoadResult(pairs=[], warnings=ctx.warnings, dropped=ctx.dropped)
    seen: dict[str, int] = {}
    unit = "row" if path.is_dir() or path.suffix.lower() == ".parquet" or is_json_array(path) else "line"
    id_field = _id_field(format, ctx.column_map)
    repeats = RepeatedIds.find(records, id_field, ctx.file, unit, ctx.warnings) if id_field else RepeatedIds()
    adapter = _ADAPTERS[format]
    for line, row in records:
        try:
            if isinstance(row, DataError):
                raise row
            if not isinstance(row, dict):
                raise DataError(ctx.file, line, None, f"expected a JSON object, got {type(row).__name__}")
            if line in repeats.identical_to:
                first = repeats.identical_to[line]
                raise DataError(ctx.file, line, id_field, f"duplicate id '{row[id_field]}' (first at {unit} {first}): "
                                                          f"identical duplicate of {unit} {first}")
            made = adapter(row, ctx, line)
            made = made if isinstance(made, list) else [made]   # a row may give several pairs, or none (dropped)
            for pair in made:
                if line in repeats.index:
                    pair.meta = {**pair.meta, "original_id": pair.meta.get("original_id", pair.id)}
                    pair.id = f"{pair.id}#{repeats.index[line]}"
                result.warnings.extend(pair.validate(ctx.file, line))
                if pair.id in seen:
                    raise DataError(ctx.file, line, "id", f"duplicate id '{pair.id}' (first at {unit} {seen[pair.id]})")
            seen.update((pair.id, line) for pair in made)
            result.pairs.extend(made)
        except DataError as exc:
            if on_error == "fail":
                raise
            result.skipped.append(exc.as_dict())
    return result
