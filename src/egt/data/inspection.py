"""`egt data inspect PAIRS [--tokenizer MODEL_DIR] [--check-images] [--summary out.json]`: what is in a pairs file.

Run it before any money is spent (a teacher's tokens, GPU hours). It prints, and `--summary` writes as JSON:

- counts by source, category and label, and the label balance per source (a chosen-first source is
  all label 1: evaluate both orders, or swap);
- images per pair (0 = text-only pairs);
- image sizes: width, height and megapixels (min / median / max) over the distinct images, and how
  many exceed `large_image_megapixels` (default 12.85 MP: the Qwen2-VL / Qwen2.5-VL processors'
  default `max_pixels`, 12,845,056, above which they downscale). Sizes come from the image headers
  only (`image_size`): nothing is decoded, so a 100k-image set takes seconds to minutes;
- response lengths in characters (question, chosen, rejected), and in tokens when `--tokenizer` names
  a model folder (plus the judge prompt's text: egt.core.prompts.judge_prompt_text, without the chat
  template or image tokens) -- length bias and `max_length` show up here;
- duplicates: exact duplicate pairs (same images, question, responses and label; the id ignored),
  prompts (images + question) shared by several pairs, pairs whose two responses are identical.
  Swapped copies (`meta.swapped_from`, from `--swap`) are left out of the duplicate counts;
- missing or unreadable images (header check: file absent, not an image, outside the image root,
  over PIL's decompression-bomb limit), and how many images exceed `max_image_pixels` (the cap every
  command applies: they would be refused, or shrunk with `downscale_images`). `--check-images` also
  decodes every image through egt.core.images (above `max_image_pixels` it is a problem, or with
  `downscale_images` it is decoded shrunk) and then exits with status 1 if any image failed.

`run` returns the summary JSON path when `--summary` is given, else the input path (nothing heavy is
written).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from pydantic import Field
from tqdm import tqdm

from egt.core.config import StageConfig
from egt.core.errors import ConfigError, DataError
from egt.core.files import write_json
from egt.core.images import DEFAULT_LIMITS, ImageLimits, ImageOptions, image_size
from egt.core.prompts import judge_prompt_text
from egt.core.records import ImageRef, PreferencePair, read_pairs

QWEN_MAX_PIXELS = 12_845_056   # Qwen2-VL / Qwen2.5-VL image processors' default max_pixels


class Config(StageConfig, ImageOptions):
    input: Path = Field(description="pairs file (.parquet or .jsonl)")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside "
                                                      "(default: the pairs file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    check_images: bool = Field(False, description="decode every image; exit 1 if any is missing, broken or above "
                                                  "max_image_pixels")
    tokenizer: Path | None = Field(None, description="model folder whose tokenizer counts response lengths in tokens")
    large_image_megapixels: float = Field(QWEN_MAX_PIXELS / 1e6, gt=0,
                                          description="count the distinct images above this size")
    summary: Path | None = Field(None, description="also write the counts as JSON here")
    progress: bool = True


# ------------------------------------------------------------------ images


def header_size(ref: ImageRef) -> tuple[int, int]:
    """(width, height) from the image header (egt.core.images.image_size): nothing is decoded. A path
    outside its image root is refused (DataError) before the file is touched."""
    return image_size(ref.source)


def image_key(ref: ImageRef) -> str:
    """What makes two image references the same image: the path, or the digest of embedded bytes."""
    return ref.path if ref.data is None else "sha256:" + hashlib.sha256(ref.data).hexdigest()


def _stats(values: list[float], digits: int = 1) -> dict:
    if not values:
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0}
    return {"min": min(values), "median": float(statistics.median(values)),
            "mean": round(statistics.fmean(values), digits), "max": max(values)}


def image_report(pairs: list[PreferencePair], large_mp: float, progress: bool = True,
                 limits: ImageLimits = DEFAULT_LIMITS) -> tuple[dict, list[dict]]:
    """(size statistics over the distinct images, one {id, image, path, reason} per unreadable reference)."""
    sizes: dict[str, tuple[int, int] | str] = {}
    problems = []
    n_refs = 0
    for pair in tqdm(pairs, desc="reading image headers", disable=not progress):
        for index, ref in enumerate(pair.images):
            n_refs += 1
            key = image_key(ref)
            if key not in sizes:
                try:
                    sizes[key] = header_size(ref)
                except DataError as exc:
                    sizes[key] = exc.reason
            if isinstance(sizes[key], str):
                problems.append({"id": pair.id, "image": index, "path": ref.path or "<embedded bytes>",
                                 "reason": sizes[key]})
    good = [s for s in sizes.values() if isinstance(s, tuple)]
    megapixels = [w * h / 1e6 for w, h in good]
    by_area = sorted(good, key=lambda wh: wh[0] * wh[1])
    report = {"n_references": n_refs, "n_distinct": len(sizes), "n_readable": len(good),
              "smallest": "%dx%d" % by_area[0] if by_area else None,
              "largest": "%dx%d" % by_area[-1] if by_area else None,
              "width": _stats([w for w, _ in good]), "height": _stats([h for _, h in good]),
              "megapixels": {k: round(v, 4) for k, v in _stats(megapixels, 4).items()},
              "large_threshold_megapixels": large_mp, "n_large": sum(mp > large_mp for mp in megapixels),
              "max_image_pixels": limits.max_pixels, "downscale_images": limits.downscale,
              "n_above_max_image_pixels": sum(w * h > limits.max_pixels for w, h in good)}
    return report, problems


def check_images(pairs: list[PreferencePair], progress: bool = True) -> list[dict]:
    """Decode every image; one {id, image, reason} row per image that fails."""
    problems = []
    for pair in tqdm(pairs, desc="checking images", disable=not progress):
        for index, ref in enumerate(pair.images):
            try:
                ref.open()
            except DataError as exc:
                name = ref.path or "<embedded bytes>"
                problems.append({"id": pair.id, "image": index, "path": name,
                                 "reason": exc.reason.removeprefix(f"image {name}: ")})
    return problems


# ------------------------------------------------------------------ text


def token_lengths(tokenizer_dir: Path, texts: list[str], batch: int = 256) -> list[int]:
    """Token count of each text under the tokenizer of a local model folder (no special tokens)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as exc:  # transformers raises OSError / ValueError / others for a folder without one
        raise ConfigError(f"{tokenizer_dir}: no tokenizer could be loaded from this folder "
                          f"({exc.__class__.__name__}); give a model folder holding tokenizer files") from None
    out = []
    for start in range(0, len(texts), batch):
        out += [len(ids) for ids in tokenizer(texts[start:start + batch], add_special_tokens=False)["input_ids"]]
    return out


