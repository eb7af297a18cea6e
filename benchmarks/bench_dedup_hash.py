"""How far egt.data.dedup's difference hash moves when a picture is re-encoded, resized or cropped,
against the distance between different pictures (the margin behind `--exclude-max-distance`, default 6),
and what the `--exclude` pass costs.

1. Pictures: every JPEG / PNG over 30 kB shipped inside the installed packages (matplotlib's and
   scikit-learn's sample images, ...) or given with --images; nothing is downloaded. Each is compared with
   its own PNG copy, a JPEG at quality 50, a half-size PNG, a third-size JPEG (quality 70) and a copy with
   2% cut off the top-left corner (a benchmark that re-crops); then every picture with every other.
2. Look-alikes: egt's synthetic scenes (egt.data.synth, 64 x 64: a grey background and a few coloured
   shapes, all drawn the same way) -- different pictures that look far more alike than photos do. The hash
   alone may call two of them the same; how often says what the question match has to catch.
3. Cost: `exclude_benchmark_pairs` over --train training pairs against --bench benchmark pairs (PNG files on
   disk, a --overlap share of the training questions also in the benchmark, one image each), --repeats
   times: wall time per run (median, min, max) and per training pair.

    python benchmarks/bench_dedup_hash.py
    python benchmarks/bench_dedup_hash.py --images a.jpg b.png c.jpg --train 5000 --bench 1000
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import shlex
import site
import statistics
import sys
import tempfile
import time
from pathlib import Path

from egt.core.images import open_image
from egt.core.records import ImageRef, PreferencePair, write_pairs
from egt.data.dedup import DEFAULT_MAX_DISTANCE, exclude_benchmark_pairs, image_hash
from egt.data.synth import caption_examples

VARIANTS = {
    "png copy": lambda img: _encode(img, "PNG"),
    "jpeg q50": lambda img: _encode(img, "JPEG", quality=50),
    "half size": lambda img: _encode(img.resize((img.width // 2, img.height // 2)), "PNG"),
    "third, jpeg q70": lambda img: _encode(img.resize((img.width // 3, img.height // 3)), "JPEG", quality=70),
    "2% crop": lambda img: _encode(img.crop((img.width // 50, img.height // 50, img.width, img.height)), "PNG"),
}


def _encode(img, fmt: str, **kw) -> ImageRef:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kw)
    return ImageRef(data=buffer.getvalue())


def _installed_pictures(limit: int = 12) -> list[Path]:
    found = []
    for root in site.getsitepackages():
        for path in sorted(Path(root).rglob("*")):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png") and path.stat().st_size > 30_000:
                found.append(path)
    return found[:limit]


def _distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def robustness(paths: list[Path]) -> None:
    hashes = {}
    print(f"{'picture':<36}" + "".join(f"{name:>17}" for name in VARIANTS))
    worst = 0
    for path in paths:
        img = open_image(path)
        hashes[path] = image_hash(ImageRef(path=str(path)))
        distances = [_distance(hashes[path], image_hash(make(img))) for make in VARIANTS.values()]
        worst = max(worst, *distances)
        print(f"{path.name[:35]:<36}" + "".join(f"{d:>17}" for d in distances))
    between = sorted(_distance(a, b) for a, b in itertools.combinations(hashes.values(), 2))
    print(f"\nsame picture, altered: 0-{worst} bits; different pictures ({len(between)} pairs): "
          f"min {between[0]}, median {between[len(between) // 2]}, max {between[-1]} bits; "
          f"egt's default threshold: {DEFAULT_MAX_DISTANCE}")


def look_alikes(n: int) -> None:
    hashes = [image_hash(_encode(img, "PNG")) for img, _ in caption_examples(0, n, seed=0)]
    between = sorted(_distance(a, b) for a, b in itertools.combinations(hashes, 2))
    close = sum(d <= DEFAULT_MAX_DISTANCE for d in between)
    identical = sum(d == 0 for d in between)
    print(f"\nsynthetic look-alikes: {n} scenes, {len(between)} pairs of different scenes: min {between[0]}, "
          f"median {between[len(between) // 2]}, max {between[-1]} bits; within {DEFAULT_MAX_DISTANCE} bits: "
          f"{close} ({close / len(between):.2%}), identical hashes: {identical}")


def cost(n_train: int, n_bench: int, overlap: float, repeats: int) -> None:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = []
        for i, (img, _) in enumerate(caption_examples(1000, 200, seed=1)):
            path = root / f"img{i}.png"
            img.resize((448, 448)).save(path)          # a size a judge sees, so decoding is not free
            images.append(ImageRef(path=str(path)))
        bench = [PreferencePair(f"b{i}", [images[i % len(images)]], f"Benchmark question number {i}?", "a", "b", 1,
                                "bench") for i in range(n_bench)]
        bench_file = write_pairs(bench, root / "bench.parquet")
        n_shared = int(n_train * overlap)
        train = []
        for i in range(n_train):
            if i < n_shared:     # the benchmark's question; its image half of the time (a true match)
                j = rng.randrange(n_bench)
                image = images[j % len(images)] if i % 2 == 0 else images[(j + 7) % len(images)]
                question = f"Benchmark question number {j}?"
            else:
                image, question = images[rng.randrange(len(images))], f"Training question number {i}?"
            train.append(PreferencePair(f"t{i}", [image], question, "a", "b", 1, "train"))
        times, n_dropped = [], 0
        for _ in range(repeats):
            start = time.perf_counter()
            kept, dropped = exclude_benchmark_pairs(train, [bench_file])
            times.append(time.perf_counter() - start)
            n_dropped = len(dropped)
    med = statistics.median(times)
    print(f"\ncost: {n_train} training pairs ({n_shared} with a benchmark question) against {n_bench} benchmark "
          f"pairs, 448 x 448 PNGs: {n_dropped} left out; {repeats} runs: median {med:.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}), {1e3 * med / n_train:.2f} ms per training pair")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="*", type=Path, help="pictures to use (default: found in site-packages)")
    parser.add_argument("--scenes", type=int, default=200, help="synthetic look-alike scenes")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--bench", type=int, default=500)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = args.images or _installed_pictures()
    if len(paths) < 2:
        sys.exit("need at least two pictures (--images)")
    robustness(paths)
    look_alikes(args.scenes)
    cost(args.train, args.bench, args.overlap, args.repeats)
    print("reproduce: python " + " ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()
