"""RL calibration of `egt rl` on the tiny judge: GRPO from one SFT checkpoint, pools with known label noise.

    python benchmarks/bench_rl.py --run runs/demo --output runs/bench_rl              # sweep + dose-response
    python benchmarks/bench_rl.py --run runs/demo --output runs/bench_rl --part noise # dose-response only

Every job starts from the same SFT judge (`<run>/sft/model`, e.g. what `make demo` trained) and
runs `egt rl` on the demo's RL pool relabelled at a noise rate P: the same scenes and responses
re-drawn by `egt data synth` (the pool's split, seed and size, `noise=ambiguity:P`; P = 0 gives
the true labels). The judge then judges the run's clean test split in both orders (`egt eval`).
Seeds vary the RL data order (a seeded permutation of the pool) and GRPO's sampling.

- `--part sweep`: one factor at a time around the demo's RL settings (egt.demo.pipeline.Config), on the
  true labels: learning rate, steps, KL beta, group size, loss type, both-order presentation,
  frozen vision tower.
- `--part noise`: the demo's RL settings on the pool at each `--noise` rate (dose-response).

Jobs run `--workers` at a time, one torch thread each (egt.core.parallel). Statistics (egt.core.stats):
every model judges the same test pairs, so each gain over the SFT judge is paired -- per seed
an exact McNemar test on both-order correctness, over seeds a hierarchical bootstrap (seeds,
then pairs) for the 95% interval of the mean gain, and the smallest gain this test split can
detect at 80% power (from the observed discordance). Writes `<output>/results.json`,
`<output>/results.md` (also printed) and `<output>/rl_gain_vs_noise.png`.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

# One variant = overrides of the demo's RL settings (egt rl keys); `factor` names what it varies.
SWEEP = [
    ("default", "—", {}),
    ("lr x0.4", "learning rate", {"learning_rate": 0.4}),
    ("lr x1.5", "learning rate", {"learning_rate": 1.5}),
    ("lr x2", "learning rate", {"learning_rate": 2.0}),
    ("lr x4", "learning rate", {"learning_rate": 4.0}),
    ("steps x0.5", "steps", {"max_steps": 0.5}),
    ("steps x2", "steps", {"max_steps": 2.0}),
    ("steps x4", "steps", {"max_steps": 4.0}),
    ("beta 0.04", "KL beta", {"beta": 0.04}),
    ("G 8", "group size", {"num_generations": 8}),
    ("loss grpo", "loss type", {"loss_type": "grpo"}),
    ("loss dr_grpo", "loss type", {"loss_type": "dr_grpo"}),
    ("scale none", "reward scaling", {"scale_rewards": "none"}),
    ("one order", "both orders", {"both_orders": False}),
    ("both orders", "both orders", {"both_orders": True}),
    ("vision frozen", "vision tower", {"freeze_vision": True}),
]
SCALED = {"learning_rate", "max_steps"}  # sweep values for these multiply the default


def demo_rl_settings(run: Path) -> dict:
    """The RL settings the demo run used (its config.yaml), as `egt rl` keys."""
    from egt.core.config import load_config
    from egt.demo.pipeline import pipeline

    path = run / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{path}: missing (a demo run writes it); give the RL settings with --set key=value ...")
    return pipeline.rl_settings(load_config(pipeline.Config, path, {"output": str(run)}))


def pool_spec(run: Path) -> dict:
    """split, seed and size of the demo's RL pool, read from its first id (`synth-pool-<seed>-<index>`)."""
    from egt.core.records import read_rows

    rows = read_rows(run / "data" / "pool.parquet")
    _, split, seed, _ = rows[0]["id"].split("-")
    return {"split": split, "seed": int(seed), "n": len(rows)}


