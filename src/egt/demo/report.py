"""The demo's replication report (`report.md`) and the multi-seed summary (`summary.md`): the prose.

Everything here is read from the run folders the pipeline wrote; nothing is typed in by hand. Which runs
are compared and when a claim holds (reproduced only pooled over >= 3 training runs; a single run's
comparison is labelled as one run) is egt.demo.claims; what each RL run trained on is egt.demo.rl_diet.
The caller (egt.demo.pipeline) passes the pipeline and the command line that reruns it; this module
imports nothing from egt.demo.pipeline.
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
from egt.core.files import write_json, write_text
from egt.core.score_columns import METRICS
from egt.demo.claims import (
    CLAIMS,
    MIN_RUNS,
    MODEL_LABELS,
    RL_SUBSETS,
    dose_runs,
    fmt,
    interval,
    overall,
    p_values,
    paired,
    read_or_empty,
    verdict,
)
from egt.demo.rl_diet import claim_context, diet_section, rl_diet
from egt.reporting.tables import markdown_table

DETERMINISM = ("Deterministic per machine: the same command on the same machine writes the same numbers (every "
               "stage is seeded; RL runs and evaluations use one thread each whatever the number of workers). "
               "Across machines CPU kernels round differently in the last bits, sampled judgements can then "
               "diverge, and numbers move within the seed-to-seed spread shown in the multi-seed summary.")
DOSE_POOLED, DOSE_ONE_RUN = ("RL helps", "RL hurts"), ("gain in this run", "loss in this run")
ONE_RUN = (f"These are ONE training run's comparisons: each interval covers the sampling of test pairs, not the "
           f"randomness of training (one RL run of this judge moves by 5-10 points, and the same seed gives other "
           f"numbers on another machine). A claim is called reproduced only when it holds pooled over at least "
           f"{MIN_RUNS} independent training runs: `egt demo --seeds {MIN_RUNS}` writes that summary (summary.md).")


def dose_response(run_dirs: list[Path], cfg) -> list[dict]:
    """Per noise rate: pool noise, gain over SFT (paired, over the given seeds), the run used."""
    rows = []
    for noise, run in dose_runs(cfg).items():
        result = paired(run_dirs, run, "sft")
        heads = [read_or_empty(d / "stages" / ("data.json" if run == "b_full" else "rl.json")).get("headline", {})
                 for d in run_dirs]
        pool_noise = [h.get("pool_noise") if run == "b_full" else h.get("dose_pool_noise", {}).get(run) for h in heads]
        acc = [overall(d, run).get("both_order_accuracy") for d in run_dirs]
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
            f"{fmt(pretrain.get('pretrain_first_loss'))} -> {fmt(pretrain.get('pretrain_last_loss'))}; rebuild it "
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
                           [[s, data.get(f"{s}_pairs"), fmt(data.get(f"{s}_noise"))]
                            for s in ("train", "pool", "test")]), ""]


def _stage1_section(cfg, heads: dict) -> list[str]:
    distill = heads.get("distill", {}).get("stats", {})
    sft = heads.get("sft", {})
    return ["## Stage 1 — distillation with the fidelity filter, then SFT", "",
            f"Oracle teacher writing a deliberately wrong trace {cfg.oracle_wrong_rate:.0%} of the time, "
            f"up to {cfg.distill_max_attempts} attempts per pair and order. Kept {distill.get('kept', 'n/a')} of "
            f"{distill.get('pairs', 'n/a')} ({fmt(distill.get('kept_pct'), 1)} %); dropped by reason: "
            f"{json.dumps(distill.get('drop_reasons', {}))}; attempts histogram: "
            f"{json.dumps(distill.get('attempts_histogram', {}))}. A mislabeled pair passes the filter only with "
            "a trace that misreads the scene, so the filter removes most label noise from the SFT data but not "
            "all of it.", "",
            f"SFT: final training loss {fmt(sft.get('train_loss'))} after {sft.get('steps', 'n/a')} steps.", ""]


def _rq1_section(analysis: dict, cfg) -> list[str]:
    if not analysis:
        return ["## RQ1 — entropy vs accuracy", "", "analysis missing", ""]
    metrics = [m for m in analysis.get("metrics", METRICS) if m in analysis.get("auroc", {})]
    rows = []
    for m in metrics:
        au = analysis["auroc"][m]
        rows.append([m, fmt(analysis["spearman"].get(m)), fmt(au.get("majority_error")),
                     fmt(au.get("true_error")), fmt(au.get("noisy"))])
    quint = [[m] + [fmt(b.get("majority_accuracy"), 2) for b in analysis["bins"][m]["quintiles"]] for m in metrics]
    noise = ([[m] + [fmt(b.get("noisy_share"), 2) for b in analysis["bins"][m]["quintiles"]] for m in metrics]
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
    rows = [[label, subsets[key]["pairs"], fmt(subsets[key]["noise"])] for key, label in names.items()
            if key in subsets]
    out = ["## Curation — is the low-entropy subset cleaner?", "",
           markdown_table(["subset", "pairs", "mislabeled share"], rows), ""]
    if "curated_ascending" in subsets and "full_random" in subsets:
        egt, pool = subsets["curated_ascending"], subsets["full_random"]
        out += [f"Lowest-entropy subset cleaner than the pool: **{'yes' if egt['noise'] < pool['noise'] else 'no'}** "
                f"({fmt(egt['noise'])} vs {fmt(pool['noise'])} mislabeled).", ""]
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
        o = overall(run_dir, model)
        gain = paired([run_dir], model, "sft") if model != "sft" else None
        cons = paired([run_dir], model, "sft", "position_consistent") if model != "sft" else None
        rows.append([label, fmt(o.get("chosen_first_accuracy")), fmt(o.get("chosen_second_accuracy")),
                     fmt(o.get("both_order_accuracy")), interval(gain), p_values(gain),
                     fmt(o.get("position_consistency")), interval(cons)])
    dose = dose_response([run_dir], cfg)
    slope = _slope(dose)
    diets = {m: rl_diet(run_dir, m) for m in RL_SUBSETS}
    claims = []
    for name, a, b in CLAIMS:
        result = paired([run_dir], a, b)
        claims.append([name, interval(result), p_values(result), verdict(result),
                       claim_context(name, run_dir, heads, slope, result, diets)])
    out = ["## Stage 3 — RL, judged on the clean test split in both orders", "",
           f"{cfg.n_test} test pairs, each judged greedily with the better response first and second. Both-order "
           "accuracy counts a pair only when both judgements are right; consistency = the same response picked "
           "in both orders. Gains are paired differences against the SFT judge on the same pairs with their 95% "
           "interval (paired bootstrap) and the exact McNemar p-value.", "",
           markdown_table(["model", "acc chosen-first", "acc chosen-second", "both-order acc",
                           "gain vs SFT [95% CI]", "McNemar p", "consistency", "consistency gain [95% CI]"], rows), "",
           *diet_section(run_dir, heads, diets),
           "Claims of the paper, on both-order accuracy, in this one training run. " + ONE_RUN, "",
           markdown_table(["claim", "difference [95% CI]", "McNemar p", "this run", "measured context"], claims), ""]
    if dose:
        _dose_figure(dose, heads, run_dir / "rl_gain_vs_noise.png")
        out += ["### RL gain vs label noise (dose-response)", "",
                "The same pool scenes relabelled at each noise rate, the same RL settings and data order as (b) "
                "(one training run per rate):", "",
                markdown_table(["noise model rate", "mislabeled share", "both-order acc", "gain vs SFT [95% CI]",
                                "McNemar p", "this run"],
                               [[f"{r['noise']:.0%}", fmt(r["pool_noise"]), fmt(r["accuracy"]),
                                 interval(r["comparison"]), p_values(r["comparison"]),
                                 verdict(r["comparison"], DOSE_POOLED, DOSE_ONE_RUN)] for r in dose]), "",
                "![RL gain vs noise](rl_gain_vs_noise.png)", ""]
    return out


def write_report(pipeline, rerun: str) -> Path:
    """`<run>/report.md` from a finished pipeline (its cfg, dir, headlines, timings); `rerun` reproduces it."""
    cfg, run_dir, heads = pipeline.cfg, pipeline.dir, pipeline.headlines
    analysis = read_or_empty(run_dir / "analysis" / "analysis.json")
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
    for metric, au in read_or_empty(run_dir / "analysis" / "analysis.json").get("auroc", {}).items():
        values[f"AUROC noisy label: {metric}"] = au.get("noisy")
        values[f"AUROC judge error: {metric}"] = au.get("true_error")
    curate = read_or_empty(run_dir / "stages" / "curate.json").get("headline", {}).get("subsets", {})
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
        o = overall(run_dir, model)
        values[f"both-order acc: {label}"] = o.get("both_order_accuracy")
        values[f"consistency: {label}"] = o.get("position_consistency")
    return values


def write_seed_summary(cfg, run_dirs: list[Path], rerun: str) -> Path:
    """`<output>/summary.md` and summary.json: every number over the seeds, and the paired claims pooled over
    seeds (a t-interval over the per-seed differences, egt.core.stats.runs_interval)."""
    per_seed = [_seed_values(d, cfg) for d in run_dirs]
    seeds = [cfg.seed + i for i in range(len(run_dirs))]
    keys = list(dict.fromkeys(k for v in per_seed for k in v))
    rows = []
    for key in keys:
        vals = [v.get(key) for v in per_seed]
        clean = [x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
        spread = statistics.stdev(clean) if len(clean) > 1 else 0.0
        rows.append([key, f"{fmt(statistics.fmean(clean))} ± {fmt(spread)}" if clean else "n/a"]
                    + [fmt(x) for x in vals])
    comparisons = [(f"{MODEL_LABELS.get(m, m)} vs SFT", m, "sft") for m in _models(run_dirs[0], cfg) if m != "sft"]
    comparisons += [(name, a, b) for name, a, b in CLAIMS[1:]]
    claim_rows, claims_json = [], {}
    for name, a, b in comparisons:
        result = paired(run_dirs, a, b)
        claims_json[name] = result
        per = "n/a" if result is None else " ".join(f"{d:+.3f}" for d in result["per_seed"])
        every = "n/a" if result is None else ("yes" if all(d > 0 for d in result["per_seed"]) else "no")
        claim_rows.append([name, interval(result), per, every, verdict(result)])
    dose = dose_response(run_dirs, cfg)
    text = ["# EGT demo — summary over seeds", "",
            f"Seeds {seeds}; mean ± sample standard deviation over seeds. Per-seed reports: "
            + ", ".join(f"[seed {s}]({d.name}/report.md)" for s, d in zip(seeds, run_dirs)) + ". " + DETERMINISM, "",
            "Rerun: `" + rerun + "`", "",
            "## Paired comparisons pooled over seeds", "",
            "Both-order accuracy differences on each seed's clean test split; each seed is an independent training "
            "run (its own data, SFT and RL). 95% interval: Student-t over the per-seed differences (each run one "
            f"observation), so it includes run-to-run variation; reproduced / reversed when it excludes 0 and at "
            f"least {MIN_RUNS} runs are pooled (fewer runs: what happened in those runs, never a claim).", "",
            markdown_table(["comparison", "mean difference [95% CI]", "per seed", "every seed > 0", "verdict"],
                           claim_rows), ""]
    if dose:
        _dose_figure(dose, None, cfg.output / "rl_gain_vs_noise.png")
        text += ["## RL gain vs label noise (dose-response, pooled over seeds)", "",
                 markdown_table(["noise model rate", "mislabeled share", "both-order acc", "gain vs SFT [95% CI]",
                                 "per seed", "verdict"],
                                [[f"{r['noise']:.0%}", fmt(r["pool_noise"]), fmt(r["accuracy"]),
                                  interval(r["comparison"]),
                                  " ".join(f"{d:+.3f}" for d in r["comparison"]["per_seed"]) if r["comparison"] else "n/a",
                                  verdict(r["comparison"], DOSE_POOLED, DOSE_ONE_RUN)] for r in dose]), "",
                 "![RL gain vs noise](rl_gain_vs_noise.png)", ""]
    text += ["## Every number, per seed", "",
             markdown_table(["quantity", "mean ± sd"] + [f"seed {s}" for s in seeds], rows), ""]
    path = write_text("\n".join(text), cfg.output / "summary.md")
    write_json({"seeds": seeds, "values": per_seed, "claims": claims_json,
                "dose_response": [{k: v for k, v in r.items()} for r in dose]}, cfg.output / "summary.json")
    return path
