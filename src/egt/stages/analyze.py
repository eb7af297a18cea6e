"""Stage 2 evidence: do the judge's entropies flag its errors and the label noise?

    egt analyze runs/x/score/scores.parquet --output runs/x/analysis --metrics answer,max,vote

For each entropy metric (answer, sentence, mean, max, vote; hybrid with weights):
- bins by quintile and decile of the metric: count, value range and mean (nats),
  accuracy of the majority verdict against the label, and where the data carries
  ground truth (the synthetic benchmark's meta.noisy / meta.true_label) the share
  of mislabeled pairs and the accuracy against the true label;
- Spearman correlation with the K-sample accuracy (expected negative);
- AUROC for flagging pairs whose label disagrees with the majority verdict
  (`majority_error`; a tie or no verdict counts as disagreeing), for flagging
  truly mislabeled pairs (`noisy`) and the judge's real errors (`true_error`).
AUROC and Spearman come from egt.core.stats (scikit-learn and SciPy). Bins are rank
quantiles in which equal values share a bin, so a metric with many ties (vote
entropy) can leave bins empty. The score-file columns are egt.core.score_columns's.

Undefined values (NaN answer entropy: no verdict position) rank as the highest
entropy by default (`missing=highest`), or the lowest, or are left out of that
metric's numbers (`missing=drop`); the report states the policy and counts.
Writes report.md (figures embedded), analysis.json (every number), bins.csv
and PNG figures. `analyze_scores(rows)` / `write_analysis(result, dir)` are the
same without the CLI.

With `view=true` it also writes view.html (egt.reporting.view: every pair, its image and
each judgement's tokens coloured by entropy; per-token entropies from
tokens.parquet beside the scores when `egt score dump_tokens=true` wrote one)
and links the least and the most uncertain pair of each quintile of each metric
into it (`view.html#id=...`); analysis.json then holds them under `view`.
Without it the outputs are as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from egt.core.config import StageConfig
from egt.core.errors import DataError
from egt.core.files import write_json, write_text
from egt.core.records import read_rows
from egt.core.score_columns import METRICS, MetricOrHybrid, column_values, metric_label, metric_values
from egt.core.stats import auroc, spearman
from egt.stages.curriculum import quantile_bins, resolve_missing, sort_by_value

DEFAULT_METRICS = METRICS
BIN_SCHEMES = {"quintiles": 5, "deciles": 10}


# ------------------------------------------------------------------ statistics

def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else float("nan")


def bin_table(values: np.ndarray, k: int, correct: np.ndarray, missing: str,
              noisy: np.ndarray | None = None, true_correct: np.ndarray | None = None) -> list[dict]:
    """One dict per quantile bin (0 = lowest entropy); NaN values (if kept) are counted apart."""
    bins = quantile_bins(values, k, missing)
    out = []
    for b in range(k):
        mask = bins == b
        finite = values[mask][np.isfinite(values[mask])]
        row = {"bin": b + 1, "count": int(mask.sum()),
               "low_nats": float(finite.min()) if finite.size else float("nan"),
               "high_nats": float(finite.max()) if finite.size else float("nan"),
               "mean_nats": float(finite.mean()) if finite.size else float("nan"),
               "n_missing": int(np.isnan(values[mask]).sum()),
               "majority_accuracy": _share(correct[mask])}
        if noisy is not None:
            row["noisy_share"] = _share(noisy[mask])
        if true_correct is not None:
            row["true_accuracy"] = _share(true_correct[mask])
        out.append(row)
    return out


# ------------------------------------------------------------------ analysis

def _ground_truth(rows: list[dict], key: str):
    metas = [r.get("meta") if isinstance(r.get("meta"), dict) else {} for r in rows]
    if not rows or not all(key in m and m[key] is not None for m in metas):
        return None
    return [m[key] for m in metas]


def analyze_scores(rows: list[dict], metrics=DEFAULT_METRICS, missing: str = "highest",
                   weights: dict[str, float] | None = None, file: str = "<scores>") -> dict:
    """Every number of the analysis (no files). Top-level keys: n_pairs, missing, metrics,
    overall, spearman[metric], auroc[metric][target], bins[metric][scheme], n_missing[metric],
    headline, per_pair (values the figures need)."""
    if not rows:
        raise DataError(file, None, None, "score file has no rows")
    metrics = list(metrics)
    labels = column_values(rows, "label", file).astype(int)
    majority = column_values(rows, "majority_verdict", file)
    k_accuracy = column_values(rows, "k_accuracy", file)
    correct = majority == labels
    noisy_list = _ground_truth(rows, "noisy")
    noisy = np.array([bool(v) for v in noisy_list]) if noisy_list is not None else None
    true_list = _ground_truth(rows, "true_label")
    true_correct = majority == np.array([int(v) for v in true_list]) if true_list is not None else None

    targets = {"majority_error": ~correct}
    if noisy is not None:
        targets["noisy"] = noisy
    if true_correct is not None:
        targets["true_error"] = ~true_correct

    result = {
        "n_pairs": len(rows), "missing": missing, "metrics": metrics,
        "columns": {m: metric_label(m) for m in metrics},
        "weights": weights, "noise_known": noisy is not None, "true_label_known": true_correct is not None,
        "overall": {"majority_accuracy": _share(correct), "k_accuracy_mean": float(np.nanmean(k_accuracy)),
                    "noisy_share": _share(noisy) if noisy is not None else None,
                    "true_accuracy": _share(true_correct) if true_correct is not None else None},
        "spearman": {}, "auroc": {}, "bins": {}, "n_missing": {}, "n_used": {},
        "per_pair": {"id": [str(r.get("id")) for r in rows], "majority_correct": correct.tolist(),
                     "noisy": noisy.tolist() if noisy is not None else None},
    }
    for metric in metrics:
        values = metric_values(rows, metric, weights or {m: 1.0 for m in DEFAULT_METRICS},
                               missing, file)
        undefined = np.isnan(values)
        use = ~undefined if missing == "drop" else np.ones(len(rows), dtype=bool)
        ranked = resolve_missing(values[use], "highest" if missing == "drop" else missing)
        result["n_missing"][metric] = int(undefined.sum())
        result["n_used"][metric] = int(use.sum())
        result["per_pair"][metric] = values.tolist()
        result["spearman"][metric] = spearman(ranked, k_accuracy[use]) if use.sum() > 1 else float("nan")
        result["auroc"][metric] = {name: auroc(ranked, target[use]) for name, target in targets.items()}
        result["bins"][metric] = {
            scheme: bin_table(values[use], k, correct[use], missing,
                              noisy[use] if noisy is not None else None,
                              true_correct[use] if true_correct is not None else None)
            for scheme, k in BIN_SCHEMES.items()}
    result["headline"] = _headline(result)
    return result


def _headline(result: dict) -> dict:
    target = "noisy" if result["noise_known"] else "majority_error"
    described = {"noisy": "truly mislabeled pairs (meta.noisy)",
                 "majority_error": "pairs whose label disagrees with the majority verdict"}[target]
    scored = {m: a[target] for m, a in result["auroc"].items() if not np.isnan(a[target])}
    if not scored:
        return {"target": target, "best_metric": None, "auroc": None,
                "text": f"No metric could be scored: no {described} or none without them."}
    best = max(scored, key=lambda m: (scored[m], -result["metrics"].index(m)))
    ranking = ", ".join(f"{m} {v:.3f}" for m, v in sorted(scored.items(), key=lambda kv: -kv[1]))
    return {"target": target, "best_metric": best, "auroc": scored[best],
            "text": f"{best} entropy best flags {described}: AUROC {scored[best]:.3f} (all: {ranking})."}


# ------------------------------------------------------------------ files

class Config(StageConfig):
    scores: Path = Field(..., description="score file from `egt score`")
    output: Path | None = Field(None, description="output folder (default: <scores folder>/analysis)")
    metrics: list[MetricOrHybrid] = Field(
        list(DEFAULT_METRICS), description="metrics to analyse (comma-separated on the command line)")
    missing: Literal["highest", "lowest", "drop"] = Field("highest", description="where undefined values rank")
    weights: dict[str, float] | None = Field(None, description="hybrid: metric -> weight (default: equal)")
    view: bool = Field(False, description="also write view.html (egt view) and link each quintile's least and "
                                          "most uncertain pairs into it")

    @field_validator("metrics", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


TARGET_TITLES = {"majority_error": "label != majority verdict", "noisy": "mislabeled (meta.noisy)",
                 "true_error": "majority verdict != true label"}


def _figures(result: dict, out: Path) -> list[tuple[str, str]]:
    """Draw the PNGs; return (caption, file name) pairs in report order."""
    from egt.reporting.tables import line_plot, split_histograms

    metrics, k = result["metrics"], BIN_SCHEMES["quintiles"]
    ticks = list(range(1, k + 1))
    labels = [f"Q{i}" for i in ticks]
    figures = []
    series = {m: (ticks, [b["majority_accuracy"] for b in result["bins"][m]["quintiles"]]) for m in metrics}
    line_plot(series, out / "accuracy_by_quintile.png", title="Majority-verdict accuracy by entropy quintile",
              xlabel="entropy quintile (Q1 = lowest entropy)", ylabel="accuracy vs label",
              ylim=(0.0, 1.05), xticks=ticks, xticklabels=labels,
              reference=result["overall"]["majority_accuracy"], reference_label="all pairs")
    figures.append(("Accuracy of the majority verdict in each entropy quintile, one line per metric.",
                    "accuracy_by_quintile.png"))
    if result["noise_known"]:
        series = {m: (ticks, [b["noisy_share"] for b in result["bins"][m]["quintiles"]]) for m in metrics}
        line_plot(series, out / "noise_by_quintile.png", title="Share of mislabeled pairs by entropy quintile",
                  xlabel="entropy quintile (Q1 = lowest entropy)", ylabel="mislabeled share",
                  ylim=(0.0, 1.05), xticks=ticks, xticklabels=labels,
                  reference=result["overall"]["noisy_share"], reference_label="all pairs")
        figures.append(("Share of truly mislabeled pairs in each entropy quintile.", "noise_by_quintile.png"))
    correct = np.array(result["per_pair"]["majority_correct"], dtype=bool)
    noisy = result["per_pair"]["noisy"]
    for m in metrics:
        values = np.array(result["per_pair"][m], dtype=float)
        unit = "score (percentile, 0..1)" if m == "hybrid" else "entropy (nats)"
        panels = [("by majority verdict", {"correct": values[correct], "incorrect": values[~correct]})]
        if noisy is not None:
            noisy_arr = np.array(noisy, dtype=bool)
            panels.append(("by label", {"clean": values[~noisy_arr], "mislabeled": values[noisy_arr]}))
        n_undefined = int(np.isnan(values).sum())
        note = f" ({n_undefined} undefined not shown)" if n_undefined else ""
        split_histograms(panels, out / f"hist_{m}.png", title=f"{m} {unit} per pair{note}", xlabel=f"{m} {unit}")
        figures.append((f"Distribution of {m} {unit}, split by correctness"
                        + (" and by label noise." if noisy is not None else "."), f"hist_{m}.png"))
    return figures


def quintile_examples(result: dict) -> dict:
    """Per metric, per quintile: the least and the most uncertain pair ({id, value}; None if the bin is empty).

    Pairs are ranked as the bins rank them: undefined values per `missing`, ties by id.
    """
    ids = np.array(result["per_pair"]["id"], dtype=object)
    k, missing = BIN_SCHEMES["quintiles"], result["missing"]
    out = {}
    for metric in result["metrics"]:
        values = np.array(result["per_pair"][metric], dtype=np.float64)
        used = np.flatnonzero(~np.isnan(values) if missing == "drop" else np.ones(len(values), dtype=bool))
        bins = quantile_bins(values[used], k, missing)
        ascending = sort_by_value(values[used], ids[used], missing=missing)
        examples = []
        for b in range(k):
            members = [int(used[j]) for j in ascending if bins[j] == b]
            pick = (lambda i: {"id": str(ids[i]), "value": float(values[i])}) if members else None
            examples.append({"bin": b + 1, "least": pick(members[0]) if members else None,
                             "most": pick(members[-1]) if members else None})
        out[metric] = examples
    return out


def _view_section(result: dict) -> list[str]:
    from egt.reporting.tables import fmt, markdown_table
    from egt.reporting.view import view_link

    href = result["view"]["file"]

    def link(example, metric):
        if example is None:
            return "–"
        text = example["id"].replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
        return f"[{text}]({view_link(href, example['id'], metric)}) ({fmt(example['value'])})"

    lines = ["## Pairs to look at", "",
             f"[{href}]({href}) shows every pair: its image, question, both responses and label, and each of the K "
             "judgements with every token coloured by its entropy. Per metric and quintile, the least and the most "
             "uncertain pair (lowest and highest value, in nats):", ""]
    for metric, examples in result["view"]["examples"].items():
        rows = [[f"Q{e['bin']}", link(e["least"], metric), link(e["most"], metric)] for e in examples]
        lines += [f"### {metric}", "", markdown_table(["quintile", "least uncertain", "most uncertain"], rows), ""]
    return lines


def _bins_csv(result: dict) -> str:
    columns = ["bin", "count", "low_nats", "high_nats", "mean_nats", "n_missing", "majority_accuracy",
               "noisy_share", "true_accuracy"]
    lines = ["metric,scheme," + ",".join(columns)]
    for metric, schemes in result["bins"].items():
        for scheme, table in schemes.items():
            for row in table:
                cells = ["" if row.get(c) is None or row.get(c) != row.get(c) else f"{row[c]:.6g}" for c in columns]
                lines.append(f"{metric},{scheme}," + ",".join(cells))
    return "\n".join(lines) + "\n"


def _report_text(result: dict, figures: list[tuple[str, str]]) -> str:
    from egt.reporting.tables import markdown_table

    metrics, targets = result["metrics"], list(next(iter(result["auroc"].values())))
    policy = {"highest": "ranked as the highest entropy", "lowest": "ranked as the lowest entropy",
              "drop": "left out of that metric's numbers"}[result["missing"]]
    overall = result["overall"]
    lines = ["# Entropy analysis", "",
             f"Input: `{result.get('input', '<memory>')}` — {result['n_pairs']} pairs. "
             f"Majority-verdict accuracy {overall['majority_accuracy']:.3f}; mean K-sample accuracy "
             f"{overall['k_accuracy_mean']:.3f}"
             + (f"; mislabeled share {overall['noisy_share']:.3f}" if result["noise_known"] else "")
             + (f"; accuracy vs true label {overall['true_accuracy']:.3f}" if result["true_label_known"] else "")
             + ".", "",
             f"**Headline.** {result['headline']['text']}", "",
             f"Undefined values (NaN, e.g. no verdict position for the answer token) are {policy} "
             f"(missing={result['missing']}); counts per metric: "
             + ", ".join(f"{m} {result['n_missing'][m]}" for m in metrics) + ".", "",
             "## Summary", "",
             "Spearman rho with K-sample accuracy (negative = higher entropy, lower accuracy); "
             "AUROC of the metric (higher value = flagged) for each target.", ""]
    headers = ["metric", "Spearman rho"] + [f"AUROC: {TARGET_TITLES[t]}" for t in targets] + ["undefined"]
    rows = [[m, result["spearman"][m]] + [result["auroc"][m][t] for t in targets] + [result["n_missing"][m]]
            for m in metrics]
    lines += [markdown_table(headers, rows), "## Figures", ""]
    for caption, name in figures:
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    if result.get("view"):
        lines += _view_section(result)
    for scheme in BIN_SCHEMES:
        lines += [f"## Bins by {scheme[:-1]} (1 = lowest entropy)", "",
                  "Equal values share a bin, so a metric with many ties (vote entropy) can leave bins "
                  "empty (–); `n_missing` counts undefined values placed in the bin.", ""]
        for m in metrics:
            table = result["bins"][m][scheme]
            keys = ["bin", "count", "low_nats", "high_nats", "mean_nats", "n_missing", "majority_accuracy"]
            keys += [c for c in ("noisy_share", "true_accuracy") if c in table[0]]
            lines += [f"### {m} ({result['columns'][m]})", "",
                      markdown_table(keys, [[row[c] for c in keys] for row in table]), ""]
    return "\n".join(lines)


def write_analysis(result: dict, output_dir: str | Path) -> Path:
    """report.md, analysis.json (every number except per-pair values), bins.csv and PNG figures."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(result, out)
    write_json({k: v for k, v in result.items() if k != "per_pair"} | {"figures": [f for _, f in figures]},
               out / "analysis.json")
    write_text(_bins_csv(result), out / "bins.csv")
    write_text(_report_text(result, figures), out / "report.md")
    return out


def run(cfg: Config) -> Path:
    rows = read_rows(cfg.scores)
    result = analyze_scores(rows, cfg.metrics, cfg.missing, cfg.weights, str(cfg.scores))
    result["input"] = str(Path(cfg.scores).resolve())
    out = Path(cfg.output or Path(cfg.scores).parent / "analysis")
    if cfg.view:
        from egt.reporting.view import write_view

        write_view(cfg.scores, out / "view.html")
        result["view"] = {"file": "view.html", "examples": quintile_examples(result)}
    return write_analysis(result, out)