def relabelled_pool(out: Path, spec: dict, noise: float) -> Path:
    from egt.core.config import load_config
    from egt.data import synth

    path = out / "pools" / f"pool-noise-{noise:g}.parquet"
    if not path.exists():
        synth.run(load_config(synth.Config, None, {**spec, "noise": f"ambiguity:{noise}" if noise else "none",
                                                   "output": str(path)}))
    return path


def ordered_pool(pool: Path, seed: int) -> Path:
    """The pool with an `order` column: a seeded permutation (the RL data order varies with the seed)."""
    from egt.core.records import read_pairs, write_pairs

    path = pool.with_name(f"{pool.stem}-order-{seed}.parquet")
    if not path.exists():
        pairs = read_pairs(pool)
        ranks = list(range(len(pairs)))
        random.Random(seed).shuffle(ranks)
        for pair, rank in zip(pairs, ranks):
            pair.extra["order"] = rank
        write_pairs(pairs, path)
    return path


def judge_test(model: Path, test: Path, out: Path, max_new_tokens: int, batch_size: int) -> dict:
    """Both-order evaluation; per-pair correctness in the run order of the test file."""
    from egt.core.config import load_config
    from egt.core.files import read_json
    from egt.stages import evaluate

    if not (out / "metrics.json").exists():
        evaluate.run(load_config(evaluate.Config, None, {
            "benchmark": "synthetic", "data": str(test), "model": str(model), "orders": "both",
            "output": str(out), "batch_size": batch_size, "max_new_tokens": max_new_tokens, "progress": False}))
    overall = read_json(out / "metrics.json")["overall"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {"both_order_accuracy": overall["both_order_accuracy"],
            "position_consistency": overall["position_consistency"],
            "chosen_first_accuracy": overall["chosen_first_accuracy"],
            "chosen_second_accuracy": overall["chosen_second_accuracy"],
            "ids": [r["id"] for r in rows], "both_correct": [bool(r["both_correct"]) for r in rows],
            "consistent": [bool(r["position_consistent"]) for r in rows]}


def rl_job(settings: dict, pool: Path, seed: int, sft: Path, test: Path, out: Path) -> dict:
    """One cell: egt rl from the SFT judge, then the test split in both orders."""
    import shutil

    from egt.core.config import load_config
    from egt.core.files import read_json, write_json
    from egt.stages import rl

    done = out / "result.json"
    if done.exists():
        return read_json(done)
    start = time.perf_counter()
    rl.run(load_config(rl.Config, None, {**settings, "model": str(sft), "train": str(ordered_pool(pool, seed)),
                                         "output": str(out / "rl"), "seed": seed, "save_steps": 100000}))
    rl_s = time.perf_counter() - start
    shutil.rmtree(out / "rl" / "checkpoints", ignore_errors=True)
    history = read_json(out / "rl" / "train_summary.json")["log_history"]
    train = [h for h in history if "rewards/accuracy_reward/mean" in h]
    tail = train[-max(1, len(train) // 5):]
    result = {**judge_test(out / "rl" / "model", test, out / "eval", settings["max_completion_length"], 64),
              "rl_s": round(rl_s, 1), "eval_s": round(time.perf_counter() - start - rl_s, 1),
              "train_accuracy_last": statistics.fmean(h["rewards/accuracy_reward/mean"] for h in tail),
              "frac_zero_std": statistics.fmean(h.get("frac_reward_zero_std", float("nan")) for h in train)}
    write_json(result, done)
    return result


def summarize(name: str, cells: list[dict], sft: dict) -> dict:
    """Gains over the SFT judge across seeds, with paired statistics."""
    from egt.core.stats import mcnemar, min_detectable_difference, paired_bootstrap

    rl_correct = [c["both_correct"] for c in cells]
    sft_correct = [sft["both_correct"]] * len(cells)
    boot = paired_bootstrap(rl_correct, sft_correct, n_boot=4000, seed=0)
    tests = [mcnemar(c["both_correct"], sft["both_correct"]) for c in cells]
    discordant = statistics.fmean((t["b"] + t["c"]) / t["n"] for t in tests)
    gains = [t["difference"] for t in tests]
    consistency_gain = [c["position_consistency"] - sft["position_consistency"] for c in cells]
    return {"name": name, "seeds": len(cells), "gains": gains, "mean_gain": statistics.fmean(gains),
            "ci": [boot["ci_low"], boot["ci_high"]], "p_values": [t["p_value"] for t in tests],
            "every_seed_positive": all(g > 0 for g in gains),
            "mdd_one_seed": min_detectable_difference(tests[0]["n"], max(discordant, 1e-6)),
            "both_order_accuracy": statistics.fmean(c["both_order_accuracy"] for c in cells),
            "position_consistency": statistics.fmean(c["position_consistency"] for c in cells),
            "consistency_gain": statistics.fmean(consistency_gain),
            "train_accuracy_last": statistics.fmean(c["train_accuracy_last"] for c in cells),
            "frac_zero_std": statistics.fmean(c["frac_zero_std"] for c in cells),
            "rl_s": statistics.fmean(c["rl_s"] for c in cells)}


def _pm(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):+.3f} ± {spread:.3f}"


def table(rows: list[dict], first: str) -> str:
    from egt.reporting.tables import markdown_table

    body = [[r[first], r.get("factor", ""), f"{r['both_order_accuracy']:.3f}", _pm(r["gains"]),
             f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]", "yes" if r["every_seed_positive"] else "no",
             " ".join(f"{p:.2g}" for p in r["p_values"]), f"{r['position_consistency']:.3f}",
             f"{r['consistency_gain']:+.3f}", f"{r['train_accuracy_last']:.2f}", f"{r['frac_zero_std']:.2f}",
             f"{r['rl_s']:.0f}"] for r in rows]
    headers = [first, "factor", "both-order acc", "gain ± sd (seeds)", "95% CI (seeds x pairs)", "every seed > 0",
               "McNemar p per seed", "consistency", "consistency gain", "train acc (last 20%)",
               "zero-std groups", "RL s"]
    return markdown_table(headers, body)


def figure(noise_rows: list[dict], path: Path) -> Path:
    from egt.reporting.tables import new_figure, save_figure

    fig, (ax,) = new_figure()
    xs = [r["noise"] for r in noise_rows]
    ys = [r["mean_gain"] for r in noise_rows]
    low = [r["mean_gain"] - r["ci"][0] for r in noise_rows]
    high = [r["ci"][1] - r["mean_gain"] for r in noise_rows]
    ax.errorbar(xs, ys, yerr=[low, high], marker="o", linewidth=2, capsize=4, label="mean over seeds, 95% CI")
    for r in noise_rows:
        ax.scatter([r["noise"]] * len(r["gains"]), r["gains"], color="grey", s=14, zorder=3)
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set_xlabel("label-noise rate of the RL pool (ambiguity-driven)")
    ax.set_ylabel("both-order accuracy gain over the SFT judge")
    ax.set_title("GRPO gain vs label noise (grey: single seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="an `egt demo` run folder (sft/model, data/)")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_rl"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--part", choices=["sweep", "noise", "all"], default="all")
    parser.add_argument("--variants", nargs="+", default=None, help="sweep variants by name (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="parallel jobs (default: one per core)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override the demo run's RL settings (egt rl keys), e.g. max_steps=200")
    args = parser.parse_args(argv)

    from egt.core.parallel import Job, run_jobs

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    from egt.core.config import parse_overrides

    base = {**demo_rl_settings(args.run), **parse_overrides(args.set)}
    sft, test = args.run / "sft" / "model", args.run / "data" / "test.parquet"
    spec = pool_spec(args.run)
    true_pool = relabelled_pool(out, spec, 0.0)
    jobs, keys = [Job("sft", judge_test, (sft, test, out / "sft-eval", base["max_completion_length"], 64))], ["sft"]
    sweep = [v for v in SWEEP if args.variants is None or v[0] in args.variants] if args.part != "noise" else []
    for name, _, overrides in sweep:
        settings = {**base, **{k: (base[k] * v if k in SCALED else v) for k, v in overrides.items()}}
        settings["max_steps"] = int(settings["max_steps"])
        for seed in args.seeds:
            jobs.append(Job(f"{name}/seed-{seed}", rl_job,
                            (settings, true_pool, seed, sft, test, out / "sweep" / name.replace(" ", "_") / f"seed-{seed}")))
            keys.append(("sweep", name, seed))
    noise_levels = args.noise if args.part != "sweep" else []
    for noise in noise_levels:
        pool = relabelled_pool(out, spec, noise)
        for seed in args.seeds:
            if noise == 0.0 and ("default" in [v[0] for v in sweep]):
                continue  # the sweep's default cell on the true labels is the same job
            jobs.append(Job(f"noise-{noise:g}/seed-{seed}", rl_job,
                            (base, pool, seed, sft, test, out / "noise" / f"noise-{noise:g}" / f"seed-{seed}")))
            keys.append(("noise", noise, seed))
    started = time.perf_counter()
    print(f"{len(jobs)} jobs, {args.workers or 'one per core'} workers", flush=True)
    results = run_jobs(jobs, workers=args.workers, threads=1,
                       on_done=lambda job, r: print(f"  {job.name}: both-order {r['both_order_accuracy']:.3f}, "
                                                    f"consistency {r['position_consistency']:.3f}", flush=True))
    by_key = dict(zip(keys, results))
    sft_result = by_key["sft"]
    sweep_rows = []
    for name, factor, _ in sweep:
        row = summarize(name, [by_key[("sweep", name, s)] for s in args.seeds], sft_result)
        sweep_rows.append({**row, "variant": name, "factor": factor})
    noise_rows = []
    for noise in noise_levels:
        cells = [by_key.get(("noise", noise, s)) or by_key[("sweep", "default", s)] for s in args.seeds]
        noise_rows.append({**summarize(f"noise {noise:g}", cells, sft_result), "noise": noise,
                           "noise label": f"{noise:.0%}", "factor": ""})
    command = "python benchmarks/bench_rl.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = ["# GRPO calibration on the tiny judge", "",
             f"`{command}` ({time.perf_counter() - started:.0f} s, {len(jobs)} jobs; a cell whose result.json "
             "was already on disk is reused, not rerun)", "",
             f"SFT judge `{sft}`: both-order accuracy {sft_result['both_order_accuracy']:.3f}, position "
             f"consistency {sft_result['position_consistency']:.3f} on {len(sft_result['ids'])} clean test pairs. "
             f"Demo RL settings: `{json.dumps(base, sort_keys=True)}`.", ""]
    if sweep_rows:
        lines += ["## Sweep on the true labels (one factor at a time)", "", table(sweep_rows, "variant"), ""]
    if noise_rows:
        lines += ["## Dose-response: the demo's settings on the pool at each noise rate", "",
                  table(noise_rows, "noise label"), "", "![RL gain vs noise](rl_gain_vs_noise.png)", ""]
        figure(noise_rows, out / "rl_gain_vs_noise.png")
    lines += ["Gains are paired differences in both-order accuracy against the SFT judge on the same test pairs. "
              "CI: hierarchical bootstrap over seeds and pairs. Smallest gain one seed can detect "
              "(McNemar, alpha 0.05, power 0.8): "
              + (f"{(sweep_rows or noise_rows)[0]['mdd_one_seed']:.3f}." if (sweep_rows or noise_rows) else "n/a.")]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    from egt.core.files import write_json

    write_json({"command": command, "base": base, "sft": {k: v for k, v in sft_result.items() if k != "both_correct"},
                "sweep": sweep_rows, "noise": noise_rows}, out / "results.json")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
