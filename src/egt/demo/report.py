"""The demo's replication report (`report.md`) and the multi-seed summary (`summary.md`).

Everything here is read from the run folders the pipeline wrote; nothing is typed in
by hand. Models are compared on the SAME clean test pairs, so every claim is a paired
comparison (egt.core.stats.compare_paired): the difference in both-order accuracy, its 95%
interval (paired bootstrap over the test pairs; over seeds and pairs in the summary),
the exact McNemar p-value, and the smallest difference the test split can detect. A
claim is "reproduced" when the interval excludes zero in the paper's direction,
"reversed" when it excludes zero the other way, and otherwise "inconclusive" with the
detectable difference stated. Each claim row also carries the measurement that explains
it (the label noise of the pairs each RL run trained on, the dose-response of RL to
noise, the RL training curve).
The caller (egt.demo.pipeline) passes the pipeline and the command line that reruns it; this
module imports nothing from egt.demo.pipeline.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
from pathlib import Path

from egt import __version__
from egt.core.files import read_json, write_json, write_text
from egt.core.records import SWAP_SUFFIX, read_rows
from egt.core.score_columns import METRICS
from egt.reporting.tables import markdown_table

MODEL_LABELS = {
    "sft": "SFT (stage 1 only)",
    "a_egt": "(a) EGT: lowest entropy, ascending",
    "b_full": "(b) full pool, random order",
    "c_random": "(c) random subset, random order",
    "d_descending": "(d) lowest entropy, descending",
}
# The curated subset each RL run (a)-(d) trains on (egt.demo.pipeline.RL_RUNS).
RL_SUBSETS = {"a_egt": "curated_ascending", "b_full": "full_random", "c_random": "random_subset",
              "d_descending": "curated_descending"}
# (name, model A, model B, what the paper expects of A - B)
CLAIMS = [
    ("RL on the EGT subset (a) improves on SFT", "a_egt", "sft"),
    ("EGT (a) beats the full pool (b)", "a_egt", "b_full"),
    ("entropy selection (a) beats random selection (c)", "a_egt", "c_random"),
    ("ascending (a) beats descending (d)", "a_egt", "d_descending"),
]
DETERMINISM = ("Deterministic per machine: the same command on the same machine writes the same numbers (every "
               "stage is seeded; RL runs and evaluations use one thread each whatever the number of workers). "
               "Across machines CPU kernels round differently in the last bits, sampled judgements can then "
               "diverge, and numbers move within the seed-to-seed spread shown in the multi-seed summary.")


def dose_name(noise: float) -> str:
    return f"noise_{noise:g}"


def dose_runs(cfg) -> dict[float, str]:
    """Noise rate -> the RL run trained on the full pool labelled at that rate. The rate of the demo's
    own pool is run (b) itself (same scenes, labels and order), so it is not trained twice."""
    full_pool = "b_full" in getattr(cfg, "rl_variants", ["b_full"])
    return {noise: "b_full" if full_pool and cfg.noise == f"ambiguity:{noise}" else dose_name(noise)
            for noise in cfg.dose_response}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _read(path: Path) -> dict:
    return read_json(path) if path.exists() else {}


def _overall(run_dir: Path, model: str) -> dict:
    return _read(run_dir / "eval" / model / "metrics.json").get("overall", {})


def per_pair(run_dir: Path, model: str, field: str = "both_correct") -> dict[str, bool] | None:
    """id -> `both_correct` (or `position_consistent`) of one evaluated model, None if not evaluated."""
    path = run_dir / "eval" / model / "predictions.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: bool(r[field]) for r in rows}


def paired(run_dirs: list[Path], model_a: str, model_b: str, field: str = "both_correct") -> dict | None:
    """compare_paired over the seeds' run folders (one row per seed, pairs aligned by id)."""
    from egt.core.stats import compare_paired

    rows_a, rows_b = [], []
    for run_dir in run_dirs:
        a, b = per_pair(run_dir, model_a, field), per_pair(run_dir, model_b, field)
        if a is None or b is None:
            return None
        ids = sorted(set(a) & set(b))
        rows_a.append([a[i] for i in ids])
        rows_b.append([b[i] for i in ids])
    if len({len(r) for r in rows_a}) != 1 or not rows_a[0]:
        return None
    return compare_paired(rows_a if len(rows_a) > 1 else rows_a[0], rows_b if len(rows_b) > 1 else rows_b[0])


