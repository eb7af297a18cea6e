"""Abstention by entropy in `egt eval`: risk-coverage per view and entropy metric, AURC, figures.

A judge may abstain on the pairs it is least sure of. For each view of `egt eval` (chosen
first, chosen second, both orders, random order) and each entropy metric, a pair's
uncertainty is the mean over the view's judgements of their per-judgement values (answer,
sentence, mean, max: egt.model.entropy, stored in judgements.jsonl), plus, with samples > 1, the
vote entropy of the view's choices (no verdict counts as its own outcome). Moving the
threshold traces the risk-coverage curve of egt.core.selective (`risk_coverage`, `aurc`,
`selective_accuracy`): accuracy on the pairs kept against the share kept.

    metrics.json "abstention": {"coverages": [1, 0.9, 0.8, 0.5], "views": {view: {metric:
        {"aurc", "accuracy_at": {"0.8": ...}, "coverage_at": {"0.8": ...}}}}}
    risk_coverage.json         the curves (threshold, coverage, accuracy) per view and metric
    risk_coverage_<view>.png   accuracy vs coverage per metric (headline and both-order views)

An undefined value (a judgement without an answer token) is left out of the mean; a pair with
none counts as the most uncertain. Run without stored entropies (a scripted judge), the
entropy metrics are left out. Departure: the paper uses entropy to curate training data only;
abstaining at evaluation time is egt's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from egt.core import selective
from egt.core.files import write_json

COVERAGES = (1.0, 0.9, 0.8, 0.5)
PER_JUDGEMENT = ("answer", "sentence", "mean", "max")
FIGURE_VIEWS = ("chosen_first", "random", "both_orders")


def view_orders(row: dict, view: str) -> list[str]:
    if view == "both_orders":
        return ["chosen_first", "chosen_second"]
    if view == "random":
        return [row["order"]]
    return [view]


def uncertainties(rows: list[dict], view: str, metric: str) -> list[float | None] | None:
    """A pair's uncertainty in a view (see the module docstring); None when a judgement lacks entropies."""
    from egt.model.entropy import vote_entropy

    values: list[float | None] = []
    for row in rows:
        judged = [row["judgements"][order] for order in view_orders(row, view)]
        if metric == "vote":
            values.append(vote_entropy([c for j in judged for c in j["choices"]]))
            continue
        if any(j.get("entropies_nats") is None for j in judged):
            return None
        defined = [v for j in judged for v in j["entropies_nats"][metric] if v is not None]
        values.append(float(np.mean(defined)) if defined else None)
    return values


def _metrics(samples: int) -> tuple[str, ...]:
    return PER_JUDGEMENT + (("vote",) if samples > 1 else ())


def _per_view(rows: list[dict], view_correct: dict[str, list[bool]], samples: int):
    for view, correct in view_correct.items():
        for metric in _metrics(samples):
            u = uncertainties(rows, view, metric)
            if u is not None:
                yield view, metric, u, correct


def abstention_summary(rows: list[dict], view_correct: dict[str, list[bool]], samples: int) -> dict | None:
    """AURC and accuracy at each of COVERAGES, per view and metric; None when no metric is available."""
    views: dict[str, dict] = {}
    for view, metric, u, correct in _per_view(rows, view_correct, samples):
        at = {f"{c:g}": selective.selective_accuracy(u, correct, c) for c in COVERAGES}
        views.setdefault(view, {})[metric] = {
            "aurc": selective.aurc(u, correct),
            "accuracy_at": {k: v["accuracy"] for k, v in at.items()},
            "coverage_at": {k: v["coverage"] for k, v in at.items()}}
    return {"coverages": list(COVERAGES), "views": views} if views else None


def abstention_markdown(summary: dict | None, titles: dict[str, str]) -> list[str]:
    """The metrics.md section (empty without a summary)."""
    from egt.reporting.tables import markdown_table

    if not summary:
        return []
    headers = ["view", "metric", "AURC"] + [f"accuracy at {c:.0%}" for c in summary["coverages"]]
    table = [[titles.get(view, view), metric, values["aurc"]]
             + [values["accuracy_at"][f"{c:g}"] for c in summary["coverages"]]
             for view, metrics in summary["views"].items() for metric, values in metrics.items()]
    figures = [f"![risk-coverage, {titles.get(v, v)}](risk_coverage_{v}.png)" for v in summary["views"]
               if v in FIGURE_VIEWS]
    return ["## Abstention by entropy", "",
            "The judge keeps the pairs whose entropy (nats, mean over the view's judgements) is lowest and "
            "abstains on the rest; accuracy on the kept pairs at each coverage (pairs with equal entropy are "
            "kept together, so the coverage reached can be higher), and AURC, the area under risk "
            "(1 - accuracy) over coverage: lower is better. Curves in `risk_coverage.json`.", "",
            markdown_table(headers, table, digits=4), *figures, ""]


def write_risk_coverage(rows: list[dict], view_correct: dict[str, list[bool]], samples: int, out: Path,
                        titles: dict[str, str]) -> list[Path]:
    """risk_coverage.json and one figure per headline / both-order view; nothing without a metric."""
    from egt.reporting.tables import line_plot

    curves: dict[str, dict] = {}
    for view, metric, u, correct in _per_view(rows, view_correct, samples):
        curves.setdefault(view, {})[metric] = selective.risk_coverage(u, correct)
    if not curves:
        return []
    written = [write_json(curves, Path(out) / "risk_coverage.json")]
    for view, metrics in curves.items():
        if view not in FIGURE_VIEWS:
            continue
        full = next(iter(metrics.values()))["accuracy"][-1]
        written.append(line_plot(
            {metric: (c["coverage"], c["accuracy"]) for metric, c in metrics.items()},
            Path(out) / f"risk_coverage_{view}.png", title=f"Risk-coverage: {titles.get(view, view)}",
            xlabel="coverage (share of pairs the judge keeps)", ylabel="accuracy on the kept pairs",
            reference=full, reference_label="no abstention", ylim=(0.0, 1.02), marker=None))
    return written
