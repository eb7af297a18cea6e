"""Using a trained judge: abstention by entropy and best-of-N on the synthetic benchmark.

    python benchmarks/bench_judge_use.py --model runs/demo/sft/model --data runs/demo/data/test.parquet
    python benchmarks/bench_judge_use.py --model runs/demo/rl_a/model --data runs/demo/data/test.parquet \\
        --out runs/bench_judge_use_rl --n-rerank 50

1. `egt eval` (both orders, greedy) on `--data`: accuracy at 100% and at 80% coverage and AURC per
   entropy metric, for the chosen-first view (the public scripts' protocol) and the both-order view.
2. The orders-debiased verdict of `egt judge` / `egt.Judge` (vote share over both orders; a tie is
   no verdict, counted wrong) on the same pairs, from the eval's own judgements (greedy, so the
   same texts; combined by egt.judge.api.combine, the function `egt judge` uses): accuracy at 100% and
   80% coverage and AURC per metric (egt.stages.metrics, the rule of `egt judge --coverage`); then
   `egt judge --coverage 0.8` itself, with the best metric, on the first `--n-judge` pairs.
3. `egt rerank` (round robin; knockout reuses its matches): best-of-N on synthetic questions
   (describe and count kinds: enough wrong answers for N = 8) whose correct response is known.
   Candidates: the pair's correct response, its flawed one, then other wrong claims of the same
   scene drawn with a seeded generator (nested: the N = 4 set holds the N = 2 set), shuffled.
   Top-1 accuracy against a random pick (1/N).

Prints Markdown tables and the command that reproduces them; everything goes to --out
(bench.json + each command's folder). Needs a pairs file from `egt data synth` (meta.scene).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

METRICS = ("answer", "sentence", "mean", "max", "vote")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="judge checkpoint folder (or an http(s) endpoint for judge/rerank)")
    ap.add_argument("--data", type=Path, required=True, help="synthetic test pairs (egt data synth)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_judge_use"))
    ap.add_argument("--n-eval", type=int, default=None, help="pairs for eval and judge (default: all)")
    ap.add_argument("--n-judge", type=int, default=None, help="pairs for `egt judge` (default: all; 0 = skip)")
    ap.add_argument("--n-rerank", type=int, default=50, help="questions for best-of-N")
    ap.add_argument("--methods", nargs="+", default=["round_robin", "knockout"], choices=["round_robin", "knockout"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--coverage", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


def stage(module, **values):
    from egt.core.config import load_config

    return module.run(load_config(module.Config, None, values))


# ---------------------------------------------------------------- candidates

def wrong_claims(scene: dict, rng: random.Random) -> list[str] | None:
    """Every wrong claim of the scene's kind, the pair's own flaw first, the rest shuffled."""
    from egt.data import synth

    kind, claim = scene["kind"], scene["claim"]
    if kind == "describe":
        options = [f"{c} {s}" for c in synth.COLOURS for s in synth.SHAPES]
    elif kind == "count":
        options = [str(k) for k in range(1, 10)]
    else:
        return None  # colour (5 wrong colours) and spatial (one) cannot fill N = 8
    others = [o for o in options if o not in (claim, scene["wrong_claim"])]
    rng.shuffle(others)
    return [scene["wrong_claim"]] + others


def candidate_files(pairs, sizes, n_questions: int, seed: int, out: Path) -> dict[int, Path]:
    from egt.data import synth

    rows = {n: [] for n in sizes}
    for pair in pairs:
        scene = pair.meta.get("scene")
        if not scene:
            continue
        rng = random.Random(f"bench-judge-use:{seed}:{pair.id}")
        wrongs = wrong_claims(scene, rng)
        if wrongs is None or len(wrongs) < max(sizes) - 1:
            continue
        right = synth._response(scene["kind"], scene["claim"])  # the synthetic benchmark's phrasing
        for n in sizes:
            candidates = [right] + [synth._response(scene["kind"], w) for w in wrongs[:n - 1]]
            order = list(range(n))
            random.Random(f"bench-judge-use:order:{seed}:{pair.id}:{n}").shuffle(order)
            rows[n].append({"id": pair.id, "images": [{"path": ref.path} for ref in pair.images],
                            "question": pair.question, "candidates": [candidates[i] for i in order],
                            "best": order.index(0)})
        if len(rows[sizes[0]]) == n_questions:
            break
    paths = {}
    for n in sizes:
        paths[n] = out / f"candidates_n{n}.jsonl"
        paths[n].write_text("".join(json.dumps(r) + "\n" for r in rows[n]))
    return paths


def debiased_from_eval(eval_dir: Path) -> list:
    """egt.judge.api Comparisons (response 1 = the chosen one) from `egt eval`'s both-order judgements."""
    from egt.core.prompts import parse_verdict
    from egt.judge.api import combine
    from egt.model.entropy import ResponseEntropy, ScoredJudgement

    def scored(record, k):
        text, e = record["texts"][k], record["entropies_nats"]
        nan = lambda v: float("nan") if v is None else v  # noqa: E731
        verdict = parse_verdict(text)
        return ScoredJudgement(text, verdict, record["n_tokens"][k], False, ResponseEntropy(
            verdict.verdict, e["answer"][k], nan(e["sentence"][k]), nan(e["mean"][k]), nan(e["max"][k]),
            record["n_tokens"][k]))

    out = []
    for row in (json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()):
        first, second = row["judgements"]["chosen_first"], row["judgements"]["chosen_second"]
        out.append(combine(("given", "swapped"), [[scored(first, k) for k in range(len(first["texts"]))],
                                                  [scored(second, k) for k in range(len(second["texts"]))]],
                           "exact"))
    return out


