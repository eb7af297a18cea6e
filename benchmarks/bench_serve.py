"""Load on `egt serve`: throughput and latency vs concurrency and batch size, saturation, shutdown, kill and restart.

    python benchmarks/bench_serve.py --model runs/demo/sft/model --data runs/demo/data/test.parquet
    python benchmarks/bench_serve.py --model src/egt/assets/tiny_judge_base --data runs/demo/data/test.parquet \\
        --batch-sizes 8 --concurrency 1 8 --requests 16           # a quick look

Every section starts a real `egt serve` process on 127.0.0.1 (cache off: every request is judged) and drives
it with client threads over keep-alive HTTP/1.1 connections; each request is POST /v1/score with one item (a
pair of `--data`: its image inline, response_1 judged against response_2 as the reference, both orders, so
two judgements per request; items are distinct).

1. sweep: for each `--batch-sizes` B (max_batch_size; max_batch_wait_ms `--wait-ms`) and each `--concurrency` C,
   C clients send `--requests` requests, `--repeats` times: requests/s (median and range), judgements/s, latency
   p50 / p99 (all repeats pooled), answers by status, and the load average (other jobs on the machine).
   The queue (max_queue 256 judgements) holds C x 2 judgements, so every answer must be a 200.
2. saturation: `--burst` clients at once against a server whose queue holds `--small-queue` judgements: the
   requests beyond it are answered 503 with Retry-After at once (p99 of those answers), none hangs, the rest
   are 200; the same burst through egt.judge.serve_client (which retries after Retry-After) loses nothing.
3. SIGTERM with requests in flight: every one answered 200 and the process exits 0.
4. kill -9 mid-run and a restart on the same port, under clients that retry (egt.judge.serve_client): requests
   lost (0 expected), the longest a request waited, and whether the restarted server gives the same rewards.
5. determinism (in process, no server): `--n-determinism` pairs judged one at a time, then in batches of 8 and
   32 of shuffled neighbours (other lengths, so other padding): the largest |change| of prob_1 and of each
   order's probability, and how many judgement texts changed.

Prints Markdown tables and the command; writes `--out`/bench_serve.json. Machine C has 2 CPU cores: the
server's model and the clients share them, so the numbers are a floor, not what a GPU judge serves.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/demo/sft/model", help="judge checkpoint folder")
    ap.add_argument("--data", type=Path, default=Path("runs/demo/data/test.parquet"), help="pairs (images inline)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_serve"))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 48])
    ap.add_argument("--requests", type=int, default=96, help="requests per (batch size, concurrency) level and repeat")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each level (the table gives the median "
                                                           "and the range of req/s)")
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--burst", type=int, default=48)
    ap.add_argument("--small-queue", type=int, default=16)
    ap.add_argument("--n-determinism", type=int, default=64)
    ap.add_argument("--sections", nargs="+", default=["sweep", "saturation", "shutdown", "restart", "determinism"])
    return ap.parse_args(argv)


# ---------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args, port: int, *extra: str):
        self.ready = args.out / f"ready-{port}-{time.monotonic_ns()}"
        self.log = open(args.out / f"serve-{port}.log", "a")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        self.proc = subprocess.Popen([sys.executable, "-m", "egt.cli", "serve", str(args.model), "--port", str(port),
                                      "--device", "cpu", "--cache_size", "0", "--access_log", "false",
                                      "--max_new_tokens", str(args.max_new_tokens), "--ready_file", str(self.ready),
                                      *extra], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit(f"egt serve did not start (see {self.log.name})")
            time.sleep(0.1)
        self.url = self.ready.read_text().strip()
        self.port = port

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(300)
        self.log.close()
        return code


# ---------------------------------------------------------------- the load

def items(data: Path, n: int) -> list[bytes]:
    """n distinct request bodies (one /v1/score item each), cycling through the pairs with a numbered question."""
    from egt.core.records import read_pairs
    from egt.judge.serve_client import image_field

    pairs = read_pairs(data)
    bodies = []
    for i in range(n):
        p = pairs[i % len(pairs)]
        question = p.question if i < len(pairs) else f"{p.question} ({i // len(pairs)})"
        bodies.append(json.dumps({"items": [{"images": [image_field(r.read_bytes()) for r in p.images],
                                             "question": question, "response": p.response_1,
                                             "reference": p.response_2}]}).encode())
    return bodies


def drive(url: str, bodies: list[bytes], concurrency: int) -> dict:
    """`concurrency` threads, each on one keep-alive connection with its own X-Client-Id (a trainer's worker),
    send the bodies; latency and status of each."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    lock = threading.Lock()
    queue = list(enumerate(bodies))
    out: list[tuple[int, float, int]] = []  # (index, seconds, status)

    def client(k: int):
        headers = {"Content-Type": "application/json", "X-Client-Id": f"bench-{k}"}
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        while True:
            with lock:
                if not queue:
                    break
                index, body = queue.pop(0)
            started = time.perf_counter()
            try:
                conn.request("POST", "/v1/score", body, headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=600)
            with lock:
                out.append((index, time.perf_counter() - started, status))
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = [s for _, s, st in out if st == 200]
    statuses: dict[str, int] = {}
    for _, _, st in out:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    refused = [s for _, s, st in out if st in (429, 503)]
    return {"requests": len(out), "wall_s": wall, "requests_per_s": len(ok) / wall, "judgements_per_s": 2 * len(ok) / wall,
            "p50_s": float(np.percentile(ok, 50)) if ok else None, "p99_s": float(np.percentile(ok, 99)) if ok else None,
            "statuses": statuses, "refused_p99_s": float(np.percentile(refused, 99)) if refused else None,
            "latencies": ok}


def metric(url: str, name: str) -> float | None:
    """One unlabelled sample of the server's /metrics."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


# ---------------------------------------------------------------- sections

def sweep(args) -> list[dict]:
    rows = []
    per_level = args.requests * args.repeats
    bodies = items(args.data, per_level * len(args.concurrency))
    for batch in args.batch_sizes:
        server = Server(args, free_port(), "--max_batch_size", str(batch), "--max_batch_wait_ms", str(args.wait_ms))
        drive(server.url, bodies[:2], 1)  # warm-up
        for k, c in enumerate(args.concurrency):
            before = (metric(server.url, "egt_serve_batch_size_sum") or 0, metric(server.url, "egt_serve_batch_size_count") or 0)
            runs, load = [], []
            for r in range(args.repeats):
                start = k * per_level + r * args.requests
                load.append(os.getloadavg()[0])
                runs.append(drive(server.url, bodies[start:start + args.requests], c))
            after = (metric(server.url, "egt_serve_batch_size_sum"), metric(server.url, "egt_serve_batch_size_count"))
            latencies = [x for run in runs for x in run["latencies"]]
            rates = sorted(run["requests_per_s"] for run in runs)
            statuses: dict[str, int] = {}
            for run in runs:
                for code, n in run["statuses"].items():
                    statuses[code] = statuses.get(code, 0) + n
            result = {"max_batch_size": batch, "concurrency": c, "requests": sum(run["requests"] for run in runs),
                      "requests_per_s": float(np.median(rates)), "requests_per_s_range": [rates[0], rates[-1]],
                      "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
                      "p99_s": float(np.percentile(latencies, 99)) if latencies else None, "statuses": statuses,
                      "mean_batch": (after[0] - before[0]) / max(after[1] - before[1], 1),
                      "load_average_at_start": load}
            rows.append(result)
            print(f"  batch {batch:>3} concurrency {c:>3}: {result['requests_per_s']:.2f} req/s ({rates[0]:.2f}-"
                  f"{rates[-1]:.2f}), p50 {result['p50_s']:.3f} s, p99 {result['p99_s']:.3f} s, {statuses}, "
                  f"load {max(load):.1f}", flush=True)
        server.stop()
    return rows


def saturation(args) -> dict:
    from egt.judge.serve_client import ServeClient

    server = Server(args, free_port(), "--max_batch_size", "8", "--max_queue", str(args.small_queue))
    bodies = items(args.data, args.burst * 2)
    raw = drive(server.url, bodies[:args.burst], args.burst)
    raw.pop("latencies")
    client = ServeClient(server.url, retries=60, backoff_s=0.2, max_backoff_s=5)
    lost, started = 0, time.perf_counter()
    with ThreadPoolExecutor(args.burst) as pool:
        futures = [pool.submit(client.request, "POST", "/v1/score", json.loads(b)) for b in bodies[args.burst:]]
        for f in futures:
            try:
                f.result()
            except Exception:  # noqa: BLE001 - counted
                lost += 1
    retried = {"requests": len(futures), "lost": lost, "retries": client.retried,
               "wall_s": time.perf_counter() - started}
    code = server.stop()
    return {"max_queue": args.small_queue, "burst": args.burst, "raw": raw, "with_retries": retried, "exit": code}


def shutdown(args) -> dict:
    server = Server(args, free_port(), "--max_batch_size", "8")
    bodies = items(args.data, 16)
    results = {}

    def send():
        results.update(drive(server.url, bodies, 16))

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 60
    while (metric(server.url, "egt_serve_running_judgements") or 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    sent_at = time.perf_counter()
    server.proc.send_signal(signal.SIGTERM)
    thread.join()
    code = server.stop()
    return {"in_flight": len(bodies), "statuses": results["statuses"], "exit": code,
            "p99_s": results["p99_s"],
            "drain_s": time.perf_counter() - sent_at}


def restart(args) -> dict:
    from egt.judge.serve_client import ServeClient

    port = free_port()
    server = Server(args, port, "--max_batch_size", "8")
    bodies = [json.loads(b) for b in items(args.data, 48)]
    client = ServeClient(server.url, retries=60, backoff_s=0.2, max_backoff_s=2)
    rewards: dict[int, float] = {}
    waits: list[float] = []
    errors = []

    def worker(indices):
        for i in indices:
            started = time.perf_counter()
            try:
                rewards[i] = client.request("POST", "/v1/score", bodies[i])["rewards"][0]
            except Exception as exc:  # noqa: BLE001 - counted as lost
                errors.append(repr(exc))
            waits.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(range(k, 48, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    while len(rewards) < 12:
        time.sleep(0.02)
    killed_at = time.perf_counter()
    server.proc.kill()
    server.proc.wait()
    server.log.close()
    again = Server(args, port, "--max_batch_size", "8")
    restarted_s = time.perf_counter() - killed_at
    for t in threads:
        t.join()
    check = ServeClient(again.url, retries=0)
    # Asked again one at a time (other batches than during the run): equal up to the batching noise.
    diff = max(abs(check.request("POST", "/v1/score", bodies[i])["rewards"][0] - rewards[i]) for i in sorted(rewards)[:8])
    code = again.stop()
    return {"requests": 48, "answered": len(rewards), "lost": 48 - len(rewards), "errors": errors[:3],
            "retries": client.retried, "restart_s": restarted_s, "longest_wait_s": max(waits),
            "max_abs_reward_change_after_restart": diff, "exit": code}


def determinism(args) -> dict:
    import random

    from egt.core.records import read_pairs
    from egt.judge.probability import RewardJudge

    pairs = read_pairs(args.data)[:args.n_determinism]
    judge = RewardJudge.from_pretrained(args.model, max_new_tokens=args.max_new_tokens, device="cpu", batch_size=1)
    alone = [judge.score([p])[0] for p in pairs]
    out = {"pairs": len(pairs)}
    for size in (8, 32):
        judge.backend.batch_size = size
        order = list(range(len(pairs)))
        random.Random(size).shuffle(order)
        batched = dict(zip(order, judge.score([pairs[i] for i in order])))
        diffs = [abs(batched[i].prob_1 - alone[i].prob_1) for i in range(len(pairs))]
        per_order = [abs(batched[i].prob_by_order[o] - alone[i].prob_by_order[o]) for i in range(len(pairs))
                     for o in ("given", "swapped")]
        texts = sum(a.text != b.text for i in range(len(pairs))
                    for a, b in zip(alone[i].comparison.traces, batched[i].comparison.traces))
        verdicts = sum(alone[i].verdict != batched[i].verdict for i in range(len(pairs)))
        out[f"batch_{size}"] = {"max_abs_prob": max(diffs), "mean_abs_prob": sum(diffs) / len(diffs),
                                "max_abs_prob_per_order": max(per_order), "texts_changed": texts,
                                "verdicts_changed": verdicts}
        print(f"  batch {size}: max |d prob_1| {max(diffs):.2e}, per order {max(per_order):.2e}, "
              f"{texts} of {2 * len(pairs)} texts changed", flush=True)
    return out


# ---------------------------------------------------------------- report

def report(results: dict, args, argv) -> None:
    from egt.reporting.tables import markdown_table

    print(f"\n`{shlex.join(['python', 'benchmarks/bench_serve.py', *argv])}` (model {args.model}, "
          f"max_new_tokens {args.max_new_tokens}, {os.cpu_count()} CPU cores)\n")
    if "sweep" in results:
        rows = [[r["max_batch_size"], r["concurrency"], r["requests"],
                 f"{r['requests_per_s']:.2f} ({r['requests_per_s_range'][0]:.2f}-{r['requests_per_s_range'][1]:.2f})",
                 2 * r["requests_per_s"], r["p50_s"], r["p99_s"], r["mean_batch"],
                 " ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())), max(r["load_average_at_start"])]
                for r in results["sweep"]]
        print(markdown_table(["max_batch_size", "clients", "requests", "req/s median (range)", "judgements/s", "p50 s",
                              "p99 s", "mean batch", "answers", "load avg"], rows, digits=3))
    if "saturation" in results:
        s = results["saturation"]
        print(f"\nSaturation: {s['burst']} requests at once, queue of {s['max_queue']} judgements: "
              f"answers {s['raw']['statuses']}, refusals answered within {s['raw']['refused_p99_s'] or 0:.3f} s (p99); "
              f"through the retrying client: {s['with_retries']['requests']} requests, {s['with_retries']['lost']} "
              f"lost, {s['with_retries']['retries']} retries, {s['with_retries']['wall_s']:.1f} s; exit {s['exit']}")
    if "shutdown" in results:
        s = results["shutdown"]
        print(f"\nSIGTERM with {s['in_flight']} requests in flight: answers {s['statuses']}, drained in "
              f"{s['drain_s']:.1f} s, exit status {s['exit']}")
    if "restart" in results:
        s = results["restart"]
        print(f"\nkill -9 and restart: {s['requests']} requests from 4 retrying clients, {s['lost']} lost, "
              f"{s['retries']} retries, restart took {s['restart_s']:.1f} s, longest wait {s['longest_wait_s']:.1f} s, "
              f"rewards asked again after the restart differ by at most {s['max_abs_reward_change_after_restart']:.1e}")


    if "determinism" in results:
        d = results["determinism"]
        for size in (8, 32):
            r = d[f"batch_{size}"]
            print(f"\nDeterminism, {d['pairs']} pairs alone vs in batches of {size}: max |change of prob_1| "
                  f"{r['max_abs_prob']:.2e} (mean {r['mean_abs_prob']:.2e}; one order alone {r['max_abs_prob_per_order']:.2e}), "
                  f"{r['texts_changed']} judgement texts and {r['verdicts_changed']} verdicts changed")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.sections:
        print(f"[{name}]", flush=True)
        results[name] = globals()[name](args)
        (args.out / "bench_serve.json").write_text(json.dumps(results, indent=2))
    report(results, args, argv)


if __name__ == "__main__":
    main()
