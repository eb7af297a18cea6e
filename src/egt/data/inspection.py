"""`egt data inspect PAIRS [--check-images] [--summary out.json]`: what is in a pairs file.

Prints counts by source, category and label, the number of images per pair,
and response lengths (characters) of the chosen and the rejected responses
(length bias shows up here). `--check-images` decodes every image (through
egt.core.images: above `max_image_pixels` it is a problem, or with
`downscale_images` it is decoded shrunk) and lists the missing, undecodable or
too large ones; if any are found the command exits with
status 1 after printing the table. `run` returns the summary JSON path when
`--summary` is given, else the input path (nothing heavy is written). An image
outside its root (`egt.core.records.resolve_image_path`) is listed as a problem.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from pydantic import Field
from tqdm import tqdm

from egt.core.config import StageConfig
from egt.core.errors import DataError
from egt.core.files import write_json
from egt.core.images import ImageOptions
from egt.core.records import PreferencePair, read_pairs


class Config(StageConfig, ImageOptions):
    input: Path = Field(description="pairs file (.parquet or .jsonl)")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside "
                                                      "(default: the pairs file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    check_images: bool = Field(False, description="decode every image; exit 1 if any is missing, broken or above "
                                                  "max_image_pixels")
    summary: Path | None = Field(None, description="also write the counts as JSON here")


def _length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0}
    return {"min": min(lengths), "median": float(statistics.median(lengths)),
            "mean": round(statistics.fmean(lengths), 1), "max": max(lengths)}


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


def summarize(pairs: list[PreferencePair]) -> dict:
    return {
        "n_pairs": len(pairs),
        "by_source": dict(Counter(p.source for p in pairs).most_common()),
        "by_category": dict(Counter(p.category for p in pairs).most_common()),
        "by_label": {str(k): v for k, v in sorted(Counter(p.label for p in pairs).items())},
        "images_per_pair": {str(k): v for k, v in sorted(Counter(len(p.images) for p in pairs).items())},
        "chosen_chars": _length_stats([len(p.chosen) for p in pairs]),
        "rejected_chars": _length_stats([len(p.rejected) for p in pairs]),
        "identical_responses": sum(p.response_1.strip() == p.response_2.strip() for p in pairs),
    }


def format_summary(summary: dict) -> str:
    lines = [f"pairs: {summary['n_pairs']}"]
    for title, key in (("source", "by_source"), ("category", "by_category"), ("label", "by_label"),
                       ("images/pair", "images_per_pair")):
        counts = summary[key]
        width = max([len(title)] + [len(str(k)) for k in counts])
        lines.append("")
        lines.append(f"{title:<{width}}  {'count':>7}  {'share':>6}")
        for name, count in counts.items():
            share = count / max(summary["n_pairs"], 1)
            lines.append(f"{(name or '(none)'):<{width}}  {count:>7}  {share:>6.1%}")
    lines.append("")
    lines.append(f"{'length (chars)':<14}  {'min':>7}  {'median':>8}  {'mean':>8}  {'max':>7}")
    for name in ("chosen", "rejected"):
        s = summary[f"{name}_chars"]
        lines.append(f"{name:<14}  {s['min']:>7}  {s['median']:>8.1f}  {s['mean']:>8.1f}  {s['max']:>7}")
    if summary["identical_responses"]:
        lines.append(f"\npairs with identical responses: {summary['identical_responses']}")
    if "image_problems" in summary:
        problems = summary["image_problems"]
        lines.append(f"\nimage check: {len(problems)} problem(s)")
        lines.extend(f"  {p['id']} image {p['image']}: {p['path']}: {p['reason']}" for p in problems)
    return "\n".join(lines)


def run(cfg: Config) -> Path:
    pairs = read_pairs(cfg.input, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    summary = summarize(pairs)
    if cfg.check_images:
        summary["image_problems"] = check_images(pairs)
    print(format_summary(summary))
    if cfg.summary is not None:
        write_json(summary, cfg.summary)
    problems = summary.get("image_problems") or []
    if problems:
        raise DataError(str(cfg.input), None, "images",
                        f"{len(problems)} image(s) missing, not decodable or above max_image_pixels (listed above)")
    return cfg.summary if cfg.summary is not None else cfg.input