# ---------------------------------------------------------------- the bench

def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from egt.core import selective
    from egt.core.records import read_pairs, write_pairs
    from egt.judge import rerank, verdicts
    from egt.reporting.tables import markdown_table
    from egt.stages import evaluate

    args.out.mkdir(parents=True, exist_ok=True)
    pairs = read_pairs(args.data)
    eval_pairs = pairs[:args.n_eval] if args.n_eval else pairs
    data = args.data
    if args.n_eval:
        data = write_pairs(eval_pairs, args.out / "eval_pairs.parquet")
    common = dict(model=args.model, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=False)
    timings, result = {}, {"model": args.model, "data": str(args.data), "pairs": len(eval_pairs)}

    # 1. egt eval
    started = time.perf_counter()
    if not str(args.model).startswith(("http://", "https://")):
        stage(evaluate, benchmark="synthetic", data=str(data), output=str(args.out / "eval"), **common)
        timings["eval_s"] = round(time.perf_counter() - started, 1)
        eval_metrics = json.loads((args.out / "eval" / "metrics.json").read_text())
        result["eval"] = {"overall": eval_metrics["overall"], "abstention": eval_metrics["abstention"]}

    # 2. the debiased verdict, abstention; then egt judge itself
    comparisons = debiased_from_eval(args.out / "eval") if "eval" in result else []
    correct = [c.verdict == 1 for c in comparisons]
    debiased = {}
    for metric in METRICS:
        values = [c.entropies[metric] for c in comparisons]
        if not values or all(v is None for v in values):
            continue
        at = selective.selective_accuracy(values, correct, args.coverage)
        debiased[metric] = {"accuracy": selective.accuracy(correct), "accuracy_at": at["accuracy"],
                            "coverage": at["coverage"], "aurc": selective.aurc(values, correct)}
    result["debiased"] = debiased
    best = min(debiased, key=lambda m: debiased[m]["aurc"]) if debiased else "max"
    n_judge = len(eval_pairs) if args.n_judge is None else min(args.n_judge, len(eval_pairs))
    if n_judge:
        started = time.perf_counter()
        judged = args.out / "judge"
        stage(verdicts, pairs=str(data), output=str(judged), coverage=args.coverage, abstain_metric=best,
              limit=n_judge, **common)
        timings["judge_s"] = round(time.perf_counter() - started, 1)
        result["judge_abstain"] = json.loads((judged / "summary.json").read_text())

    # 3. egt rerank
    files = candidate_files(pairs, sorted(args.sizes), args.n_rerank, args.seed, args.out)
    result["rerank"] = {}
    started = time.perf_counter()
    for n, path in files.items():
        folders = {"round_robin": args.out / f"rerank_rr_n{n}", "knockout": args.out / f"rerank_ko_n{n}"}
        for method in args.methods:
            if method == "knockout" and "round_robin" in args.methods:
                ko, rr = folders["knockout"], folders["round_robin"]
                ko.mkdir(parents=True, exist_ok=True)
                for name in (rerank.LOG_NAME, rerank.SETTINGS_NAME):  # knockout's matches are round robin's
                    if not (ko / name).exists():
                        shutil.copy(rr / name, ko / name)
            stage(rerank, candidates=str(path), output=str(folders[method]), method=method,
                  image_root=str(data.parent), **common)   # the candidates point at the data's images
        result["rerank"][n] = {m: json.loads((folders[m] / "summary.json").read_text()) for m in args.methods}
    timings["rerank_s"] = round(time.perf_counter() - started, 1)
    result["timings"] = timings
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))

    # tables
    cov = f"{args.coverage:.0%}"
    print(f"\n## Abstention by entropy: {args.model} on {args.data} ({len(eval_pairs)} pairs, greedy)\n")
    if "eval" in result:
        table = []
        for view in ("chosen_first", "both_orders"):
            for metric, v in result["eval"]["abstention"]["views"].get(view, {}).items():
                table.append([evaluate.VIEW_TITLES[view], metric, v["accuracy_at"]["1"],
                              v["accuracy_at"][f"{args.coverage:g}"], v["aurc"]])
        print("`egt eval` (per order):\n")
        print(markdown_table(["view", "metric", "accuracy at 100%", f"accuracy at {cov}", "AURC"], table, digits=3))
    table = [[metric, v["accuracy"], v["accuracy_at"], v["coverage"], v["aurc"]] for metric, v in debiased.items()]
    print("The debiased verdict (`egt judge`, `egt.Judge`: vote over both orders; a tie is wrong):\n")
    print(markdown_table(["metric", "accuracy at 100%", f"accuracy at {cov}", "coverage reached", "AURC"],
                         table, digits=3))
    if "judge_abstain" in result:
        s = result["judge_abstain"]
        print(f"`egt judge --coverage {args.coverage} --abstain_metric {best}` on {s['pairs']} pairs: kept "
              f"{s['coverage']:.3f}, accuracy {s['accuracy']:.3f} -> {s['accuracy_kept']:.3f} on the kept ones.\n")
    table = []
    for n, methods in result["rerank"].items():
        first = next(iter(methods.values()))
        table.append([n, first["questions"], first["random_pick_accuracy"]]
                     + [methods[m]["top1_accuracy"] for m in args.methods]
                     + [methods[m]["matches"] // methods[m]["questions"] for m in args.methods])
    print("## Best-of-N (`egt rerank`, both orders, greedy)\n")
    print(markdown_table(["N", "questions", "random pick"] + [f"top-1 {m}" for m in args.methods]
                         + [f"matches / question ({m})" for m in args.methods], table, digits=3))
    print(f"Timings: {timings}")
    print("\nReproduce: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
