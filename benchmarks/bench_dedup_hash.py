"""How far egt.data.dedup's difference hash moves when a picture is re-encoded, resized or cropped,
against the distance between different pictures: the margin behind `--exclude-max-distance` (default 6).

Pictures: every JPEG / PNG over 30 kB shipped inside the installed packages (matplotlib's and
scikit-learn's sample images, ...) or given with --images; nothing is downloaded. Each is compared with
its own PNG copy, a JPEG at quality 50, a half-size PNG, a third-size JPEG (quality 70) and a copy with
2% cut off the top-left corner (a benchmark that re-crops); then every picture with every other.

    python benchmarks/bench_dedup_hash.py
    python benchmarks/bench_dedup_hash.py --images a.jpg b.png c.jpg
"""

from __future__ import annotations

import argparse
import io
import itertools
import shlex
import site
import sys
from pathlib import Path

from PIL import Image

from egt.core.records import ImageRef
from egt.data.dedup import DEFAULT_MAX_DISTANCE, image_hash

VARIANTS = {
    "png copy": lambda img: _encode(img, "PNG"),
    "jpeg q50": lambda img: _encode(img, "JPEG", quality=50),
    "half size": lambda img: _encode(img.resize((img.width // 2, img.height // 2)), "PNG"),
    "third, jpeg q70": lambda img: _encode(img.resize((img.width // 3, img.height // 3)), "JPEG", quality=70),
    "2% crop": lambda img: _encode(img.crop((img.width // 50, img.height // 50, img.width, img.height)), "PNG"),
}


def _encode(img: Image.Image, fmt: str, **kw) -> ImageRef:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="*", type=Path, help="pictures to use (default: found in site-packages)")
    args = parser.parse_args()
    paths = args.images or _installed_pictures()
    if len(paths) < 2:
        sys.exit("need at least two pictures (--images)")
    hashes = {}
    print(f"{'picture':<36}" + "".join(f"{name:>17}" for name in VARIANTS))
    worst = 0
    for path in paths:
        img = Image.open(path).convert("RGB")
        hashes[path] = image_hash(ImageRef(path=str(path)))
        distances = [bin(hashes[path] ^ image_hash(make(img))).count("1") for make in VARIANTS.values()]
        worst = max(worst, *distances)
        print(f"{path.name[:35]:<36}" + "".join(f"{d:>17}" for d in distances))
    between = sorted(bin(a ^ b).count("1") for a, b in itertools.combinations(hashes.values(), 2))
    print(f"\nsame picture, altered: 0-{worst} bits; different pictures ({len(between)} pairs): "
          f"min {between[0]}, median {between[len(between) // 2]}, max {between[-1]} bits; "
          f"egt's default threshold: {DEFAULT_MAX_DISTANCE}")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()
