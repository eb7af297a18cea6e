"""Page weight and load time of `egt view` for large score files, measured in headless Chromium.

Builds N synthetic pool pairs (`egt data synth`: one 64x64 PNG each, all distinct), K judgements per pair
written like the tiny judge writes them (oracle traces in its phrasings, `--repeat R` repeats the
reasoning R times to imitate long traces), word-level tokens with seeded random entropies, and the
score columns from egt.model.entropy; then writes the viewer and opens it in headless Chromium (egt.reporting.browser):

- page weight: the HTML file (its data is gzip-compressed inside; the images are not);
- write: seconds `egt.reporting.view.write_view` takes;
- load: navigation start -> first page of rows rendered (median of `--repeats` loads), with the share
  that is unpacking and parsing the embedded data; JS heap in use after load (after a garbage collection);
- filter / sort / search: one update of the list (filter or sort all N pairs, render one page), ms;
- open pair: click a row -> its detail and K token views rendered and laid out, ms.

    python benchmarks/bench_view.py                                   # 1,000 and 10,000 pairs, K = 4
    python benchmarks/bench_view.py --pairs 10000 --no-tokens         # the same without tokens.parquet
    python benchmarks/bench_view.py --pairs 1000 --samples 8 --repeat 8   # long traces (~500 tokens)
"""

from __future__ import annotations

import argparse
import random
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from egt.core.records import read_pairs, write_rows
from egt.data import synth
from egt.data.synth import oracle_trace
from egt.model.entropy import pair_entropies, response_entropies
from egt.reporting.browser import headless_chromium
from egt.reporting.view import write_view

TOKEN = re.compile(r"</?think>|</?answer>|\s*\w+|\s*[^\w\s]|\s+")


def make_scores(folder: Path, n: int, samples: int, repeat: int, seed: int = 0) -> tuple[Path, float]:
    """scores.parquet + tokens.parquet of n synthetic pairs; returns (scores path, mean tokens per judgement)."""
    pool = synth.run(synth.Config(split="pool", n=n, seed=seed, noise="ambiguity:0.3", output=folder / "pool.parquet"))
    rng, gen = random.Random(seed), np.random.default_rng(seed)
    rows, tokens, counts = [], [], []
    for pair in read_pairs(pool):
        responses, texts = [], []
        for k in range(samples):
            text = oracle_trace(pair, faithful=rng.random() > 0.3, rng=rng)
            think, rest = text.split("</think>", 1)
            text = think + (" " + think[len("<think>"):]) * (repeat - 1) + "</think>" + rest
            pieces = TOKEN.findall(text)
            assert "".join(pieces) == text
            h = np.round(gen.exponential(0.03, len(pieces)) + (gen.random(len(pieces)) < 0.05) * gen.exponential(0.8, len(pieces)), 6)
            spans = np.cumsum([0] + [len(p) for p in pieces])
            responses.append(response_entropies(text, list(zip(spans[:-1], spans[1:])), h))
            texts.append(text)
            counts.append(len(pieces))
            tokens.append({"id": pair.id, "sample": k, "token_ids": list(range(len(pieces))), "tokens": pieces,
                           "token_entropies_nats": h.tolist()})
        row = pair.to_row()
        row["completions"] = texts
        row.update(pair_entropies(responses, pair.label), format_ok_rate=1.0, truncated=0)
        rows.append(row)
    write_rows(rows, folder / "scores.parquet")
    write_rows(tokens, folder / "tokens.parquet")
    return folder / "scores.parquet", float(np.mean(counts))