def duplicates(pairs: list[PreferencePair]) -> dict:
    """Exact duplicate pairs, prompts shared by several pairs, pairs with identical responses."""
    originals = [p for p in pairs if "swapped_from" not in p.meta]
    exact = Counter((tuple(image_key(r) for r in p.images), p.question, p.response_1, p.response_2, p.label)
                    for p in originals)
    prompts = Counter((tuple(image_key(r) for r in p.images), p.question.strip()) for p in originals)
    shared = {k: n for k, n in prompts.items() if n > 1}
    return {"exact_duplicate_pairs": sum(n - 1 for n in exact.values()),
            "prompts_in_several_pairs": len(shared), "pairs_sharing_a_prompt": sum(shared.values()),
            "largest_prompt_group": max(prompts.values(), default=0),
            "identical_responses": sum(p.response_1.strip() == p.response_2.strip() for p in originals)}


# ------------------------------------------------------------------ summary


def summarize(pairs: list[PreferencePair], large_mp: float = QWEN_MAX_PIXELS / 1e6,
              tokenizer: Path | None = None, progress: bool = False,
              limits: ImageLimits = DEFAULT_LIMITS) -> dict:
    by_source_label: dict[str, Counter] = defaultdict(Counter)
    for p in pairs:
        by_source_label[p.source][str(p.label)] += 1
    images, problems = image_report(pairs, large_mp, progress, limits)
    summary = {
        "n_pairs": len(pairs),
        "by_source": dict(Counter(p.source for p in pairs).most_common()),
        "by_category": dict(Counter(p.category for p in pairs).most_common()),
        "by_label": {str(k): v for k, v in sorted(Counter(p.label for p in pairs).items())},
        "label_by_source": {s: {k: c[k] for k in ("1", "2")} for s, c in by_source_label.items()},
        "images_per_pair": {str(k): v for k, v in sorted(Counter(len(p.images) for p in pairs).items())},
        "image_sizes": images,
        "question_chars": _stats([len(p.question) for p in pairs]),
        "chosen_chars": _stats([len(p.chosen) for p in pairs]),
        "rejected_chars": _stats([len(p.rejected) for p in pairs]),
        "duplicates": duplicates(pairs),
        "unreadable_images": problems,
    }
    if tokenizer is not None:
        n = len(pairs)
        texts = ([p.question for p in pairs] + [p.chosen for p in pairs] + [p.rejected for p in pairs]
                 + [judge_prompt_text(p.question, p.response_1, p.response_2) for p in pairs])
        lengths = token_lengths(tokenizer, texts)
        summary["tokenizer"] = str(tokenizer)
        for i, name in enumerate(("question", "chosen", "rejected", "judge_prompt")):
            summary[f"{name}_tokens"] = _stats(lengths[i * n:(i + 1) * n])
    return summary


