"""`egt data convert`: a benchmark or preference dataset -> an egt pairs file.

    egt data convert --format vlrewardbench --input vl.parquet --output runs/vl/pairs.parquet
    egt data convert --format mmrb --input multimodal_rewardbench/data/all_data.json \
        --output mmrb.parquet --on-error skip --swap      # images/... resolve against data/
    egt data convert --format mmrlhf --input mm_reward_bench.jsonl --image-root /data/mm-rlhf \
        --output mmrlhf.parquet
    egt data convert --format pairs --input my.jsonl --output pairs.parquet \
        --column-map '{"question": "prompt", "chosen": "win", "rejected": "lose", "image": "img"}'

Formats and the conventions (order, label, category, ids, images) are in
`egt.data.readers`. Output is Parquet unless the suffix is .jsonl/.json; image
paths are written absolute, embedded images as bytes. A Parquet output records
the folder that holds its images (egt.core.records), so later stages read it from
anywhere; a JSONL output with absolute paths outside its own folder needs
`image_root=<that folder>` in the stages that read it. `--swap` also writes
every pair in the other order (`PreferencePair.swapped`: label flipped, id
suffixed `::swap`), right after the original. With `--on-error skip` bad
records go to `<output stem>.skipped.jsonl` beside the output (file, line,
field, reason; written even when empty) and the counts are printed; with
`fail` (default) the first bad record stops the run with exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from egt.core.config import StageConfig
from egt.core.errors import DataError
from egt.core.records import write_pairs, write_rows
from egt.data.readers import load_benchmark


class Config(StageConfig):
    format: Literal["vlrewardbench", "mmrb", "mmrlhf", "r1reward", "pairs"] = Field(
        description="reader: benchmark format, or generic 'pairs'")
    input: Path = Field(description="JSONL / JSON / Parquet file or a datasets.save_to_disk folder")
    output: Path = Field(description="pairs file to write (.parquet, or .jsonl)")
    image_root: Path | None = Field(None, description="folder relative image paths resolve against "
                                                      "(default: the input's folder)")
    allow_absolute_paths: bool = Field(False, description="accept absolute image paths outside the image root")
    on_error: Literal["fail", "skip"] = Field("fail", description="stop at the first bad record, or skip "
                                                                  "it into <output stem>.skipped.jsonl")
    swap: bool = Field(False, description="also write every pair in the other order (id suffix ::swap)")
    column_map: dict[str, str] | None = Field(None, description="pairs only: JSON {egt_field: column}")

    @field_validator("column_map", mode="before")
    @classmethod
    def _json_column_map(cls, value):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON object like '{{\"question\": \"prompt\"}}' ({exc.msg})") from None
        return value


def report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".skipped.jsonl")


def run(cfg: Config) -> Path:
    result = load_benchmark(cfg.format, cfg.input, cfg.image_root, cfg.on_error, cfg.column_map,
                            cfg.allow_absolute_paths)
    n_read = len(result.pairs)
    if cfg.on_error == "skip":
        write_rows(result.skipped, report_path(cfg.output))
    for warning in result.warnings[:10]:
        print(f"warning: {warning}")
    if len(result.warnings) > 10:
        print(f"warning: ... and {len(result.warnings) - 10} more warnings")
    if not result.pairs:
        raise DataError(str(cfg.input), None, None,
                        f"no valid records ({len(result.skipped)} skipped; see {report_path(cfg.output)})")
    pairs = [q for p in result.pairs for q in ((p, p.swapped()) if cfg.swap else (p,))]
    write_pairs(pairs, cfg.output)
    print(f"converted {n_read} pairs from {cfg.input} ({cfg.format}); wrote {len(pairs)}"
          f"{' (with swapped copies)' if cfg.swap else ''} to {cfg.output}")
    if cfg.on_error == "skip":
        print(f"skipped {len(result.skipped)} records; report: {report_path(cfg.output)}")
    print(f"warnings: {len(result.warnings)}")
    return cfg.output
