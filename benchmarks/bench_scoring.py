"""Scoring speed, three comparisons side by side: overhead over plain generation, teacher-forced
scoring vs regenerating, and `egt score` with 2 processes vs 1.

    python benchmarks/bench_scoring.py                         # all three tables (idle 2-core machine: ~10 min)
    python benchmarks/bench_scoring.py --only overhead --batch-sizes 8 --repeats 5
    python benchmarks/bench_scoring.py --model untrained       # the random-weight tiny judge (builds it first)
    python benchmarks/bench_scoring.py --only overhead --profile 32   # cProfile of one scoring call at batch 32

Model: `--model base` (default) is the shipped pre-trained tiny judge (egt.tiny.build.shipped_base(), writes
realistic lengths); `untrained` builds egt.tiny.build.build_tiny(seed 0, pretrain_steps=0) in a temporary folder
(what the first scoring table of docs/benchmarks.md used); anything else is a judge folder. Pairs: egt.data.synth pool
pairs (seed 0) written to a temporary Parquet file with their PNGs.

1. Overhead. Both arms run `egt.model.generation.judge` on the same requests (same seeds, so the same tokens):
   plain = with_entropy=False (the seeded sampler still runs: only the entropy is off); scoring =
   `egt.stages.score.score_pairs` (judge with_entropy=True, token spans, per-response / per-pair entropies, i.e.
   what each shard of `egt score` computes). Interleaved, fastest of `--repeats`. Target: <= 1.05x at
   batch 1, 8 and 32.
2. Teacher-forced vs regenerate. The completions of one generate-mode scoring are put in each pair's
   `trace` column; then the same pairs are scored again both ways: regenerate (mode=generate, the same
   seeds, so the same completions) and teacher_forced (one forward pass per batch over the given texts).
   Interleaved, fastest of `--repeats`. Target: >= 10x. The table also says whether the teacher-forced
   token counts match the generated ones and the largest difference of the per-pair mean-token entropy
   (texts are re-tokenised, and a forward pass over the whole sequence is not bit-equal to the cached
   step-by-step one).
3. Processes. `egt score` as subprocesses on the same pairs file and settings: 1 process with
   OMP_NUM_THREADS=2 (both cores to the one process, so it is not handicapped) vs `torchrun --standalone
   --nproc_per_node 2` with OMP_NUM_THREADS=1 per process (2 x 1 thread = the same 2 cores, no
   oversubscription). Wall = the whole command (interpreter start, imports, model load, scoring, merge);
   run = summary.json's wall_s (from the start of `egt score`'s run() to the end of the merge). The merged
   scores.parquet files are compared: "exact" when every column is equal with floats compared by repr, else
   the largest float difference is shown. Exact equality is expected only when the per-thread float
   operations agree: intra-op parallel reductions over 2 threads may split sums differently than 1 thread
   (tests/stages/test_score.py pins OMP_NUM_THREADS=1 for its bit-identity tests for that reason).
   Target: >= 1.8x, identical output. Needs an otherwise idle machine: under load the second process
   competes with other jobs and the ratio means nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:  # run from a checkout without `pip install -e .`
    import egt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _model_dir(spec: str, tmp: Path) -> Path:
    from egt.tiny.build import TinyConfig, build_tiny, shipped_base

    if spec == "base":
        return shipped_base()
    if spec == "untrained":
        return build_tiny(TinyConfig(output=tmp / "tiny", seed=0, pretrain_steps=0))
    return Path(spec)


def _pairs_file(n: int, tmp: Path, name: str = "pairs") -> Path:
    from egt.data import synth

    return synth.run(synth.Config(split="pool", n=n, seed=0, output=tmp / name / "pool.parquet"))


# ---------------------------------------------------------------- 1. overhead

def bench_overhead(args, model, processor, model_dir, pairs, tmp):
    from egt.model.generation import JudgeRequest, judge, judgement_seed
    from egt.stages.score import Config, score_pairs

    requests = [JudgeRequest(p, judgement_seed(0, p.id, k)) for p in pairs for k in range(args.samples)]
    rows = []
    for batch_size in args.batch_sizes:
        cfg = Config(model=str(model_dir), pairs=tmp / "unused.parquet", output=tmp / "out", samples=args.samples,
                     max_new_tokens=args.max_new_tokens, batch_size=batch_size, progress=False)

        def plain():
            return judge(model, processor, requests, max_new_tokens=args.max_new_tokens,
                         batch_size=batch_size, with_entropy=False, progress=False)

        def scoring():
            return score_pairs(model, processor, pairs, cfg)

        if args.profile == batch_size:
            import cProfile
            import pstats

            scoring()
            profiler = cProfile.Profile()
            profiler.runcall(scoring)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
        plain()  # warm-up (allocator, kernels)
        plain_s, scoring_s = [], []
        for _ in range(args.repeats):
            seconds, judged = _time(plain)
            plain_s.append(seconds)
            seconds, (scored, _) = _time(scoring)
            scoring_s.append(seconds)
        tokens = sum(len(j.token_ids) for j in judged)
        scored_tokens = round(sum(r["n_tokens_mean"] * len(r["completions"]) for r in scored))
        if tokens != scored_tokens:
            raise SystemExit(f"arms generated different tokens ({tokens} vs {scored_tokens}): seeds broken?")
        rows.append((batch_size, len(requests), tokens, min(plain_s), min(scoring_s)))
    lines = [f"**1. Scoring vs plain generation** ({len(pairs)} pairs x K={args.samples}, {args.max_new_tokens} "
             f"new tokens, fastest of {args.repeats}; target <= 1.05x)", "",
             "| batch | judgements | tokens | plain s | scoring s | plain tok/s | scoring tok/s | scoring / plain |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for batch_size, n, tokens, plain_best, scoring_best in rows:
        lines.append(f"| {batch_size} | {n} | {tokens} | {plain_best:.3f} | {scoring_best:.3f} | "
                     f"{tokens / plain_best:.0f} | {tokens / scoring_best:.0f} | {scoring_best / plain_best:.3f}x |")
    return lines


# ---------------------------------------------------------------- 2. teacher-forced vs regenerate

def bench_teacher_forced(args, model, processor, model_dir, pairs, tmp):
    from egt.stages.score import Config, score_pairs

    common = dict(model=str(model_dir), pairs=tmp / "unused.parquet", output=tmp / "out", samples=args.samples,
                  max_new_tokens=args.max_new_tokens, progress=False)
    rows = []
    for batch_size in args.tf_batch_sizes:
        gen_cfg = Config(**common, batch_size=batch_size)
        tf_cfg = Config(**common, batch_size=batch_size, mode="teacher_forced", response_column="trace")
        generated, _ = score_pairs(model, processor, pairs, gen_cfg)
        given = [dataclasses.replace(p, extra={**p.extra, "trace": list(r["completions"])})
                 for p, r in zip(pairs, generated)]
        if any(not c for r in generated for c in r["completions"]):
            raise SystemExit("an empty completion was generated (teacher_forced needs non-empty texts): "
                             "use another --model or more --max-new-tokens")
        score_pairs(model, processor, given, tf_cfg)  # warm-up
        regen_s, tf_s = [], []
        for _ in range(args.repeats):
            seconds, (regen, _) = _time(lambda: score_pairs(model, processor, given, gen_cfg))
            regen_s.append(seconds)
            seconds, (forced, _) = _time(lambda: score_pairs(model, processor, given, tf_cfg))
            tf_s.append(seconds)
        same_texts = all(a["completions"] == b["completions"] for a, b in zip(regen, forced))
        same_counts = all(a["n_tokens_mean"] == b["n_tokens_mean"] for a, b in zip(regen, forced))
        key = "mean_token_entropy_nats"
        diff = max((abs(a[key] - b[key]) for a, b in zip(regen, forced)
                    if not (math.isnan(a[key]) or math.isnan(b[key]))), default=math.nan)
        tokens = round(sum(r["n_tokens_mean"] * len(r["completions"]) for r in regen))
        rows.append((batch_size, len(pairs) * args.samples, tokens, min(regen_s), min(tf_s),
                     same_texts and same_counts, diff))
    lines = [f"**2. Teacher-forced scoring of given completions vs regenerating them** ({len(pairs)} pairs x "
             f"K={args.samples}, up to {args.max_new_tokens} tokens, fastest of {args.repeats}; target >= 10x)", "",
             "| batch | judgements | tokens | regenerate s | teacher-forced s | speed-up | same texts and token counts "
             "| max abs diff, mean-token entropy (nats) |",
             "|---:|---:|---:|---:|---:|---:|:---:|---:|"]
    for batch_size, n, tokens, regen_best, tf_best, same, diff in rows:
        lines.append(f"| {batch_size} | {n} | {tokens} | {regen_best:.3f} | {tf_best:.3f} | "
                     f"**{regen_best / tf_best:.1f}x** | {'yes' if same else 'no'} | {diff:.1e} |")
    return lines


# ---------------------------------------------------------------- 3. processes

def _rows_text(path: Path) -> str:
    from egt.core.records import read_rows

    return json.dumps(read_rows(path), sort_keys=True, default=repr)


def _max_float_diff(a: Path, b: Path) -> float | None:
    """Largest absolute difference of the float values of two scores files; None if they differ otherwise."""
    from egt.core.records import read_rows

    worst = 0.0

    def walk(x, y):
        nonlocal worst
        if isinstance(x, float) and isinstance(y, float):
            if math.isnan(x) and math.isnan(y):
                return True
            worst = max(worst, abs(x - y))
            return True
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            return len(x) == len(y) and all(walk(u, v) for u, v in zip(x, y))
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(walk(x[k], y[k]) for k in x)
        return x == y

    return worst if walk(read_rows(a), read_rows(b)) else None


def _score_cli(model_dir: Path, pairs: Path, out: Path, args, processes: int) -> tuple[float, float]:
    threads = "2" if processes == 1 else "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = [*launcher, "-m", "egt.cli", "score", "--model", str(model_dir), "--pairs", str(pairs), "--output", str(out),
           "--samples", str(args.samples), "--max_new_tokens", str(args.max_new_tokens),
           "--batch_size", str(args.mp_batch_size), "--shard_size", str(args.mp_shard_size), "--seed", "0",
           "--progress", "false"]
    seconds, proc = _time(lambda: subprocess.run(cmd, env=env, capture_output=True, text=True))
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads((out / "summary.json").read_text())["wall_s"]


def bench_processes(args, model_dir, tmp):
    pairs = _pairs_file(args.mp_pairs, tmp, "mp_pairs")
    one_wall, one_run, two_wall, two_run = [], [], [], []
    verdicts = []
    for r in range(args.mp_repeats):  # interleaved
        wall, run_s = _score_cli(model_dir, pairs, tmp / f"one{r}", args, 1)
        one_wall.append(wall)
        one_run.append(run_s)
        wall, run_s = _score_cli(model_dir, pairs, tmp / f"two{r}", args, 2)
        two_wall.append(wall)
        two_run.append(run_s)
        a, b = tmp / f"one{r}" / "scores.parquet", tmp / f"two{r}" / "scores.parquet"
        if _rows_text(a) == _rows_text(b):
            verdicts.append("exact")
        else:
            diff = _max_float_diff(a, b)
            verdicts.append("different rows (texts or verdicts)" if diff is None else f"floats within {diff:.1e}")
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "; ".join(verdicts)
    n_shards = math.ceil(args.mp_pairs / args.mp_shard_size)
    lines = [f"**3. `egt score`, 2 processes vs 1** ({args.mp_pairs} pairs x K={args.samples}, {args.max_new_tokens} "
             f"new tokens, batch {args.mp_batch_size}, {n_shards} shards of {args.mp_shard_size}; fastest of "
             f"{args.mp_repeats}; target >= 1.8x, identical output)", "",
             "| processes | threads each | wall s (whole command) | run s (summary wall_s) | speed-up wall | speed-up run "
             "| scores.parquet vs 1 process |",
             "|---:|---:|---:|---:|---:|---:|:---|"]
    lines.append(f"| 1 | 2 | {min(one_wall):.2f} | {min(one_run):.2f} | 1.00x | 1.00x | (reference) |")
    lines.append(f"| 2 | 1 | {min(two_wall):.2f} | {min(two_run):.2f} | **{min(one_wall) / min(two_wall):.2f}x** | "
                 f"{min(one_run) / min(two_run):.2f}x | {verdict} |")
    return lines


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=["overhead", "teacher_forced", "processes"],
                        default=["overhead", "teacher_forced", "processes"])
    parser.add_argument("--model", default="base", help="base (shipped tiny judge) | untrained | a judge folder")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="K judgements per pair")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="overhead table")
    parser.add_argument("--tf-batch-sizes", type=int, nargs="+", default=[8, 32], help="teacher-forced table")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mp-pairs", type=int, default=64, help="processes table: pairs")
    parser.add_argument("--mp-batch-size", type=int, default=8)
    parser.add_argument("--mp-shard-size", type=int, default=8)
    parser.add_argument("--mp-repeats", type=int, default=2)
    parser.add_argument("--profile", type=int, default=None, metavar="BATCH",
                        help="print a cProfile of one scoring call at this overhead batch size (to stderr)")
    args = parser.parse_args(argv)

    import torch

    from egt.core.records import read_pairs
    from egt.model.loading import load_judge

    load = os.getloadavg()[0]
    tables: list[str] = []
    with tempfile.TemporaryDirectory(prefix="egt-bench-scoring-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = _model_dir(args.model, tmp)
        if {"overhead", "teacher_forced"} & set(args.only):
            pairs = read_pairs(_pairs_file(args.pairs, tmp))
            model, processor = load_judge(model_dir)
            if "overhead" in args.only:
                tables += bench_overhead(args, model, processor, model_dir, pairs, tmp) + [""]
            if "teacher_forced" in args.only:
                tables += bench_teacher_forced(args, model, processor, model_dir, pairs, tmp) + [""]
        if "processes" in args.only:
            tables += bench_processes(args, model_dir, tmp) + [""]
    print(f"\nScoring benchmarks, judge: {args.model} (CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads in-process), load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end\n")
    print("\n".join(tables))
    print(f"Reproduce: python benchmarks/bench_scoring.py --only {' '.join(args.only)} --model {args.model} "
          f"--pairs {args.pairs} --samples {args.samples} --max-new-tokens {args.max_new_tokens} "
          f"--batch-sizes {' '.join(map(str, args.batch_sizes))} "
          f"--tf-batch-sizes {' '.join(map(str, args.tf_batch_sizes))} --repeats {args.repeats} "
          f"--mp-pairs {args.mp_pairs} --mp-batch-size {args.mp_batch_size} --mp-shard-size {args.mp_shard_size} "
          f"--mp-repeats {args.mp_repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