def _table(title: str, counts: dict, total: int) -> list[str]:
    width = max([len(title)] + [len(str(k) or "(none)") for k in counts])
    lines = ["", f"{title:<{width}}  {'count':>7}  {'share':>6}"]
    for name, count in counts.items():
        lines.append(f"{(str(name) or '(none)'):<{width}}  {count:>7}  {count / max(total, 1):>6.1%}")
    return lines


def format_summary(summary: dict) -> str:
    n = summary["n_pairs"]
    lines = [f"pairs: {n}"]
    for title, key in (("source", "by_source"), ("category", "by_category"), ("label", "by_label"),
                       ("images/pair", "images_per_pair")):
        lines += _table(title, summary[key], n)
    sources = summary["label_by_source"]
    width = max([len("label balance")] + [len(s or "(none)") for s in sources])
    lines += ["", f"{'label balance':<{width}}  {'label 1':>7}  {'label 2':>7}  {'share 1':>7}"]
    for source, counts in sources.items():
        total = counts["1"] + counts["2"]
        lines.append(f"{(source or '(none)'):<{width}}  {counts['1']:>7}  {counts['2']:>7}  "
                     f"{counts['1'] / max(total, 1):>7.1%}")
    im = summary["image_sizes"]
    lines += ["", f"images: {im['n_references']} references, {im['n_distinct']} distinct, {im['n_readable']} readable "
                  f"(sizes from headers)",
              f"{'image size':<14}  {'min':>9}  {'median':>9}  {'max':>9}"]
    for name, digits in (("width", 0), ("height", 0), ("megapixels", 3)):
        s = im[name]
        lines.append(f"{name:<14}  {s['min']:>9.{digits}f}  {s['median']:>9.{digits}f}  {s['max']:>9.{digits}f}")
    lines.append(f"smallest {im['smallest']}, largest {im['largest']} (width x height); "
                 f"images above {im['large_threshold_megapixels']:.4g} MP: {im['n_large']}")
    verb = "shrunk (downscale_images)" if im["downscale_images"] else "refused by every command"
    lines.append(f"images above max_image_pixels={im['max_image_pixels']:,}: {im['n_above_max_image_pixels']} "
                 f"({verb})")
    lines += ["", f"{'length':<22}  {'min':>7}  {'median':>8}  {'mean':>8}  {'max':>7}"]
    for unit in ("chars", "tokens"):
        for name in ("question", "chosen", "rejected", "judge_prompt"):
            s = summary.get(f"{name}_{unit}")
            if s is not None:
                lines.append(f"{name + ' (' + unit + ')':<22}  {s['min']:>7}  {s['median']:>8.1f}  {s['mean']:>8.1f}  "
                             f"{s['max']:>7}")
    d = summary["duplicates"]
    lines += ["", "duplicates",
              f"  exact duplicate pairs:        {d['exact_duplicate_pairs']}",
              f"  prompts in several pairs:     {d['prompts_in_several_pairs']} "
              f"({d['pairs_sharing_a_prompt']} pairs, largest group {d['largest_prompt_group']})",
              f"  identical response_1/2:       {d['identical_responses']}"]
    problems = summary["unreadable_images"]
    lines.append(f"\nmissing or unreadable images: {len(problems)}")
    lines.extend(f"  {p['id']} image {p['image']}: {p['path']}: {p['reason']}" for p in problems[:20])
    if len(problems) > 20:
        lines.append(f"  ... and {len(problems) - 20} more (all in --summary)")
    if "image_problems" in summary:
        decoded = summary["image_problems"]
        lines.append(f"\nimage check: {len(decoded)} problem(s)")
        lines.extend(f"  {p['id']} image {p['image']}: {p['path']}: {p['reason']}" for p in decoded)
    return "\n".join(lines)


def run(cfg: Config) -> Path:
    pairs = read_pairs(cfg.input, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    summary = summarize(pairs, cfg.large_image_megapixels, cfg.tokenizer, cfg.progress, cfg.image_limits)
    if cfg.check_images:
        summary["image_problems"] = check_images(pairs, cfg.progress)
    print(format_summary(summary))
    if cfg.summary is not None:
        write_json(summary, cfg.summary)
    problems = summary.get("image_problems") or []
    if problems:
        raise DataError(str(cfg.input), None, "images",
                        f"{len(problems)} image(s) missing, not decodable or above max_image_pixels (listed above)")
    return cfg.summary if cfg.summary is not None else cfg.input