def _verdict(result: dict | None) -> str:
    if result is None:
        return "not measured"
    if result["verdict"] == "higher":
        return "reproduced"
    if result["verdict"] == "lower":
        return "reversed"
    return f"inconclusive (this split detects differences of about {_fmt(result['min_detectable'])})"


def _interval(result: dict | None) -> str:
    if result is None:
        return "n/a"
    return f"{result['difference']:+.3f} [{result['ci_low']:+.3f}, {result['ci_high']:+.3f}]"


def _p_values(result: dict | None) -> str:
    return "n/a" if result is None else " ".join(f"{p:.2g}" for p in result["p_values"])


# ---------------------------------------------------------------- measured context of each claim

def _subset_noise(heads: dict) -> dict[str, float]:
    subsets = heads.get("curate", {}).get("subsets", {})
    return {k: v.get("noise") for k, v in subsets.items()}


def _train_curve(run_dir: Path, model: str) -> str:
    summary = _read(run_dir / "rl" / model / "train_summary.json")
    logged = [h for h in summary.get("log_history", []) if "rewards/accuracy_reward/mean" in h]
    if not logged:
        return ""
    fifth = max(1, len(logged) // 5)
    first = statistics.fmean(h["rewards/accuracy_reward/mean"] for h in logged[:fifth])
    last = statistics.fmean(h["rewards/accuracy_reward/mean"] for h in logged[-fifth:])
    zero = statistics.fmean(h.get("frac_reward_zero_std", 0.0) for h in logged)
    return f"train accuracy reward {first:.2f} -> {last:.2f} (first / last fifth), {zero:.0%} of groups without signal"


def rl_diet(run_dir: Path, model: str) -> dict | None:
    """What one RL run trained on, from the pairs its generations consumed (`rl/<model>/consumed.jsonl`; a
    swapped copy counts as its pair) joined with the SFT judge's K samples on them (`score/scores.parquet`).

    GRPO learns only from groups whose rewards differ. A pair the SFT judge already answers as labelled in
    all K samples (`solved`) or in none (`missed`) tends to give a group without signal; the pairs whose K
    samples it splits (`split`) are where the gradient comes from, so their mislabeled share is the noise
    the update actually follows. None when the run or the scores are missing."""
    consumed, scores = run_dir / "rl" / model / "consumed.jsonl", run_dir / "score" / "scores.parquet"
    if not consumed.exists() or not scores.exists():
        return None
    seen = dict.fromkeys(pair_id.removesuffix(SWAP_SUFFIX) for line in consumed.read_text().splitlines()
                         if line.strip() for pair_id in json.loads(line)["ids"])
    by_id = {r["id"]: r for r in read_rows(scores)}
    rows = [by_id[i] for i in seen if i in by_id]
    if not rows:
        return None

    def noisy(group: list[dict]) -> float | None:   # None where the noise is unknown (no meta.noisy)
        if not group or any("noisy" not in (r.get("meta") or {}) for r in group):
            return None
        return sum(bool(r["meta"]["noisy"]) for r in group) / len(group)

    split = [r for r in rows if 0.0 < r["k_accuracy"] < 1.0]
    return {"pairs_seen": len(rows), "noise_seen": noisy(rows),
            "solved": sum(r["k_accuracy"] >= 1.0 for r in rows) / len(rows),
            "missed": sum(r["k_accuracy"] <= 0.0 for r in rows) / len(rows),
            "split_pairs": len(split), "split_noise": noisy(split), "ids": list(seen)}


def _subset_pairs(heads: dict, model: str) -> int | None:
    return heads.get("curate", {}).get("subsets", {}).get(RL_SUBSETS.get(model, ""), {}).get("pairs")


def _diet_text(diet: dict) -> str:
    return (f"{diet['pairs_seen']} pairs trained on, {_fmt(diet['noise_seen'], 2)} mislabeled; the SFT judge already "
            f"answered {diet['solved']:.0%} of them as labelled in all K samples; the {diet['split_pairs']} it split "
            f"(where GRPO's signal comes from) were {_fmt(diet['split_noise'], 2)} mislabeled")


def _context(name: str, run_dir: Path, heads: dict, slope: float | None, result: dict | None,
             diets: dict[str, dict | None]) -> str:
    """The measurement that explains a claim's outcome: the label noise of the pairs each RL run actually
    trained on (`diets`: rl_diet per run; the subset's noise when unknown), what the dose-response of RL to
    label noise predicts for their difference, the RL training curves."""
    noise = _subset_noise(heads)
    diets = {m: diets.get(m) for m in RL_SUBSETS}
    seen = {m: (d["noise_seen"] if d else noise.get(RL_SUBSETS[m])) for m, d in diets.items()}
    detectable = f"; this split detects about {_fmt(result['min_detectable'])}" if result else ""
    if name.startswith("RL on"):
        parts = [p for p in (_diet_text(diets["a_egt"]) if diets["a_egt"] else "", _train_curve(run_dir, "a_egt")) if p]
        return "; ".join(parts)
    if ("full pool" in name or "random selection" in name) and seen["a_egt"] is not None:
        other, what = ("b_full", "full pool") if "full pool" in name else ("c_random", "random subset")
        if seen[other] is None:
            return ""
        text = f"label noise of the pairs trained on {seen['a_egt']:.2f} (EGT) vs {seen[other]:.2f} ({what})"
        if slope is not None:
            text += (f"; the dose-response ({slope * 0.1:+.3f} gain per 10 points of noise) predicts "
                     f"{slope * (seen['a_egt'] - seen[other]):+.3f} from the noise difference alone{detectable}")
        return text
    if "descending" in name:
        a, d = diets["a_egt"], diets["d_descending"]
        if a and d and set(a["ids"]) != set(d["ids"]):
            total = _subset_pairs(heads, "a_egt")
            text = (f"different pairs: the RL steps cover {a['pairs_seen']} of the subset's {_fmt(total)} pairs, so "
                    f"(a) trained on its lowest-entropy pairs ({_fmt(a['noise_seen'], 2)} mislabeled) and (d) on "
                    f"its highest ({_fmt(d['noise_seen'], 2)} mislabeled): this compares pairs more than orders")
        else:
            text = "same pairs, reversed order"
        curves = [c for c in (_train_curve(run_dir, "a_egt"), _train_curve(run_dir, "d_descending")) if c]
        return text + ("; (a) " + curves[0] + "; (d) " + curves[1] if len(curves) == 2 else "")
    return ""


def _diet_section(run_dir: Path, heads: dict, diets: dict[str, dict | None]) -> list[str]:
    rows = []
    for model in RL_SUBSETS:
        diet = diets.get(model)
        if diet is None:
            continue
        curve = _read(run_dir / "rl" / model / "train_summary.json").get("log_history", [])
        zero = [h["frac_reward_zero_std"] for h in curve if "frac_reward_zero_std" in h]
        rows.append([MODEL_LABELS[model], f"{diet['pairs_seen']} of {_fmt(_subset_pairs(heads, model))}",
                     _fmt(diet["noise_seen"]), f"{diet['solved']:.0%}", f"{diet['missed']:.0%}",
                     diet["split_pairs"], _fmt(diet["split_noise"]),
                     f"{statistics.fmean(zero):.0%}" if zero else "n/a"])
    if not rows:
        return []
    return ["### What each RL run trained on", "",
            "The pool pairs each run's generations consumed (`rl/<run>/consumed.jsonl`; a pair and its swapped copy "
            "count once), with the SFT judge's K samples on them from stage 2. GRPO learns only from groups whose "
            "rewards differ: pairs the SFT judge answers as labelled in all K samples (solved) or in none (missed) "
            "mostly give groups without signal, so the mislabeled share of the pairs it splits is the noise the "
            "update follows. When the steps cover fewer pairs than a subset holds, a run trains on the head of its "
            "order only.", "",
            markdown_table(["run", "pairs trained on", "mislabeled", "SFT solved (all K)", "SFT missed (no K)",
                            "pairs split by SFT", "split pairs mislabeled", "groups without signal (RL)"], rows), ""]


def dose_response(run_dirs: list[Path], cfg) -> list[dict]:
    """Per noise rate: pool noise, gain over SFT (paired, over the given seeds), the run used."""
    rows = []
    for noise, run in dose_runs(cfg).items():
        result = paired(run_dirs, run, "sft")
        pool_noise = [_read(d / "stages" / "data.json").get("headline", {}).get("pool_noise") if run == "b_full"
                      else _read(d / "stages" / "rl.json").get("headline", {}).get("dose_pool_noise", {}).get(run)
                      for d in run_dirs]
        acc = [_overall(d, run).get("both_order_accuracy") for d in run_dirs]
        rows.append({"noise": noise, "run": run, "pool_noise": _mean(pool_noise), "accuracy": _mean(acc),
                     "comparison": result})
    return rows


def _mean(values) -> float | None:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(clean) if clean else None


def _slope(rows: list[dict]) -> float | None:
    points = [(r["pool_noise"], r["comparison"]["difference"]) for r in rows
              if r["comparison"] is not None and r["pool_noise"] is not None]
    if len(points) < 2 or len({x for x, _ in points}) < 2:
        return None
    mx, my = statistics.fmean(x for x, _ in points), statistics.fmean(y for _, y in points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def _dose_figure(rows: list[dict], heads: dict | None, path: Path) -> Path:
    from egt.reporting.tables import new_figure, save_figure

    fig, (ax,) = new_figure()
    measured = [r for r in rows if r["comparison"] is not None]
    xs = [r["pool_noise"] for r in measured]
    ys = [r["comparison"]["difference"] for r in measured]
    err = [[y - r["comparison"]["ci_low"] for y, r in zip(ys, measured)],
           [r["comparison"]["ci_high"] - y for y, r in zip(ys, measured)]]
    ax.errorbar(xs, ys, yerr=err, marker="o", linewidth=2, capsize=4, label="full pool relabelled (95% CI)")
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set_xlabel("mislabeled share of the RL pairs")
    ax.set_ylabel("both-order accuracy gain over SFT")
    ax.set_title("RL gain vs label noise")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


# ---------------------------------------------------------------- report sections

def _setup_section(cfg, heads: dict) -> list[str]:
    data = heads.get("data", {})
    recipe, pretrain = data.get("egt_tiny", {}), data.get("pretrain", {})
    base = (f"the shipped tiny base `{data.get('base_model')}` (sha256 {str(data.get('base_sha256'))[:12]}…; "
            f"{pretrain.get('pretrain_steps', recipe.get('pretrain_steps', '?'))} pre-training steps, caption loss "
            f"{_fmt(pretrain.get('pretrain_first_loss'))} -> {_fmt(pretrain.get('pretrain_last_loss'))}; rebuild it "
            f"with `egt model tiny --output PATH`, then pass `base_model=PATH`)")
    rl = (f"{cfg.rl_steps} GRPO steps per RL run, {cfg.rl_batch_size // cfg.rl_num_generations} pairs x "
          f"{cfg.rl_num_generations} completions per step, lr {cfg.rl_learning_rate:g}, loss {cfg.rl_loss_type}, "
          f"KL beta {cfg.rl_beta:g}, both orders {'on' if cfg.rl_both_orders else 'off'}, vision tower "
          f"{'frozen' if cfg.rl_freeze_vision else 'trained'}")
    return ["## Setup", "",
            f"A ~0.9M-parameter Qwen2-VL judge fine-tuned from {base}; the synthetic benchmark (`egt data synth`) "
            f"with label-noise model `{cfg.noise}` on train and pool and a clean test split; SFT traces distilled "
            f"in {'both orders (swap augmentation)' if cfg.distill_orders == 'both' else 'one order'}; "
            f"K = {cfg.samples} sampled judgements per pool pair; EGT subset = the {cfg.curate_fraction:.0%} lowest "
            f"`{cfg.curate_metric}` entropy; {rl}.", "",
            markdown_table(["split", "pairs", "mislabeled share"],
                           [[s, data.get(f"{s}_pairs"), _fmt(data.get(f"{s}_noise"))]
                            for s in ("train", "pool", "test")]), ""]


def _stage1_section(cfg, heads: dict) -> list[str]:
    distill = heads.get("distill", {}).get("stats", {})
    sft = heads.get("sft", {})
    return ["## Stage 1 — distillation with the fidelity filter, then SFT", "",
            f"Oracle teacher writing a deliberately wrong trace {cfg.oracle_wrong_rate:.0%} of the time, "
            f"up to {cfg.distill_max_attempts} attempts per pair and order. Kept {distill.get('kept', 'n/a')} of "
            f"{distill.get('pairs', 'n/a')} ({_fmt(distill.get('kept_pct'), 1)} %); dropped by reason: "
            f"{json.dumps(distill.get('drop_reasons', {}))}; attempts histogram: "
            f"{json.dumps(distill.get('attempts_histogram', {}))}. A mislabeled pair passes the filter only with "
            "a trace that misreads the scene, so the filter removes most label noise from the SFT data but not "
            "all of it.", "",
            f"SFT: final training loss {_fmt(sft.get('train_loss'))} after {sft.get('steps', 'n/a')} steps.", ""]


def _rq1_section(analysis: dict, cfg) -> list[str]:
    if not analysis:
        return ["## RQ1 — entropy vs accuracy", "", "analysis missing", ""]
    metrics = [m for m in analysis.get("metrics", METRICS) if m in analysis.get("auroc", {})]
    rows = []
    for m in metrics:
        au = analysis["auroc"][m]
        rows.append([m, _fmt(analysis["spearman"].get(m)), _fmt(au.get("majority_error")),
                     _fmt(au.get("true_error")), _fmt(au.get("noisy"))])
    quint = [[m] + [_fmt(b.get("majority_accuracy"), 2) for b in analysis["bins"][m]["quintiles"]] for m in metrics]
    noise = ([[m] + [_fmt(b.get("noisy_share"), 2) for b in analysis["bins"][m]["quintiles"]] for m in metrics]
             if analysis.get("noise_known") else [])
    out = ["## RQ1 — does the judge's own entropy find hard and mislabeled pairs?", "",
           "Per pool pair: K sampled judgements from the SFT judge; entropies in nats over the full vocabulary "
           "(docs/definitions.md). `majority_error`: the label disagrees with the judge's majority verdict; "
           "`true_error`: the judge's majority verdict is wrong against the TRUE label; `noisy`: the label "
           "itself was flipped by the noise model. AUROC 0.5 = no signal.", "",
           markdown_table(["metric", "Spearman vs K-sample acc", "AUROC majority_error", "AUROC true_error",
                           "AUROC noisy label"], rows), "",
           "Accuracy of the majority verdict against the label, by entropy quintile (Q1 = lowest entropy):", "",
           markdown_table(["metric", "Q1", "Q2", "Q3", "Q4", "Q5"], quint), ""]
    if noise:
        out += ["Share of mislabeled pairs by entropy quintile:", "",
                markdown_table(["metric", "Q1", "Q2", "Q3", "Q4", "Q5"], noise), ""]
    headline = analysis.get("headline", {}).get("text")
    if headline:
        out += [f"Headline: {headline}", ""]
    out += ["![accuracy by entropy quintile](analysis/accuracy_by_quintile.png)", ""]
    if noise:
        out += ["![mislabeled share by entropy quintile](analysis/noise_by_quintile.png)", ""]
    out += [f"![{cfg.curate_metric} entropy histograms](analysis/hist_{cfg.curate_metric}.png)", "",
            "Full tables, deciles and every histogram: [analysis/report.md](analysis/report.md).", ""]
    return out


def _curation_section(heads: dict) -> list[str]:
    subsets = heads.get("curate", {}).get("subsets", {})
    names = {"curated_ascending": "EGT: lowest entropy", "random_subset": "random, same size",
             "accuracy": "accuracy-based (right in all K)", "full_random": "full pool"}
    rows = [[label, subsets[key]["pairs"], _fmt(subsets[key]["noise"])] for key, label in names.items()
            if key in subsets]
    out = ["## Curation — is the low-entropy subset cleaner?", "",
           markdown_table(["subset", "pairs", "mislabeled share"], rows), ""]
    if "curated_ascending" in subsets and "full_random" in subsets:
        egt, pool = subsets["curated_ascending"], subsets["full_random"]
        out += [f"Lowest-entropy subset cleaner than the pool: **{'yes' if egt['noise'] < pool['noise'] else 'no'}** "
                f"({_fmt(egt['noise'])} vs {_fmt(pool['noise'])} mislabeled).", ""]
    view = heads.get("curate", {}).get("view")
    if view:
        out += [f"Browse the pool in [{view}]({view}) (one self-contained page, `egt view`): every pair with its "
                "image, the K judgements coloured token by token by entropy, the known-mislabeled pairs, and each "
                "subset's kept/dropped mark; sort by any entropy metric, filter, search ids.", ""]
    return out


def _models(run_dir: Path, cfg) -> dict[str, str]:
    labels = dict(MODEL_LABELS)
    for noise, run in dose_runs(cfg).items():
        if run not in labels:
            labels[run] = "full pool, true labels" if noise == 0 else f"full pool relabelled at {noise:.0%} noise"
    return {m: label for m, label in labels.items() if (run_dir / "eval" / m / "metrics.json").exists()}


def _results_section(run_dir: Path, cfg, heads: dict) -> list[str]:
    rows = []
    for model, label in _models(run_dir, cfg).items():
        o = _overall(run_dir, model)
        gain = paired([run_dir], model, "sft") if model != "sft" else None
        cons = paired([run_dir], model, "sft", "position_consistent") if model != "sft" else None
        rows.append([label, _fmt(o.get("chosen_first_accuracy")), _fmt(o.get("chosen_second_accuracy")),
                     _fmt(o.get("both_order_accuracy")), _interval(gain), _p_values(gain),
                     _fmt(o.get("position_consistency")), _interval(cons)])
    dose = dose_response([run_dir], cfg)
    slope = _slope(dose)
    diets = {m: rl_diet(run_dir, m) for m in RL_SUBSETS}
    claims = []
    for name, a, b in CLAIMS:
        result = paired([run_dir], a, b)
        claims.append([name, _interval(result), _p_values(result), _verdict(result),
                       _context(name, run_dir, heads, slope, result, diets)])
    out = ["## Stage 3 — RL, judged on the clean test split in both orders", "",
           f"{cfg.n_test} test pairs, each judged greedily with the better response first and second. Both-order "
           "accuracy counts a pair only when both judgements are right; consistency = the same response picked "
           "in both orders. Gains are paired differences against the SFT judge on the same pairs with their 95% "
           "interval (paired bootstrap) and the exact McNemar p-value.", "",
           markdown_table(["model", "acc chosen-first", "acc chosen-second", "both-order acc",
                           "gain vs SFT [95% CI]", "McNemar p", "consistency", "consistency gain [95% CI]"], rows), "",
           *_diet_section(run_dir, heads, diets),
           "Claims of the paper, on both-order accuracy (reproduced / reversed: the 95% interval excludes 0):", "",
           markdown_table(["claim", "difference [95% CI]", "McNemar p", "verdict", "measured context"], claims), ""]
    if dose:
        _dose_figure(dose, heads, run_dir / "rl_gain_vs_noise.png")
        out += ["### RL gain vs label noise (dose-response)", "",
                "The same pool scenes relabelled at each noise rate, the same RL settings and data order as (b):", "",
                markdown_table(["noise model rate", "mislabeled share", "both-order acc", "gain vs SFT [95% CI]",
                                "McNemar p", "verdict"],
                               [[f"{r['noise']:.0%}", _fmt(r["pool_noise"]), _fmt(r["accuracy"]),
                                 _interval(r["comparison"]), _p_values(r["comparison"]),
                                 _verdict(r["comparison"]).replace("reproduced", "RL helps").replace(
                                     "reversed", "RL hurts")] for r in dose]), "",
                "![RL gain vs noise](rl_gain_vs_noise.png)", ""]
    return out


def write_report(pipeline, rerun: str) -> Path:
    """`<run>/report.md` from a finished pipeline (its cfg, dir, headlines, timings); `rerun` reproduces it."""
    cfg, run_dir, heads = pipeline.cfg, pipeline.dir, pipeline.headlines
    analysis = _read(run_dir / "analysis" / "analysis.json")
    lines = [f"# EGT at toy scale — replication report (seed {cfg.seed})", "",
             f"Generated by egt {__version__} on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, "
             f"{platform.machine()} with {_cpu_count()} CPU cores, no GPU. Every number below was measured in this "
             "run folder. " + DETERMINISM, "", "Rerun exactly:", "", "```", rerun, "```", ""]
    lines += _setup_section(cfg, heads)
    lines += _stage1_section(cfg, heads)
    lines += _rq1_section(analysis, cfg)
    lines += _curation_section(heads)
    lines += _results_section(run_dir, cfg, heads)
    timing_rows = [[name, f"{seconds:.0f}"] for name, seconds in pipeline.timings.items()]
    timing_rows.append(["total", f"{sum(pipeline.timings.values()):.0f}"])
    lines += ["## Wall time per stage", "", "Seconds on this machine (a cached stage shows the time of the run "
              "that produced it).", "", markdown_table(["stage", "seconds"], timing_rows), ""]
    return write_text("\n".join(lines), run_dir / "report.md")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---------------------------------------------------------------- seeds

def _seed_values(run_dir: Path, cfg) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for metric, au in _read(run_dir / "analysis" / "analysis.json").get("auroc", {}).items():
        values[f"AUROC noisy label: {metric}"] = au.get("noisy")
        values[f"AUROC judge error: {metric}"] = au.get("true_error")
    curate = _read(run_dir / "stages" / "curate.json").get("headline", {}).get("subsets", {})
    for key, label in (("full_random", "pool"), ("curated_ascending", "EGT subset"),
                       ("random_subset", "random subset"), ("accuracy", "accuracy subset")):
        if key in curate:
            values[f"mislabeled share: {label}"] = curate[key]["noise"]
    for model in RL_SUBSETS:
        diet = rl_diet(run_dir, model)
        if diet:
            values[f"mislabeled share of the pairs trained on: {MODEL_LABELS[model]}"] = diet["noise_seen"]
            values[f"mislabeled share of those the SFT judge split: {MODEL_LABELS[model]}"] = diet["split_noise"]
    for model, label in _models(run_dir, cfg).items():
        o = _overall(run_dir, model)
        values[f"both-order acc: {label}"] = o.get("both_order_accuracy")
        values[f"consistency: {label}"] = o.get("position_consistency")
    return values


def write_seed_summary(cfg, run_dirs: list[Path], rerun: str) -> Path:
    """`<output>/summary.md` and summary.json: every number over the seeds, and the paired claims pooled over
    seeds (hierarchical bootstrap over seeds and test pairs)."""
    per_seed = [_seed_values(d, cfg) for d in run_dirs]
    seeds = [cfg.seed + i for i in range(len(run_dirs))]
    keys = list(dict.fromkeys(k for v in per_seed for k in v))
    rows = []
    for key in keys:
        vals = [v.get(key) for v in per_seed]
        clean = [x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
        spread = statistics.stdev(clean) if len(clean) > 1 else 0.0
        rows.append([key, f"{_fmt(statistics.fmean(clean))} ± {_fmt(spread)}" if clean else "n/a"]
                    + [_fmt(x) for x in vals])
    comparisons = [(f"{MODEL_LABELS.get(m, m)} vs SFT", m, "sft") for m in _models(run_dirs[0], cfg) if m != "sft"]
    comparisons += [(name, a, b) for name, a, b in CLAIMS[1:]]
    claim_rows, claims_json = [], {}
    for name, a, b in comparisons:
        result = paired(run_dirs, a, b)
        claims_json[name] = result
        per = "n/a" if result is None else " ".join(f"{d:+.3f}" for d in result["per_seed"])
        every = "n/a" if result is None else ("yes" if all(d > 0 for d in result["per_seed"]) else "no")
        claim_rows.append([name, _interval(result), per, every, _verdict(result)])
    dose = dose_response(run_dirs, cfg)
    text = ["# EGT demo — summary over seeds", "",
            f"Seeds {seeds}; mean ± sample standard deviation over seeds. Per-seed reports: "
            + ", ".join(f"[seed {s}]({d.name}/report.md)" for s, d in zip(seeds, run_dirs)) + ". " + DETERMINISM, "",
            "Rerun: `" + rerun + "`", "",
            "## Paired comparisons pooled over seeds", "",
            "Both-order accuracy differences on each seed's clean test split; 95% interval from a hierarchical "
            "bootstrap (seeds, then pairs); reproduced / reversed when it excludes 0.", "",
            markdown_table(["comparison", "mean difference [95% CI]", "per seed", "every seed > 0", "verdict"],
                           claim_rows), ""]
    if dose:
        _dose_figure(dose, None, cfg.output / "rl_gain_vs_noise.png")
        text += ["## RL gain vs label noise (dose-response, pooled over seeds)", "",
                 markdown_table(["noise model rate", "mislabeled share", "both-order acc", "gain vs SFT [95% CI]",
                                 "per seed", "verdict"],
                                [[f"{r['noise']:.0%}", _fmt(r["pool_noise"]), _fmt(r["accuracy"]),
                                  _interval(r["comparison"]),
                                  " ".join(f"{d:+.3f}" for d in r["comparison"]["per_seed"]) if r["comparison"] else "n/a",
                                  _verdict(r["comparison"])] for r in dose]), "",
                 "![RL gain vs noise](rl_gain_vs_noise.png)", ""]
    text += ["## Every number, per seed", "",
             markdown_table(["quantity", "mean ± sd"] + [f"seed {s}" for s in seeds], rows), ""]
    path = write_text("\n".join(text), cfg.output / "summary.md")
    write_json({"seeds": seeds, "values": per_seed, "claims": claims_json,
                "dose_response": [{k: v for k, v in r.items()} for r in dose]}, cfg.output / "summary.json")
    return path
