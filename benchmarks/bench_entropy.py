"""Time and peak extra memory of egt.model.entropy.token_entropy against a naive full-block softmax.

Logits of shape [T, 151936] (Qwen2.5's vocabulary) for T in {512, 4096}, bf16 and fp32.
The naive reference upcasts the whole block to fp32, takes softmax and log_softmax and sums
-p log p: that is what "compute the entropy from the logits" does without care. egt's version
works on chunks of positions, so its extra memory is a few hundred MB whatever T is.

Peak extra memory = peak above what was allocated before the call (the logits themselves are
not counted). On CUDA it is torch.cuda.max_memory_allocated; on CPU torch's allocations are
invisible to tracemalloc, so a background thread samples the process RSS every ~1 ms.

    python benchmarks/bench_entropy.py                       # CPU
    python benchmarks/bench_entropy.py --device cuda         # one GPU
    python benchmarks/bench_entropy.py --positions 512 --dtypes bf16 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import threading
import time

import torch

from egt.model.entropy import default_chunk_size, token_entropy

REFERENCE_ROWS = 32  # rows checked against a float64 -sum p log p
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def naive_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    z = logits.float() / temperature
    p = torch.softmax(z, dim=-1)
    return -(p * torch.log_softmax(z, dim=-1)).sum(dim=-1)


def reference_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    p = torch.softmax(logits.double() / temperature, dim=-1)
    return -torch.special.xlogy(p, p).sum(dim=-1)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """Peak RSS above the level at entry, sampled by a background thread."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s

    def __enter__(self):
        gc.collect()
        self.base = _rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        self.peak = max(self.peak, _rss_bytes())
        self._stop.set()
        self._thread.join()

    @property
    def extra_bytes(self) -> int:
        return self.peak - self.base


def measure(fn, logits: torch.Tensor, device: str) -> tuple[float, int, torch.Tensor]:
    """(wall seconds, peak extra bytes, result) of one call."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn(logits)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        return elapsed, torch.cuda.max_memory_allocated() - base, out
    with RssPeak() as rss:
        start = time.perf_counter()
        out = fn(logits)
        elapsed = time.perf_counter() - start
    return elapsed, rss.extra_bytes, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--positions", type=int, nargs="+", default=[512, 4096], help="T values")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per cell; the fastest is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = args.device
    gen = torch.Generator(device=device).manual_seed(args.seed)
    chunk = default_chunk_size(args.vocab)
    warm = torch.randn(8, args.vocab, device=device, generator=gen)
    token_entropy(warm), naive_entropy(warm)

    rows = []
    for dtype_name in args.dtypes:
        for positions in args.positions:
            logits = (torch.randn(positions, args.vocab, device=device, generator=gen) * 3).to(DTYPES[dtype_name])
            cells = {}
            for impl, fn in (("egt chunked", lambda x: token_entropy(x, args.temperature)),
                             ("naive fp32", lambda x: naive_entropy(x, args.temperature))):
                best = None
                for _ in range(args.repeats):
                    elapsed, extra, out = measure(fn, logits, device)
                    best = (elapsed, extra, out) if best is None or elapsed < best[0] else best
                    del out
                cells[impl] = best
                gc.collect()
            reference = reference_entropy(logits[:REFERENCE_ROWS], args.temperature)
            naive_extra = cells["naive fp32"][1]
            for impl, (elapsed, extra, out) in cells.items():
                rel_err = ((out[:REFERENCE_ROWS].double() - reference) / reference).abs().max().item()
                rows.append((dtype_name, positions, impl, elapsed, extra / 2**20,
                             naive_extra / max(extra, 1), rel_err))
            del logits, cells
            gc.collect()

    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else \
        f"CPU ({torch.get_num_threads()} threads)"
    print(f"token_entropy vs naive, vocab {args.vocab}, T={args.temperature}, chunk {chunk} rows, "
          f"{device_name}, torch {torch.__version__}\n")
    print("| dtype | positions | implementation | time (s) | peak extra memory (MiB) | naive / this memory "
          f"| max rel. error vs fp64 ({REFERENCE_ROWS} rows) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for dtype_name, positions, impl, elapsed, extra_mib, ratio, rel_err in rows:
        print(f"| {dtype_name} | {positions} | {impl} | {elapsed:.3f} | {extra_mib:,.0f} | {ratio:.1f}x | {rel_err:.1e} |")
    print(f"\nReproduce: python {shlex.join(['benchmarks/bench_entropy.py'] + (sys.argv[1:] if argv is None else argv))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
