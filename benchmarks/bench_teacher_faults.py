"""`egt distill` against a teacher that injects faults: nothing lost, the same result as without faults.

    python benchmarks/bench_teacher_faults.py                      # 2,000 pairs, default fault mix, kill -9 at 25%
    python benchmarks/bench_teacher_faults.py --pairs 500 --repeats 3 --kill-at 0 --stream

Starts tests/fault_teacher.py as its own process (a loopback server speaking the OpenAI protocol whose
answers depend only on the request), runs `egt distill` as a subprocess against a fault-free copy, then
against one that injects the default mix (~22% of requests fail: 429 with retry-after-ms, 500, 503,
timeouts, dropped connections, slow and truncated bodies, malformed JSON, an error object in a 200),
kills it with SIGKILL once `--kill-at` of the pairs are journalled, and reruns the same command until it
exits 0. Checks that traces.parquet, dropped.parquet and the journal (without retry counts) equal the
fault-free run's, and prints a Markdown table: pairs, requests, faults injected by kind, retries, runs,
wall time and requests/s, per repeat (each repeat draws other faults: `--seed` + repeat).
Everything goes to --out (bench.json, the run folders, the servers' logs).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]   # this checkout's egt and its fault teacher

VOLATILE = ("retries", "faults")
# Subprocesses run this checkout's egt too.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--faults", default="default", help="kind=p,... (tests/fault_teacher.py FAULT_KINDS) or default")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout-s", type=float, default=1.0, help="request_timeout_s (timeout faults outlast it)")
    ap.add_argument("--max-retries", type=int, default=8)
    ap.add_argument("--kill-at", type=float, default=0.25, help="SIGKILL after this fraction is journalled (0: never)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--stream", action="store_true", help="stream: true (server-sent events)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_teacher_faults"))
    return ap.parse_args(argv)


def start_server(faults: str, timeout_s: float, seed: int, log: Path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fault_teacher.py"), "--faults", faults,
                             "--timeout-s", str(timeout_s), "--seed", str(seed)],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=ENV)
    return proc, proc.stdout.readline().strip()


def server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url + "/stats", timeout=10) as response:
        return json.loads(response.read())


def distill_cmd(args, pairs: Path, out: Path, base_url: str) -> list[str]:
    return [sys.executable, "-m", "egt.cli", "distill", f"pairs={pairs}", f"output={out}", "backend=openai",
            f"base_url={base_url}", "model=teacher-x", "api_key_env=null", f"concurrency={args.concurrency}",
            f"request_timeout_s={args.timeout_s}", f"max_retries={args.max_retries}", "backoff_base_s=0.001",
            "backoff_max_s=0.02", "refusals_final=true", "progress=false", f"stream={str(args.stream).lower()}"]


def journal_core(out: Path) -> dict:
    from egt.core.files import Journal

    return {k: {f: v for f, v in rec.items() if f not in VOLATILE}
            for k, rec in Journal(out / "journal.jsonl", key="id").load().items()}


def same_results(got: Path, ref: Path) -> bool:
    from egt.core.records import read_rows

    return all(read_rows(got / n) == read_rows(ref / n) for n in ("traces.parquet", "dropped.parquet")) \
        and journal_core(got) == journal_core(ref) and not (got / "failed.parquet").exists()


def faulty_run(args, pairs: Path, out: Path, base_url: str, log: Path) -> dict:
    """Run (killed at --kill-at), then rerun until exit 0; wall time over all of it."""
    cmd = distill_cmd(args, pairs, out, base_url)
    started, runs, killed_after = time.perf_counter(), 0, None
    with open(log, "a") as err:
        if args.kill_at > 0:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=ENV)
            journal = out / "journal.jsonl"
            while proc.poll() is None:
                if journal.exists() and journal.read_bytes().count(b"\n") >= args.kill_at * args.pairs:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    killed_after = journal.read_bytes().count(b"\n")
                    break
                time.sleep(0.05)
            runs += 1
        for _ in range(5):
            runs += 1
            if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=ENV).returncode == 0:
                break
    return {"wall_s": time.perf_counter() - started, "runs": runs, "killed_after_pairs": killed_after}


def main(argv=None) -> None:
    from fault_teacher import fault_pairs

    args = parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    pairs = fault_pairs(args.pairs, args.out / "data")
    clean, clean_url = start_server("", args.timeout_s, 0, args.out / "server_clean.log")
    try:
        ref = args.out / "ref"
        t0 = time.perf_counter()
        subprocess.run(distill_cmd(args, pairs, ref, clean_url), check=True, stdout=subprocess.DEVNULL,
                       stderr=open(args.out / "ref.log", "w"), env=ENV)
        ref_wall = time.perf_counter() - t0
        ref_requests = server_stats(clean_url)["requests"]
    finally:
        clean.terminate()
        clean.wait(timeout=30)
    rows = []
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        server, url = start_server(args.faults, args.timeout_s, seed, args.out / f"server_{repeat}.log")
        try:
            out = args.out / f"faulty_{repeat}"
            timing = faulty_run(args, pairs, out, url, args.out / f"faulty_{repeat}.log")
            served = server_stats(url)
        finally:
            server.terminate()
            server.wait(timeout=30)
        stats = json.loads((out / "stats.json").read_text())
        rows.append({"seed": seed, **timing, "requests": served["requests"], "injected": served["injected"],
                     "injected_total": served["injected_total"], "retries": stats["retries"],
                     "requests_per_s": served["requests"] / timing["wall_s"], "kept": stats["kept"],
                     "same_as_fault_free": same_results(out, ref), "lost": stats["outcomes"]["failed"]
                     + stats["outcomes"]["not_sent"]})
    kinds = sorted({k for r in rows for k in r["injected"]})
    print(f"\n`egt distill` under injected faults: {args.pairs} pairs, concurrency {args.concurrency}, "
          f"request_timeout_s {args.timeout_s}, max_retries {args.max_retries}, "
          f"{'kill -9 at ' + format(args.kill_at, '.0%') if args.kill_at else 'no kill'}"
          f"{', stream' if args.stream else ''}\n")
    print(f"fault-free: {ref_requests} requests in {ref_wall:.1f} s ({ref_requests / ref_wall:.1f} requests/s)\n")
    head = ["seed", "requests", "faults injected", *kinds, "retries", "runs", "wall s", "requests/s", "lost",
            "same as fault-free"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["seed"], r["requests"], f"{r['injected_total']} ({100 * r['injected_total'] / r['requests']:.1f}%)",
                 *[r["injected"].get(k, 0) for k in kinds], r["retries"], r["runs"], f"{r['wall_s']:.1f}",
                 f"{r['requests_per_s']:.1f}", r["lost"], "yes" if r["same_as_fault_free"] else "NO"]
        print("| " + " | ".join(map(str, cells)) + " |")
    if len(rows) > 1:
        walls = [r["wall_s"] for r in rows]
        print(f"\nwall time {statistics.mean(walls):.1f} ± {statistics.stdev(walls):.1f} s over {len(rows)} repeats")
    command = "python benchmarks/bench_teacher_faults.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"\nreproduce: {command.strip()}")
    (args.out / "bench.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "fault_free": {"requests": ref_requests, "wall_s": ref_wall},
                                                     "rows": rows}, indent=2))
    if not all(r["same_as_fault_free"] and not r["lost"] for r in rows):
        sys.exit("a faulty run differs from the fault-free run")


if __name__ == "__main__":
    main()
