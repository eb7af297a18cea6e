"""Readers: public reward benchmarks and generic preference data -> PreferencePair.

    from egt.data.readers import load_benchmark
    result = load_benchmark("vlrewardbench", "vl_rewardbench.parquet", image_root="imgs/")
    result.pairs, result.skipped, result.warnings

Each format is a small adapter `row -> PreferencePair`; the loop around it reads
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
from egt.core.images import DEFAULT_LIMITS, ImageLimits, check_image, image_size
from egt.core.prompts import parse_verdict
from egt.core.records import ImagePathRefused, ImageRef, PreferencePair, resolve_image_path
from egt.data.source_files import RepeatedIds, is_json_array, iter_records

FORMATS = ("vlrewardbench", "mmrb", "mmrlhf", "r1reward", "pairs")
MMRLHF_CATEGORIES = ("mcq", "long", "short", "safety", "video")
MAX_VIDEO_FRAMES = 8
# `pairs` column map: egt field -> source column (chosen/rejected replace response_1/response_2/label)
COLUMN_MAP_FIELDS = ("id", "question", "response_1", "response_2", "label", "chosen", "rejected",
                     "image", "images", "source", "category", "meta")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass
class LoadResult:
    pairs: list[PreferencePair]
    skipped: list[dict] = field(default_factory=list)   # {file, line, field, reason}
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Ctx:
    file: str
    base_dir: Path           # the image root: relative paths resolve here, every path stays inside
    allow_absolute: bool     # absolute paths outside base_dir are read (the user said so)
    column_map: dict
    warnings: list[str]
    limits: ImageLimits | None = None   # the caller's pixel cap (None: check only that images are images)
    group_pos: dict = field(default_factory=dict)    # mmrlhf: id -> (next k, size)


# ------------------------------------------------------------------ fields

def _get(row: dict, key: str, ctx: _Ctx, line: int, kind: type | tuple = str, required: bool = True):
    if key not in row or row[key] is None:
        if required:
            raise DataError(ctx.file, line, key, "missing required field")
        return None
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(ctx.file, line, key, f"expected {names}, got {type(value).__name__}")
    return value


def _as_id(value: Any, ctx: _Ctx, line: int, key: str) -> str:
    if value is None:
        raise DataError(ctx.file, line, key, "missing required field")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise DataError(ctx.file, line, key, f"expected a non-empty string id, got {value!r}")
    return str(value)


def _image_ref(source: str | bytes, ctx: _Ctx, line: int, key: str) -> ImageRef:
    """The checked reference: its header read through egt.core.images (an image, a regular file, within
    the caller's pixel cap when it gave `limits`; pixels are decoded only when used)."""
    if ctx.limits is None:
        image_size(source, where=(ctx.file, line), field=key)
    else:
        check_image(source, where=(ctx.file, line), field=key, max_pixels=ctx.limits.max_pixels,
                    downscale=ctx.limits.downscale)
    limits = ctx.limits or DEFAULT_LIMITS
    if isinstance(source, bytes):
        return ImageRef(data=source, where=(ctx.file, line), limits=limits)
    return ImageRef(path=source, where=(ctx.file, line), limits=limits)


def _resolve_path(path: str, ctx: _Ctx, line: int, key: str) -> str:
    try:
        return resolve_image_path(path, ctx.base_dir, ctx.allow_absolute)
    except ImagePathRefused as exc:
        raise DataError(ctx.file, line, key, str(exc)) from None


def _image(value: Any, ctx: _Ctx, line: int, key: str) -> ImageRef:
    """A path, raw bytes, or a {bytes, path} / {bytes_base64} dict -> checked ImageRef."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("bytes_base64"):
            import base64

            try:
                data = base64.b64decode(value["bytes_base64"], validate=True)
            except ValueError:
                raise DataError(ctx.file, line, key, "bytes_base64 is not valid base64") from None
        if data is None:
            value = value.get("path")
        else:
            value = data
    if isinstance(value, (bytes, bytearray)):
        return _image_ref(bytes(value), ctx, line, key)
    if not isinstance(value, str) or not value:
        raise DataError(ctx.file, line, key,
                        f"expected an image path, bytes or {{bytes, path}}, got {type(value).__name__}")
    full = _resolve_path(value, ctx, line, key)
    if not os.path.lexists(full):
        raise DataError(ctx.file, line, key, f"image file not found: {full}")
    return _image_ref(full, ctx, line, key)


def _images(value: Any, ctx: _Ctx, line: int, key: str) -> list[ImageRef]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [_image(v, ctx, line, key) for v in values]


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


def _vlrewardbench(row: dict, ctx: _Ctx, line: int) -> PreferencePair:
    pair_id = _as_id(row.get("id"), ctx, line, "id")
    images = _images(_get(row, "image", ctx, line, (str, bytes, dict, list)), ctx, line, "image")
    if "query" in row:  # Hugging Face form
        responses = _get(row, "response", ctx, line, list)
        ranking = _get(row, "human_ranking", ctx, line, list)
        if len(responses) != 2 or not all(isinstance(r, str) for r in responses):
            raise DataError(ctx.file, line, "response", "expected a list of 2 strings")
        if (len(ranking) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranking)
                or ranking[0] == ranking[1]):
            raise DataError(ctx.file, line, "human_ranking",
                            f"expected 2 distinct integer ranks (0 = better), got {ranking!r}")
        meta = {k: row[k] for k in ("query_source", "models", "judge", "rationale", "ground_truth")
                if row.get(k) is not None}
        question, r1, r2 = _get(row, "query", ctx, line), responses[0], responses[1]
        label = 1 if ranking[0] < ranking[1] else 2
    else:  # R1-Reward's JSONL copy: chosen first
        question, r1, r2 = (_get(row, k, ctx, line) for k in ("prompt", "chosen", "rejected"))
        meta = {k: row[k] for k in ("chosen_reason", "rejected_reason") if row.get(k)}
        label = 1
    return PreferencePair(pair_id, images, question, r1, r2, label, "vlrewardbench",
                          vlrewardbench_category(pair_id), {"original_id": pair_id, **meta})


def _mmrb(row: dict, ctx: _Ctx, line: int) -> PreferencePair:
    pair_id = _as_id(row.get("ID"), ctx, line, "ID")
    question, r1, r2 = (_get(row, k, ctx, line) for k in ("Text", "Output1", "Output2"))
    better = _get(row, "Better", ctx, line)
    if better not in ("Output1", "Output2"):
        raise DataError(ctx.file, line, "Better", f"expected 'Output1' or 'Output2', got {better!r}")
    meta = _get(row, "Meta", ctx, line, dict)
    category = meta.get("Category")
    if not isinstance(category, str) or not category:
        raise DataError(ctx.file, line, "Meta.Category", "expected a non-empty string")
    images = _images(_get(row, "Image", ctx, line, (str, bytes, dict, list)), ctx, line, "Image")
    return PreferencePair(pair_id, images, question, r1, r2, 1 if better == "Output1" else 2, "mmrb",
                          mmrb_category(pair_id, category), {"original_id": pair_id, "mmrb_meta": meta})


def _frames(folder: str) -> list[str]:
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(_IMAGE_SUFFIXES))
    if len(files) <= MAX_VIDEO_FRAMES:
        return [os.path.join(folder, f) for f in files]
    step = (len(files) - 1) / (MAX_VIDEO_FRAMES - 1)
    return [os.path.join(folder, files[round(i * step)]) for i in range(MAX_VIDEO_FRAMES)]


def _mmrlhf(row: dict, ctx: _Ctx, line: int) -> PreferencePair:
    group_id = _as_id(row.get("id"), ctx, line, "id")
    k, size = ctx.group_pos[group_id]
    ctx.group_pos[group_id] = (k + 1, size)
    question, r1, r2 = (_get(row, key, ctx, line) for key in ("prompt", "chosen", "rejected"))
    meta = {"original_id": group_id, "group_id": group_id, "group_index": k, "group_size": size,
            **{key: row[key] for key in ("chosen_reason", "rejected_reason") if row.get(key)}}
    if row.get("image") is not None:
        media_key = "image"
        media = _get(row, "image", ctx, line, (str, bytes, dict, list))
        images = _images(media, ctx, line, "image")
    elif row.get("video") is not None:
        media_key = "video"
        media = _get(row, "video", ctx, line)
        full = _resolve_path(media, ctx, line, "video")
        if os.path.isdir(full):
            images = [_image(p, ctx, line, "video") for p in _frames(full)]
        elif os.path.isfile(full):
            images = []
            meta["video"] = full
            ctx.warnings.append(f"{ctx.file}:{line}: video file kept as meta['video'] without frames "
                                f"(give a folder of frames to judge it with images)")
        else:
            raise DataError(ctx.file, line, "video", f"video file or frame folder not found: {full}")
    else:
        raise DataError(ctx.file, line, "image", "missing required field (expected 'image' or 'video')")
    path_text = media if isinstance(media, str) else ""
    meta["media"] = media_key
    meta["media_path"] = path_text
    return PreferencePair(f"{group_id}#{k}", images, question, r1, r2, 1, "mmrlhf",
                          mmrlhf_category(path_text), meta)


_R1_PROMPT = re.compile(
    r"#+\s*\[Question\]:?[ \t]*\n?(?P<q>.*?)\s*#+\s*\[Response 1\]:?[ \t]*\n?(?P<r1>.*?)"
    r"\s*#+\s*\[Response 2\]:?[ \t]*\n?(?P<r2>.*?)\s*(?:#+\s*\*\*Output Format.*)?\Z", re.S)


def _r1reward(row: dict, ctx: _Ctx, line: int) -> PreferencePair:
    message = _get(row, "message", ctx, line, (str, list))
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
    match = _R1_PROMPT.search("\n".join(texts))
    if not match:
        raise DataError(ctx.file, line, "message",
                        "user text lacks the R1-Reward judge prompt sections "
                        "'[Question]:', '[Response 1]:', '[Response 2]:'")
    answer = _get(row, "answer", ctx, line, (str, list))
    answer_text = " ".join(str(a) for a in answer) if isinstance(answer, list) else answer
    verdict = parse_verdict(answer_text).verdict
    if verdict is None:
        raise DataError(ctx.file, line, "answer", f"expected '<answer>1</answer>' or '<answer>2</answer>', "
                                                  f"got {answer!r}")
    question = row.get("question") if isinstance(row.get("question"), str) else match.group("q")
    pair_id = _as_id(row["id"], ctx, line, "id") if row.get("id") is not None else f"r1reward-{line}"
    return PreferencePair(pair_id, _images(image_values or None, ctx, line, "message.image"), question,
                          match.group("r1"), match.group("r2"), verdict, "r1reward", "",
                          {"original_id": row.get("id")} if row.get("id") is not None else {})


def _label(value: Any, ctx: _Ctx, line: int, key: str) -> int:
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


def _pairs(row: dict, ctx: _Ctx, line: int) -> PreferencePair:
    cmap = ctx.column_map
    col = lambda name: cmap.get(name, name)  # noqa: E731 - tiny local alias
    if _uses_chosen(row, cmap):
        r1, r2 = _get(row, col("chosen"), ctx, line), _get(row, col("rejected"), ctx, line)
        label = 1
    else:
        r1, r2 = _get(row, col("response_1"), ctx, line), _get(row, col("response_2"), ctx, line)
        label = _label(_get(row, col("label"), ctx, line, (int, float, str)), ctx, line, col("label"))
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
               else _as_id(row.get(col("id")), ctx, line, col("id")))
    return PreferencePair(pair_id,
                          _images(row.get(image_col), ctx, line, image_col),
                          _get(row, col("question"), ctx, line), r1, r2, label, source, category, meta)


_ADAPTERS: dict[str, Callable[[dict, _Ctx, int], PreferencePair]] = {
    "vlrewardbench": _vlrewardbench, "mmrb": _mmrb, "mmrlhf": _mmrlhf, "r1reward": _r1reward, "pairs": _pairs,
}
# Fields that identify a format (any one set suffices); used to catch a wrong --format.
_SIGNATURES = {
    "vlrewardbench": [("id", "query", "response", "human_ranking"), ("id", "prompt", "chosen", "rejected", "image")],
    "mmrb": [("ID", "Text", "Output1", "Output2", "Better")],
    "mmrlhf": [("id", "prompt", "chosen", "rejected")],
    "r1reward": [("message", "answer")],
}


def _check_format(fmt: str, row: dict, ctx: _Ctx, line: int) -> None:
    if fmt == "pairs":
        cmap = ctx.column_map
        wanted = [cmap.get(k, k) for k in ("question",)] + (
            [cmap.get("chosen", "chosen"), cmap.get("rejected", "rejected")]
            if _uses_chosen(row, cmap)
            else [cmap.get(k, k) for k in ("response_1", "response_2", "label")])
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
_ID_FIELDS = {"vlrewardbench": "id", "mmrb": "ID", "r1reward": "id"}


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
    ctx = _Ctx(str(path), base.resolve(), allow_absolute_paths, dict(column_map or {}), [], limits=limits)
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

    result = LoadResult(pairs=[], warnings=ctx.warnings)
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
            pair = adapter(row, ctx, line)
            if line in repeats.index:
                pair.meta = {**pair.meta, "original_id": pair.meta.get("original_id", pair.id)}
                pair.id = f"{pair.id}#{repeats.index[line]}"
            result.warnings.extend(pair.validate(ctx.file, line))
            if pair.id in seen:
                raise DataError(ctx.file, line, "id", f"duplicate id '{pair.id}' (first at {unit} {seen[pair.id]})")
            seen[pair.id] = line
            result.pairs.append(pair)
        except DataError as exc:
            if on_error == "fail":
                raise
            result.skipped.append(exc.as_dict())
    return result
