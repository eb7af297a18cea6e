"""`egt data convert`: a benchmark or preference dataset -> an egt pairs file.

    egt data convert --format vlrewardbench --input vl.parquet --output runs/vl/pairs.parquet
    egt data convert --format mmrb --input multimodal_rewardbench/data/all_data.json \\
        --output mmrb.parquet --on-error skip --swap      # images/... resolve against data/
    egt data convert --format mmrlhf --input mm_reward_bench.jsonl --image-root /data/mm-rlhf \\
        --output mmrlhf.parquet
    egt data convert --format vlfeedback --input VLFeedback/train.parquet --image-root vlf_images/ \\
        --output vlf.parquet --exclude vlrb.parquet     # leave out the pairs VL-RewardBench holds
    egt data convert --format pairs --input my.jsonl --output pairs.parquet \\
        --column-map '{"question": "prompt", "chosen": "win", "rejected": "lose", "image": "img"}'

Formats and the conventions (order, label, category, ids, images) are in `egt.data.readers` (benchmarks,
generic pairs) and `egt.data.training_sets` (training sets); conversation-style prompts and responses
follow egt.data.conversations. Output is Parquet unless the suffix is .jsonl/.json; image
paths are written absolute, embedded images as bytes. A Parquet output records
the folder that holds its images (egt.core.records), so later stages read it from
anywhere; a JSONL output with absolute paths outside its own folder needs
`image_root=<that folder>` in the stages that read it. `--swap` also writes
every pair in the other order (`PreferencePair.swapped`: label flipped, id
suffixed `::swap`), right after the original.

What is left out, and why (every count is printed, by reason):
- bad records: with `--on-error skip` they go to `<output stem>.skipped.jsonl` beside the output (file,
  line, field, reason; written even when empty); with `fail` (default) the first one stops the run with
  exit status 1.
- pairs a format's own pairing rule leaves out (VLFeedback ties and unrated completions, UnifiedReward
  ties and image-generation rows) and pairs found in an `--exclude` benchmark (egt.data.dedup): these are
  not errors, they never stop the run; they go to `<output stem>.dropped.jsonl` (file, line, id, reason),
  written whenever the format can drop pairs or `--exclude` is given, even when empty.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from egt.core.config import StageConfig
from egt.core.errors import DataError
from egt.core.records import write_pairs, write_rows
from egt.data.dedup import DEFAULT_MAX_DISTANCE, exclude_benchmark_pairs
from egt.data.readers import load_benchmark

# formats whose pairing rule can leave pairs out (their dropped report is always written)
DROPPING_FORMATS = ("vlfeedback", "unifiedreward")


class Config(StageConfig):
    format: Literal["vlrewardbench", "mmrb", "mmrlhf", "r1reward", "rlaifv", "vlfeedback", "povid",
                    "unifiedreward", "pairs"] = Field(
        description="reader: a benchmark (vlrewardbench, mmrb, mmrlhf), a training set (mmrlhf's dpo_pairs.jsonl, "
                    "rlaifv, vlfeedback, povid, unifiedreward, r1reward), or generic 'pairs'")
    input: Path = Field(description="JSONL / JSON / Parquet file or a datasets.save_to_disk folder")
    output: Path = Field(description="pairs file to write (.parquet, or .jsonl)")
    image_root: Path | None = Field(None, description="folder relative image paths resolve against "
                                                      "(default: the input's folder)")
    allow_absolute_paths: bool = Field(False, description="accept absolute image paths outside the image root")
    on_error: Literal["fail", "skip"] = Field("fail", description="stop at the first bad record, or skip "
                                                                  "it into <output stem>.skipped.jsonl")
    swap: bool = Field(False, description="also write every pair in the other order (id suffix ::swap)")
    column_map: dict[str, str] | None = Field(None, description="pairs only: JSON {egt_field: column}")
    exclude: list[Path] = Field(default_factory=list, description="benchmark pairs files (egt data convert "
                                "outputs): leave out the pairs whose images and question appear in one of them")
    exclude_max_distance: int = Field(DEFAULT_MAX_DISTANCE, ge=0, le=64, description="bits (of 64) two images' "
                                      "difference hashes may differ by and still count as the same picture")

    @field_validator("column_map", mode="before")
    @classmethod
    def _json_column_map(cls, value):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON object like '{{\"question\": \"prompt\"}}' ({exc.msg})") from None
        return value

    @field_validator("exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, (str, Path)) else value


def report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".skipped.jsonl")


def dropped_path(output: Path) -> Path:
    return output.with_name(output.stem + ".dropped.jsonl")


def reason_counts(rows: list[dict]) -> Counter:
    """Rows grouped by the kind of reason: its text up to the first ':' or ' (' (paths and values cut),
    prefixed by the field when there is one."""
    def kind(row: dict) -> str:
        reason = re.split(r":| \(", str(row.get("reason", "")), maxsplit=1)[0].strip()
        return f"{row['field']}: {reason}" if row.get("field") else reason
    return Counter(kind(row) for row in rows)


def _print_counts(headline: str, rows: list[dict]) -> None:
    print(headline + (", by reason:" if rows else ""))
    for reason, n in reason_counts(rows).most_common():
        print(f"  {n:>7}  {reason}")


def run(cfg: Config) -> Path:
    result = load_benchmark(cfg.format, cfg.input, cfg.image_root, cfg.on_error, cfg.column_map,
                            cfg.allow_absolute_paths)
    n_read = len(result.pairs)
    dropped = list(result.dropped)
    pairs = result.pairs
    if cfg.exclude:
        pairs, excluded = exclude_benchmark_pairs(pairs, cfg.exclude, str(cfg.input), cfg.exclude_max_distance)
        dropped += excluded
    if cfg.on_error == "skip":
        write_rows(result.skipped, report_path(cfg.output))
    if dropped or cfg.exclude or cfg.format in DROPPING_FORMATS:
        write_rows(dropped, dropped_path(cfg.output))
    for warning in result.warnings[:10]:
        print(f"warning: {warning}")
    if len(result.warnings) > 10:
        print(f"warning: ... and {len(result.warnings) - 10} more warnings")
    if not pairs:
        raise DataError(str(cfg.input), None, None,
                        f"no valid records ({len(result.skipped)} skipped, {len(dropped)} pairs left out; see "
                        f"{report_path(cfg.output)} and {dropped_path(cfg.output)})")
    pairs = [q for p in pairs for q in ((p, p.swapped()) if cfg.swap else (p,))]
    write_pairs(pairs, cfg.output)
    print(f"converted {n_read} pairs from {cfg.input} ({cfg.format}); wrote {len(pairs)}"
          f"{' (with swapped copies)' if cfg.swap else ''} to {cfg.output}")
    if cfg.on_error == "skip":
        _print_counts(f"skipped {len(result.skipped)} records; report: {report_path(cfg.output)}", result.skipped)
    if dropped or cfg.exclude or cfg.format in DROPPING_FORMATS:
        _print_counts(f"left out {len(dropped)} pairs; report: {dropped_path(cfg.output)}", dropped)
    print(f"warnings: {len(result.warnings)}")
    return cfg.output
