"""Peak memory of `egt judge` on decompression bombs: one-bit PNGs whose files are tiny and whose pixels are not.

    python benchmarks/bench_image_bomb.py                              # this checkout
    python benchmarks/bench_image_bomb.py --src /path/to/other/src     # another checkout's egt (e.g. before the fix)
    python benchmarks/bench_image_bomb.py --side 20000 --pairs 3

Each case runs `egt judge` (tiny judge, built locally into --out, greedy, 8 new tokens, both orders) in its own
process under `/usr/bin/time -v` and reports its maximum resident set size, exit status and the first line of its
error. Cases: `photos` (control: --pairs pairs of 64 x 64 PNGs), `bombs` (the same pairs with --side x --side
one-bit PNGs: ~20 KB files, side^2 pixels), `bombs, downscale_images` (the bombs shrunk to max_image_pixels=1 MP
while decoded). egt.core.images refuses the bombs from their headers, before the model loads; before it, egt
decoded each to RGB (4.3 GB for one 13,000 x 13,000 image in egt judge); a checkout without the image keys
answers the downscale case with an unknown-key error. Single runs: rerun for a spread.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"),
                    help="the egt source folder to measure (default: this checkout's src)")
    ap.add_argument("--side", type=int, default=13_000, help="width and height of each bomb in pixels")
    ap.add_argument("--pairs", type=int, default=1, help="pairs in the file (each with its own bomb)")
    ap.add_argument("--out", default="runs/bench_image_bomb", help="work folder")
    return ap.parse_args(argv)


def bomb_png(width: int, height: int) -> bytes:
    """A black one-bit PNG, compressed row by row (never decoded here)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def write_pairs(folder: Path, n: int, image: bytes) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (folder / f"img{i}.png").write_bytes(image)
        rows.append({"id": f"p{i}", "images": [{"path": f"img{i}.png"}], "question": "Which is right?",
                     "response_1": "A cat.", "response_2": "A dog.", "label": 1})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_case(src: str, model: Path, pairs: Path, out: Path, extra: list[str]) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)   # a fresh folder: each case judges everything
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "egt.cli", "judge", "--model", str(model), "--pairs",
           str(pairs), "--output", str(out), "--max_new_tokens", "8", "--progress", "false", *extra]
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    status = int(re.search(r"Exit status: (\d+)", proc.stderr).group(1))
    error = next((line for line in proc.stderr.splitlines() if line.startswith("error:")), "")
    return {"max_rss_mib": rss_kb / 1024, "exit": status, "error": error[:150], "command": shlex.join(cmd[2:])}


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    model = out / "tiny_judge"
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, "-m", "egt.cli", "model", "tiny", f"output={model}", "pretrain_steps=0"],
                       check=True, env={**os.environ, "PYTHONPATH": args.src}, capture_output=True)
    from PIL import Image

    photo = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(photo, "PNG")
    bomb = bomb_png(args.side, args.side)
    photos = write_pairs(out / "photos", args.pairs, photo.getvalue())
    bombs = write_pairs(out / "bombs", args.pairs, bomb)
    cases = [("photos", photos, []), ("bombs", bombs, []),
             ("bombs, downscale_images", bombs, ["--max_image_pixels", "1000000", "--downscale_images"])]
    print(f"egt judge, {args.pairs} pair(s), bombs {args.side} x {args.side} one-bit PNG ({len(bomb):,} bytes each); "
          f"egt from {args.src}\n")
    print("| case | max RSS (MiB) | exit | error |\n|---|---:|---:|---|")
    results = []
    for name, pairs, extra in cases:
        result = run_case(args.src, model, pairs, out / "judge" / name.replace(", ", "_"), extra)
        results.append((name, result))
        print(f"| {name} | {result['max_rss_mib']:,.0f} | {result['exit']} | {result['error'] or '-'} |")
    print("\nreproduce: python benchmarks/bench_image_bomb.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    print("each case: /usr/bin/time -v " + results[1][1]["command"])


if __name__ == "__main__":
    main()