def measure(driver, page: Path, repeats: int) -> dict:
    loads, parse, heap = [], [], []
    for _ in range(repeats):
        driver.get("about:blank")
        driver.get(page.resolve().as_uri())
        deadline = time.time() + 300
        while not driver.execute_script("return document.body && document.body.dataset.ready === '1'"):
            if time.time() > deadline:
                raise RuntimeError("the page did not finish loading in 300 s")
            time.sleep(0.05)
        timing = driver.execute_script("return window.egtTiming")
        loads.append(timing["since_navigation_ms"])
        parse.append(timing["parse_ms"])
        driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
        heap.append(driver.execute_cdp_cmd("Runtime.getHeapUsage", {})["usedSize"])
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    if errors:
        raise RuntimeError(f"console errors: {errors[:3]}")

    def update(script: str) -> float:
        return driver.execute_script(script + "; return window.egtTiming.last_update_ms;")

    change = "const s = document.getElementById('{0}'); s.value = '{1}'; s.dispatchEvent(new Event('change'))"
    filter_ms = [update(change.format("f-maj", "wrong")), update(change.format("f-maj", ""))]
    sort_ms = [update(change.format("sort", m)) for m in ("answer", "sentence", "mean", "vote", "max")]
    search_ms = [update("const q = document.getElementById('search'); q.value = '00012'; "
                        "q.dispatchEvent(new Event('input'))"),
                 update("const q = document.getElementById('search'); q.value = ''; q.dispatchEvent(new Event('input'))")]
    open_ms = [driver.execute_script(
        "const rows = document.querySelectorAll('#rows tbody tr'); const t = performance.now(); "
        f"rows[{k}].click(); document.body.offsetHeight; return performance.now() - t;") for k in range(5)]
    return {"load_ms": statistics.median(loads), "parse_ms": statistics.median(parse),
            "heap_mib": statistics.median(heap) / 2**20,
            "filter_ms": max(filter_ms), "sort_ms": max(sort_ms), "search_ms": max(search_ms),
            "open_ms": statistics.median(open_ms)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--samples", type=int, default=4, help="K judgements per pair")
    parser.add_argument("--repeat", type=int, default=1, help="repeat each trace's reasoning R times (longer traces)")
    parser.add_argument("--no-tokens", action="store_true", help="also measure each size without tokens.parquet")
    parser.add_argument("--repeats", type=int, default=3, help="page loads per size (median)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp folder)")
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="egt-bench-view-"))
    header = ("| pairs | K | tokens / judgement | token entropies | page MiB | write s | load s "
              "(of it: unpack + JSON.parse) | JS heap MiB | filter ms | sort ms | search ms | open pair ms |")
    lines = [header, "|" + "---:|" * 12]
    with headless_chromium() as driver:
        for n in args.pairs:
            folder = root / f"n{n}_k{args.samples}_r{args.repeat}"
            folder.mkdir(parents=True, exist_ok=True)
            scores, per_judgement = make_scores(folder, n, args.samples, args.repeat)
            variants = [("yes", None)] + ([("no", folder / "no_tokens")] if args.no_tokens else [])
            for with_tokens, other in variants:
                if other is not None:  # the score file alone, in a folder without tokens.parquet
                    other.mkdir(exist_ok=True)
                    (other / "scores.parquet").write_bytes(scores.read_bytes())
                source = scores if other is None else other / "scores.parquet"
                started = time.perf_counter()
                page = write_view(source, source.parent / "view.html")
                write_s = time.perf_counter() - started
                raw = page.read_bytes()
                m = measure(driver, page, args.repeats)
                lines.append(f"| {n:,} | {args.samples} | {per_judgement:.0f} | {with_tokens} | {len(raw) / 2**20:.1f} | "
                             f"{write_s:.1f} | {m['load_ms'] / 1000:.2f} "
                             f"({m['parse_ms'] / 1000:.2f}) | {m['heap_mib']:.0f} | {m['filter_ms']:.0f} | "
                             f"{m['sort_ms']:.0f} | {m['search_ms']:.0f} | {m['open_ms']:.0f} |")
                print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    print(f"\nreproduce: python {shlex.join(['benchmarks/bench_view.py'] + (argv if argv is not None else sys.argv[1:]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
