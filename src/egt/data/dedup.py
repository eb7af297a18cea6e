"""Decontamination: leave out training pairs whose image(s) and question appear in a benchmark.

    egt data convert --format povid --input POVID.json --output povid.parquet \\
        --exclude data/vlrb.parquet data/mmrlhf.parquet      # several files: one key, several values

The public training sets overlap the benchmarks: VL-RewardBench takes 448 of its 1,250 pairs from POVID,
233 from RLAIF-V, 68 from RLHF-V and 10 from VLFeedback (its `query_source` and ids), and
MM-RLHF-RewardBench comes from MM-RLHF's annotation pool. Training on those pairs and reporting accuracy
on the benchmark measures memory. Both sides are egt pairs; a training pair matches a benchmark pair when

- their questions are equal after `question_key` (Unicode NFKC, lower case, `<image>` placeholders,
  punctuation and repeated white space removed), and
- they have the same number of images and each image is within `max_distance` bits of its
  counterpart (in list order) under a 64-bit difference hash (`image_hash`: grey, 9 x 8 pixels, one
  bit per horizontally adjacent pair). Benchmarks ship their own copies of the images (VL-RewardBench:
  `images/hallucination_pair-1003.png` for a COCO JPEG), so file names and bytes differ while the
  picture is the same: a perceptual hash finds those, an exact one would not. A text-only pair matches
  on the question alone.

Responses are not compared: the same image and question with other responses is the same test item.
Only training pairs whose question occurs in a benchmark have their images decoded, so the pass costs
little on a large set. Each pair left out is reported with the benchmark file and pair id it matches.
The paper does not say whether its training data was deduplicated against the benchmarks.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from egt.core.errors import DataError
from egt.core.records import ImageRef, PreferencePair, read_pairs
from egt.data.conversations import strip_placeholders

# of 64 bits. Measured (benchmarks/bench_dedup_hash.py, docs/benchmarks.md): re-encoded or resized copies moved
# 0-3 bits, a 2% crop 0-6, different photos 23-38; look-alike synthetic scenes: 8 of 19,900 pairs within 6 bits
# (the question must match too).
DEFAULT_MAX_DISTANCE = 6
_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)


def question_key(text: str) -> str:
    """The question as compared across datasets (see the module docstring)."""
    text = unicodedata.normalize("NFKC", strip_placeholders(text)).lower()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def image_hash(ref: ImageRef) -> int:
    """64-bit difference hash of an image (decoded, grey, 9 x 8, left < right per bit).

    Decoded through egt.core.images within the pixel cap of the command that read the pair; an image above
    the cap is hashed from a shrunk decode instead of refused (72 pixels are all the hash keeps)."""
    from PIL import Image

    from egt.core.images import open_image

    img = open_image(ref.source, where=ref.where, max_pixels=ref.limits.max_pixels, downscale=True)
    img = img.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = img.tobytes()   # one byte per pixel, row by row
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (pixels[row * 9 + col] < pixels[row * 9 + col + 1])
    return bits


def _ref_key(ref: ImageRef) -> str:
    return ref.path if ref.data is None else "sha256:" + hashlib.sha256(ref.data).hexdigest()


@dataclass
class BenchmarkIndex:
    """The benchmark pairs by question key, with their image hashes."""

    max_distance: int = DEFAULT_MAX_DISTANCE
    entries: dict[str, list[tuple[tuple[int, ...], str, str]]] = field(default_factory=dict)
    _hashes: dict[str, int] = field(default_factory=dict)   # image key -> hash (rank pairs share images)
    n_pairs: int = 0

    def hashes(self, pair: PreferencePair, file: str) -> tuple[int, ...]:
        out = []
        for index, ref in enumerate(pair.images):
            key = _ref_key(ref)
            if key not in self._hashes:
                try:
                    self._hashes[key] = image_hash(ref)
                except DataError as exc:
                    raise DataError(file, None, f"images[{index}]", f"pair '{pair.id}': {exc.reason}") from None
            out.append(self._hashes[key])
        return tuple(out)

    def add_file(self, path: str | Path, image_root: str | Path | None = None) -> None:
        for pair in read_pairs(path, image_root):
            self.entries.setdefault(question_key(pair.question), []).append(
                (self.hashes(pair, str(path)), str(path), pair.id))
            self.n_pairs += 1

    def match(self, pair: PreferencePair, file: str = "<training pairs>") -> tuple[str, str] | None:
        """(benchmark file, benchmark pair id) of the first benchmark pair `pair` matches, else None."""
        candidates = self.entries.get(question_key(pair.question))
        if not candidates:
            return None
        hashes = self.hashes(pair, file)
        for bench_hashes, bench_file, bench_id in candidates:
            if len(bench_hashes) == len(hashes) and all(
                    bin(a ^ b).count("1") <= self.max_distance for a, b in zip(hashes, bench_hashes)):
                return bench_file, bench_id
        return None


def exclude_benchmark_pairs(pairs: list[PreferencePair], benchmarks: list[Path], file: str = "<training pairs>",
                            max_distance: int = DEFAULT_MAX_DISTANCE) -> tuple[list[PreferencePair], list[dict]]:
    """(the pairs found in no benchmark, one {file, line, id, reason} per pair left out)."""
    index = BenchmarkIndex(max_distance=max_distance)
    for path in benchmarks:
        index.add_file(path)
    kept, dropped = [], []
    for pair in pairs:
        found = index.match(pair, file)
        if found is None:
            kept.append(pair)
        else:
            dropped.append({"file": file, "line": None, "id": pair.id,
                            "reason": f"in benchmark: {found[1]} of {found[0]}"})
    return kept, dropped
