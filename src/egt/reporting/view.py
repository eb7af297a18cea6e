"""`egt view` — one self-contained HTML file to look at scored pairs, token entropies and curation.

    egt view runs/score/scores.parquet --output runs/score/view.html
    egt view runs/score/scores.parquet --manifest runs/curate/egt/manifest.json runs/curate/random/manifest.json
    python -c "from egt.reporting.view import write_view; write_view('runs/score/scores.parquet', 'view.html')"

Reads what `egt score` writes: `scores.parquet` (one row per pair) and, with `dump_tokens=true`,
`tokens.parquet` beside it (one row per judgement: the generated tokens' text pieces and their
entropies in nats). Curation manifests (`egt curate`'s manifest.json) add a kept/dropped filter each.
Without a tokens file the viewer still lists the pairs and their judgements as text and says how
to get the per-token entropies.

The page (src/egt/reporting/view_template.html) needs no network: the data is embedded as gzip-compressed JSON
(unpacked by the browser's DecompressionStream), images as downscaled PNG/JPEG data-URL thumbnails
deduplicated by content. Which images may be embedded follows the rule of every other command
(egt.core.records.resolve_image_path: `image_root`, else the scores file's folder and the image folder
an egt-written file records; absolute paths outside it only with `allow_absolute_paths`; links that
lead out of it refused), and each is read through egt.core.images (regular files, the pixel cap from
the header before decoding): an image that may not or cannot be shown is listed as such in its place. It lists the pairs sorted by any
entropy metric (undefined values rank highest, ties by id: egt's defaults), filters them
(category, source, kept/dropped per manifest, majority verdict right/wrong, known-noisy where the
data says) and searches ids; it renders one page of rows at a time and a pair's token view only
when the pair is opened. Every generated token is coloured by its entropy on the scale
`entropy_colour` defines (also used by the page), the answer token is outlined, and sentence
boundaries are marked; which token is the answer token and which sentence holds each token come
from `egt.model.entropy.token_layout`, the function the scores were computed with. `view.html#id=<id>`
opens a pair (`view_link`); `&sort=<metric>` sorts by a metric first.

Token data is packed per judgement: token lengths (UTF-16 units) and entropies (milli-nats,
65535 = undefined) as little-endian uint16 in base64, so the page parses fast and decodes a
judgement only when it is shown. benchmarks/bench_view.py measures page weight and load time.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import math
import re
import sys
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
from pydantic import Field, field_validator

import egt
from egt.core.config import StageConfig
from egt.core.errors import DataError
from egt.core.files import check_unique_ids, read_json, sha256_file, write_text
from egt.core.images import DEFAULT_LIMITS, ImageLimits, ImageOptions, image_header, open_image
from egt.core.records import ImageRef, image_root_of, read_rows
from egt.core.score_columns import METRIC_COLUMNS, column_values

# Colour scale of token entropy (YlOrRd-like): position in [0, 1] of the scale -> RGB. The page
# interpolates between these stops exactly as `entropy_colour` does.
COLOUR_STOPS = ((0.0, (255, 255, 255)), (0.25, (255, 237, 160)), (0.5, (254, 178, 76)),
                (0.75, (240, 59, 32)), (1.0, (128, 0, 38)))
UNDEFINED_COLOUR = (200, 200, 200)
UNDEFINED_MILLINATS = 65535
META_MAX_CHARS = 4000
TOKENS_HOWTO = ("This score file has no per-token entropies. Score again with dump_tokens=true into a new "
                "folder (same model, pairs and seed give the same judgements): `egt score ... dump_tokens=true "
                "output=<new folder>`, then `egt view <new folder>/scores.parquet`.")


class Config(StageConfig, ImageOptions):
    scores: Path = Field(..., description="score file from `egt score` (scores.parquet)")
    output: Path | None = Field(None, description="HTML file to write (default: view.html beside the scores)")
    tokens: Path | None = Field(None, description="per-token entropies (default: tokens.parquet beside the "
                                                  "scores, when it exists; egt score dump_tokens=true)")
    manifest: list[Path] = Field([], description="curation manifest.json file(s): a kept/dropped filter each")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside (default: "
                                                      "the scores file's folder, and the image folder it records)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    page_size: int = Field(50, ge=5, le=1000, description="rows per page of the list")
    thumb_px: int = Field(128, ge=16, le=1024, description="largest side of the embedded image thumbnails")
    scale_max: float | None = Field(None, gt=0, description="top of the colour scale in nats (default: 99th "
                                                            "percentile of the token entropies, rounded up)")
    title: str | None = Field(None, description="page title (default: the score file's path)")

    @field_validator("manifest", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, (str, Path)) else value


# ------------------------------------------------------------------ colours and links

def entropy_colour(nats: float, scale_max: float) -> tuple[int, int, int]:
    """RGB of a token entropy on the viewer's scale (0 -> white, >= scale_max -> dark red)."""
    if nats is None or not math.isfinite(nats):
        return UNDEFINED_COLOUR
    t = min(max(nats / scale_max, 0.0), 1.0)
    for (t0, c0), (t1, c1) in zip(COLOUR_STOPS, COLOUR_STOPS[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return tuple(int(math.floor(a + (b - a) * f + 0.5)) for a, b in zip(c0, c1))
    return COLOUR_STOPS[-1][1]


def view_link(href: str, pair_id: str, sort: str | None = None) -> str:
    """URL that opens one pair in a viewer: `view.html#id=<id>` (`&sort=<metric>` sorts first)."""
    return f"{href}#id={quote(str(pair_id), safe='')}" + (f"&sort={quote(sort, safe='')}" if sort else "")


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value (the colour scale's top)."""
    if not value > 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = round(step * 10.0 ** exp, 12)
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exp + 1)


# ------------------------------------------------------------------ packing

def _u16_base64(values) -> str:
    return base64.b64encode(np.asarray(values, dtype="<u2").tobytes()).decode("ascii")


def _millinats(entropies) -> np.ndarray:
    h = np.asarray(entropies, dtype=np.float64)
    out = np.full(h.shape, UNDEFINED_MILLINATS, dtype=np.int64)
    finite = np.isfinite(h)
    out[finite] = np.clip(np.rint(h[finite] * 1000.0), 0, UNDEFINED_MILLINATS - 1)
    return out


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _number(value, digits: int = 4):
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def pack_judgement(text: str, pieces: list[str], entropies, sentence_agg: str = "mean") -> list:
    """One judgement for the page: [text, verdict, lengths, milli-nats, answer token, sentence
    starts, region start, region end, sentence means, [answer, sentence, mean, max]]."""
    from egt.model.entropy import response_entropies, token_layout

    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    layout = token_layout(text, spans)
    h = np.asarray(entropies, dtype=np.float64)
    scores = response_entropies(text, spans, h, sentence_agg, layout=layout)
    sentences = layout.sentences
    starts = [i for i, s in enumerate(sentences) if s >= 0 and (i == 0 or sentences[i - 1] != s)]
    members: dict[int, list[float]] = {}
    for i in layout.region:
        if sentences[i] >= 0:
            members.setdefault(sentences[i], []).append(float(h[i]))
    means = [_number(sum(v) / len(v)) for _, v in sorted(members.items())]
    region = (min(layout.region), max(layout.region) + 1) if layout.region else (0, 0)
    return [text, layout.verdict or 0, _u16_base64([_utf16_len(p) for p in pieces]), _u16_base64(_millinats(h)),
            -1 if layout.answer_token is None else layout.answer_token, starts, region[0], region[1], means,
            [_number(scores.answer_nats), _number(scores.sentence_nats), _number(scores.mean_token_nats),
             _number(scores.max_token_nats)]]


# ------------------------------------------------------------------ inputs

class _Thumbnails:
    """Data-URL thumbnails, one per distinct image content; unreadable images are counted, not dropped.

    Images are read by egt.core.images through their ImageRef: the image root (a path outside it is
    refused without touching it), regular files only, the pixel cap before decoding."""

    def __init__(self, px: int):
        self.px, self.urls, self.index, self.by_path, self.missing = px, [], {}, {}, []

    def add(self, ref: ImageRef) -> int | str:
        """Index into `urls`, or a message saying why the image cannot be shown."""
        name = ref.path or "<embedded bytes>"
        if ref.path and ref.data is None and ref.path in self.by_path:
            return self.by_path[ref.path]
        try:
            raw = ref.read_bytes()
            key = hashlib.sha1(raw).hexdigest()
            if key not in self.index:
                self.urls.append(self._encode(raw, ref, name))
                self.index[key] = len(self.urls) - 1
            result = self.index[key]
        except DataError as exc:
            result = f"{name}: {exc.reason.removeprefix(f'image {name}: ')}"
            self.missing.append(result)
        if ref.path and ref.data is None:
            self.by_path[ref.path] = result
        return result

    def _encode(self, raw: bytes, ref: ImageRef, name: str) -> str:
        _, _, kind = image_header(raw, where=ref.where, name=name)
        image = open_image(raw, where=ref.where, max_pixels=ref.limits.max_pixels, downscale=ref.limits.downscale,
                           name=name)
        if max(image.size) <= self.px and kind in ("PNG", "JPEG", "GIF", "WEBP") and len(raw) <= 3 * self.px ** 2:
            # small already (no bigger than its raw RGB pixels): the file itself; a 64 px synthetic PNG is ~300 bytes
            return f"data:image/{kind.lower()};base64," + base64.b64encode(raw).decode("ascii")
        image.thumbnail((self.px, self.px))
        encoded = {}
        for fmt, kwargs in (("PNG", {"optimize": True}), ("JPEG", {"quality": 80})):
            buffer = io.BytesIO()
            image.save(buffer, format=fmt, **kwargs)
            encoded[fmt] = buffer.getvalue()
        fmt = min(encoded, key=lambda f: len(encoded[f]))
        return f"data:image/{fmt.lower()};base64," + base64.b64encode(encoded[fmt]).decode("ascii")


def _read_manifest(path: Path, ids: list[str], scores_sha: str) -> dict:
    manifest = read_json(path)
    selected = manifest.get("selected_ids") if isinstance(manifest, dict) else None
    if not isinstance(selected, list) or not all(isinstance(i, str) for i in selected):
        raise DataError(str(path), None, "selected_ids", "expected a list of pair ids, as `egt curate` writes "
                                                        "in manifest.json")
    position = {pair_id: k for k, pair_id in enumerate(selected)}
    matched = sum(pair_id in position for pair_id in ids)
    unknown = len(selected) - matched
    if selected and not matched:
        raise DataError(str(path), None, "selected_ids", f"none of its {len(selected)} ids is a pair of the "
                                                         "score file; it was built from another file")
    if unknown:
        print(f"warning: {path}: {unknown} of its {len(selected)} selected ids are not in the score file",
              file=sys.stderr)
    source = (manifest.get("input") or {}).get("sha256")
    return {"name": path.parent.name or str(path), "path": str(path), "strategy": manifest.get("strategy"),
            "metric": manifest.get("metric"), "order": manifest.get("order"), "selected": len(selected),
            "same_input": source == scores_sha, "kept": [position.get(pair_id, -1) for pair_id in ids]}


def _sentence_agg(tokens_path: Path) -> str:
    fingerprint = tokens_path.parent / "fingerprint.json"
    if fingerprint.exists():
        value = (read_json(fingerprint).get("config") or {}).get("sentence_agg")
        if value in ("mean", "max"):
            return value
    return "mean"


def _read_tokens(path: Path, completions: dict[str, list[str]]) -> tuple[dict, list[float], int]:
    """{(id, sample): (pieces, entropies)} checked against the completions; all entropies; rows of other pairs."""
    rows = read_rows(path)
    out, every, other = {}, [], 0
    for i, row in enumerate(rows):
        for name in ("id", "sample", "tokens", "token_entropies_nats"):
            if name not in row:
                raise DataError(str(path), i, name, "missing column; expected tokens.parquet from "
                                                    "`egt score dump_tokens=true`")
        pair_id, sample, pieces, h = str(row["id"]), row["sample"], row["tokens"], row["token_entropies_nats"]
        if pair_id not in completions:
            other += 1
            continue
        if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
            raise DataError(str(path), i, "tokens", "expected a list of token texts")
        if not isinstance(h, list) or len(h) != len(pieces):
            raise DataError(str(path), i, "token_entropies_nats",
                            f"expected one entropy per token ({len(pieces)}), got {len(h) if isinstance(h, list) else h!r}")
        texts = completions[pair_id]
        if not isinstance(sample, int) or not 0 <= sample < len(texts) or "".join(pieces) != texts[sample]:
            raise DataError(str(path), i, "tokens", f"pair '{pair_id}' judgement {sample}: the tokens do not spell "
                                                    "that completion of the score file; the files are from different runs")
        if (pair_id, sample) in out:
            raise DataError(str(path), i, "sample", f"pair '{pair_id}' judgement {sample} appears twice")
        h = [math.nan if v is None else float(v) for v in h]
        out[(pair_id, sample)] = (pieces, h)
        every.extend(h)
    return out, every, other


# ------------------------------------------------------------------ the page data

def _id_ranks(ids: list[str]) -> list[int]:
    """Each id's position in sorted-id order: the page breaks ties by it, as egt curate does."""
    ranks = [0] * len(ids)
    for rank, index in enumerate(sorted(range(len(ids)), key=ids.__getitem__)):
        ranks[index] = rank
    return ranks


def build_view_data(scores: str | Path, tokens: str | Path | None = None, manifests=(), *,
                    page_size: int = 50, thumb_px: int = 128, scale_max: float | None = None,
                    title: str | None = None, image_root: str | Path | None = None,
                    allow_absolute_paths: bool = False, limits: ImageLimits = DEFAULT_LIMITS) -> dict:
    """Everything the page shows, as the JSON it embeds (no HTML). Images follow the rule of every other
    command (egt.core.records.resolve_image_path: `image_root`, else the scores file's folder and the image
    folder it records; absolute paths outside only with `allow_absolute_paths`) and `limits`."""
    scores = Path(scores)
    rows = read_rows(scores)
    file = str(scores)
    if not rows:
        raise DataError(file, None, None, "score file has no rows")
    ids = [str(r.get("id")) for r in rows]
    check_unique_ids(ids, file)
    labels = column_values(rows, "label", file).astype(int)
    majority = column_values(rows, "majority_verdict", file)
    completions = {}
    for i, row in enumerate(rows):
        texts = row.get("completions")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(file, i, "completions", "expected the list of judgement texts `egt score` writes")
        completions[ids[i]] = texts
    metrics = {m: [_number(v) for v in column_values(rows, c, file)] for m, c in METRIC_COLUMNS.items()}

    tokens_path = Path(tokens) if tokens is not None else scores.parent / "tokens.parquet"
    token_data, every, other = {}, [], 0
    if tokens is not None or tokens_path.exists():
        token_data, every, other = _read_tokens(tokens_path, completions)
        if other:
            print(f"warning: {tokens_path}: {other} token rows belong to pairs not in {scores.name}; not shown",
                  file=sys.stderr)
    has_tokens = bool(token_data)
    finite = np.array([v for v in every if math.isfinite(v)])
    if scale_max is None:
        scale_max = nice_ceiling(float(np.percentile(finite, 99))) if finite.size else 1.0
    agg = _sentence_agg(tokens_path) if has_tokens else "mean"

    sha = sha256_file(scores)
    root, recorded = image_root_of(scores, image_root)
    thumbs = _Thumbnails(thumb_px)
    cats = sorted({str(r.get("category") or "") for r in rows})
    srcs = sorted({str(r.get("source") or "") for r in rows})
    metas = [r.get("meta") if isinstance(r.get("meta"), dict) else {} for r in rows]
    noisy = [None if m.get("noisy") is None else int(bool(m["noisy"])) for m in metas]
    true_label = [m.get("true_label") if m.get("true_label") in (1, 2) else None for m in metas]
    details, images, without_tokens = [], [], 0
    for i, row in enumerate(rows):
        images.append([thumbs.add(ImageRef.from_row(v, root, allow_absolute_paths, recorded, (file, i), limits))
                       for v in (row.get("images") or [])])
        judgements = []
        for k, text in enumerate(completions[ids[i]]):
            if (ids[i], k) in token_data:
                judgements.append(pack_judgement(text, *token_data[(ids[i], k)], sentence_agg=agg))
            else:
                verdict = (row.get("verdicts") or [])[k] if k < len(row.get("verdicts") or []) else 0
                judgements.append([text, int(verdict or 0)])
        without_tokens += has_tokens and any(len(j) == 2 for j in judgements)
        scalars_first = sorted(metas[i].items(), key=lambda kv: (isinstance(kv[1], (dict, list)), kv[0]))
        meta = json.dumps(dict(scalars_first), ensure_ascii=False, default=str)
        details.append({"q": row.get("question", ""), "r1": row.get("response_1", ""), "r2": row.get("response_2", ""),
                        "meta": meta if len(meta) <= META_MAX_CHARS else meta[:META_MAX_CHARS] + " ... (cut)",
                        "stats": {k: _number(row.get(k)) for k in ("k_accuracy", "parse_failures", "format_ok_rate",
                                                                  "n_tokens_mean", "truncated")},
                        "j": judgements})
    if thumbs.missing:
        print(f"warning: {len(thumbs.missing)} images cannot be shown (first: {thumbs.missing[0]})", file=sys.stderr)
    if without_tokens:
        print(f"warning: {without_tokens} pairs have judgements without token rows in {tokens_path}; "
              "those judgements are shown as plain text", file=sys.stderr)
    return {
        "egt": egt.__version__, "title": title or f"egt view — {scores}",
        "scores": {"path": str(scores), "sha256": sha, "rows": len(rows)},
        "tokens": {"path": str(tokens_path), "judgements": len(token_data), "sentence_agg": agg}
        if has_tokens else None,
        "tokens_note": None if has_tokens else TOKENS_HOWTO,
        "metrics": [[m, c] for m, c in METRIC_COLUMNS.items()],
        "scale": {"max": scale_max, "stops": [[t, list(c)] for t, c in COLOUR_STOPS],
                  "undefined": list(UNDEFINED_COLOUR)},
        "page_size": page_size, "cats": cats, "srcs": srcs,
        "manifests": [_read_manifest(Path(p), ids, sha) for p in manifests],
        "images": thumbs.urls, "missing_images": len(thumbs.missing),
        "col": {"id": ids, "idr": _id_ranks(ids),
                "cat": [cats.index(str(r.get("category") or "")) for r in rows],
                "src": [srcs.index(str(r.get("source") or "")) for r in rows],
                "label": labels.tolist(), "maj": [int(v) for v in majority], "noisy": noisy, "tl": true_label,
                "kacc": [_number(r.get("k_accuracy")) for r in rows], "img": images, "m": metrics},
        "det": details,
    }


def render_html(data: dict, compress: bool = True) -> str:
    """The page: the template with `data` embedded (`read_view_data` reads it back).

    The images go in as a JSON list of data URLs; everything else as JSON, gzip-compressed and
    base64-encoded (`compress=False`: plain JSON). `<` is escaped, so no text can end a script.
    """
    template = resources.files("egt.reporting").joinpath("view_template.html").read_text(encoding="utf-8")
    rest = {k: v for k, v in data.items() if k != "images"}
    payload = json.dumps(rest, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if compress:
        payload = base64.b64encode(gzip.compress(payload.encode("utf-8"), 6, mtime=0)).decode("ascii")
    else:
        payload = payload.replace("<", "\\u003c")
    parts = {"TITLE": data["title"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
             "IMAGES": json.dumps(data["images"]).replace("<", "\\u003c"),
             "ENCODING": "gzip+base64" if compress else "json", "DATA": payload}
    return re.sub(r"__EGT_(TITLE|IMAGES|ENCODING|DATA)__", lambda m: parts[m.group(1)], template)  # one pass


def read_view_data(path: str | Path) -> dict:
    """The data embedded in a page `write_view` wrote (what `build_view_data` returned)."""
    html = Path(path).read_text(encoding="utf-8")
    found = {name: re.search(rf'<script type="[^"]+" id="egt-{name}"(?: data-encoding="([^"]+)")?>(.*?)</script>',
                             html, re.S) for name in ("images", "data")}
    if not all(found.values()):
        raise DataError(str(path), None, None, "not a page written by `egt view` (no embedded data)")
    text = found["data"].group(2)
    if found["data"].group(1) == "gzip+base64":
        text = gzip.decompress(base64.b64decode(text)).decode("utf-8")
    data = json.loads(text)
    data["images"] = json.loads(found["images"].group(2))
    return data


def write_view(scores: str | Path, output: str | Path | None = None, *, tokens: str | Path | None = None,
               manifests=(), page_size: int = 50, thumb_px: int = 128, scale_max: float | None = None,
               title: str | None = None, compress: bool = True, image_root: str | Path | None = None,
               allow_absolute_paths: bool = False, limits: ImageLimits = DEFAULT_LIMITS) -> Path:
    """Write the viewer of a score file (see the module docstring); returns the HTML file's path.

    `compress=False` embeds the data as plain JSON (larger; readable in the file itself). `image_root`,
    `allow_absolute_paths`, `limits`: which images may be embedded, as for every command (build_view_data).
    """
    scores = Path(scores)
    output = Path(output) if output is not None else scores.parent / "view.html"
    data = build_view_data(scores, tokens, manifests, page_size=page_size, thumb_px=thumb_px,
                           scale_max=scale_max, title=title, image_root=image_root,
                           allow_absolute_paths=allow_absolute_paths, limits=limits)
    html = render_html(data, compress)
    write_text(html, output)
    n_judgements = sum(len(d["j"]) for d in data["det"])
    print(f"egt view: {data['scores']['rows']} pairs, {n_judgements} judgements "
          f"({data['tokens']['judgements'] if data['tokens'] else 0} with token entropies), "
          f"{len(data['images'])} images, {len(html.encode('utf-8')) / 2**20:.1f} MiB -> {output}")
    return output


def run(cfg: Config) -> Path:
    return write_view(cfg.scores, cfg.output, tokens=cfg.tokens, manifests=cfg.manifest, page_size=cfg.page_size,
                      thumb_px=cfg.thumb_px, scale_max=cfg.scale_max, title=cfg.title, image_root=cfg.image_root,
                      allow_absolute_paths=cfg.allow_absolute_paths, limits=cfg.image_limits)
