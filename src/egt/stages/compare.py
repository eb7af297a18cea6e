"""`egt compare`: several `egt eval` runs side by side, one column per run (no model needed).

    egt compare runs/a/eval/vlrb runs/b/eval/vlrb                  # prints the table
    egt compare runs/a/eval/vlrb runs/b/eval/vlrb --output cmp/    # and writes cmp/compare.md

Rows: the pairs, every headline metric of `metrics.json` ("overall"), and the accuracy per category
of each run's headline view. A run is an eval output folder or its metrics.json. For paired tests
between two judges on the same pairs, see egt.core.stats.compare_paired (the demo report uses it).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator

from egt.core.config import StageConfig
from egt.core.errors import EgtError
from egt.core.files import write_text
from egt.reporting.tables import markdown_table


class Config(StageConfig):
    runs: list[str] = Field(..., min_length=1, description="eval run folders (or their metrics.json) to compare")
    output: Path | None = Field(None, description="folder for compare.md (default: print only)")

    @field_validator("runs", mode="before")
    @classmethod
    def _split_runs(cls, value):
        if isinstance(value, str):  # `runs=a,b` arrives as one string
            return [v for v in value.replace(",", " ").split() if v]
        return value


def _load_run(run: str) -> dict:
    path = Path(run)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.exists():
        raise EgtError(f"{run}: no metrics.json (expected an `egt eval` output folder)")
    return json.loads(path.read_text())


def compare_table(runs: list[str]) -> str:
    """Headline metrics and per-category accuracy of several runs, one column per run."""
    results = [_load_run(r) for r in runs]
    names = [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in runs]
    if len(set(names)) < len(names):
        names = list(runs)
    keys = list(dict.fromkeys(k for res in results for k in res["overall"]))
    headers = ["metric"] + [f"{name} ({res['benchmark']})" for name, res in zip(names, results)]
    table = [["pairs"] + [res["n_pairs"] for res in results]]
    table += [[k] + [res["overall"].get(k) for res in results] for k in keys]
    cats = list(dict.fromkeys(c for res in results for c in res["views"][res["headline_view"]]["categories"]))
    for c in cats:
        table.append([f"accuracy: {c}"] + [res["views"][res["headline_view"]]["categories"].get(c, {}).get("accuracy")
                                           for res in results])
    return markdown_table(headers, table, digits=4)


def run(cfg: Config) -> Path | None:
    table = compare_table(cfg.runs)
    print(table)
    if cfg.output is None:
        return None
    return write_text(table, Path(cfg.output) / "compare.md")
