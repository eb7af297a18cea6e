"""Pool the per-seed claims of several `egt demo --seeds N` studies (e.g. one per machine) into one table.

    python benchmarks/pool_studies.py docs/results/study_f50_summary.md docs/results/study_f50b_summary.md \
        docs/results/study_f50c_summary.md --names A B C

Reads the "per seed" column of each summary's paired-comparison table (the both-order accuracy difference of
each independent training run on its own clean test split) and prints, per comparison and per study and
pooled over all of them, the mean, the Student-t 95% interval over the runs (egt.core.stats.runs_interval:
one observation per run) and the verdict egt.demo.claims gives it (reproduced / reversed only with >= 3 runs
and an interval that excludes 0). Nothing is re-run: the numbers are the summaries'.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from egt.core.stats import runs_interval  # noqa: E402
from egt.demo.claims import MIN_RUNS  # noqa: E402


def per_seed_rows(path: Path) -> dict[str, list[float]]:
    """comparison -> per-seed differences, from the first table with a 'per seed' column."""
    rows, header = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            if header is not None and rows:
                break
            continue
        if "per seed" in cells and "comparison" in cells:
            header = cells
            continue
        if header is None or set(line) <= set("|- "):
            continue
        values = re.findall(r"[+-]?\d+\.\d+", cells[header.index("per seed")])
        rows[cells[header.index("comparison")]] = [float(v) for v in values]
    if not rows:
        raise SystemExit(f"{path}: no table with a 'per seed' column")
    return rows


def describe(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return f"{diffs[0]:+.3f} (one run)" if diffs else "n/a"
    mean, low, high = runs_interval(diffs)
    if len(diffs) >= MIN_RUNS and (low > 0 or high < 0):
        word = "reproduced" if low > 0 else "reversed"
    else:
        word = "inconclusive" if len(diffs) >= MIN_RUNS else f"{len(diffs)} runs: no claim"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] {word}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summaries", nargs="+", type=Path)
    parser.add_argument("--names", nargs="+", help="a short name per summary (default: file stems)")
    args = parser.parse_args(argv)
    names = args.names or [p.stem for p in args.summaries]
    if len(names) != len(args.summaries):
        raise SystemExit("give one name per summary")
    studies = [per_seed_rows(p) for p in args.summaries]
    comparisons = list(dict.fromkeys(c for s in studies for c in s))
    header = ["comparison"] + [f"{n} ({len(next(iter(s.values())))} runs)" for n, s in zip(names, studies)]
    header.append(f"pooled ({sum(len(next(iter(s.values()))) for s in studies)} runs)")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for comparison in comparisons:
        cells = [describe(s.get(comparison, [])) for s in studies]
        pooled = [d for s in studies for d in s.get(comparison, [])]
        print(f"| {comparison} | " + " | ".join(cells) + f" | {describe(pooled)} |")
    print()
    print("Rerun: python benchmarks/pool_studies.py " + " ".join(str(p) for p in args.summaries)
          + (" --names " + " ".join(names) if args.names else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
