"""The one record type that flows through every stage: a preference pair.

`PreferencePair(id, images, question, response_1, response_2, label, source,
category, meta)`; stages add columns (traces, entropies, order, ...), which
live in `extra` in memory and as top-level columns on disk, so the type stays
one. Files are Parquet (default) or JSONL, chosen by suffix.

On disk `images` is a list of `{path, bytes}` structs (the Hugging Face
`Image` convention); `meta` is a JSON string in Parquet and an object in JSONL.
Files are written atomically (egt.core.files); the fields and the columns each stage
adds are described in docs/definitions.md.

Image root (`resolve_image_path`, the one check every reader uses). Images stay
inside their root: a relative path resolves against the image root, and a path
that leaves it with `..`, or an absolute path outside it, is refused with a
message that does not say whether the target exists. Absolute paths outside the
root are read only with `allow_absolute_paths`. The root of a pairs file is the
`image_root` the user gives, else the file's own folder -- and, for a Parquet
file that egt wrote holding absolute paths (a converted benchmark, a score or
curate file whose images sit in the data folder), the folder that holds all its
images, which egt records in the file (`egt.image_root` schema metadata) when it
writes it. A given `image_root` replaces the recorded one: read a file you did
not make with an explicit `image_root`. `read_pairs` records a refusal on the
image reference; opening the image raises it (DataError naming file, line and
field), so stages that never open images can still read such a file.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal

from egt.core.errors import DataError
from egt.core.files import atomic_write_bytes
from egt.core.images import DEFAULT_LIMITS, ImageLimits, check_image, encoded_image, open_image, read_image_bytes

SWAP_SUFFIX = "::swap"  # id suffix of a pair's swapped copy (responses exchanged, label flipped)
# How a pair is shown to a judge: as stored, or with its two responses exchanged (label flipped).
Order = Literal["given", "swapped"]
ORDERS: tuple[Order, ...] = ("given", "swapped")
IMAGE_ROOT_KEY = b"egt.image_root"  # Parquet schema metadata: the folder holding the file's images

CORE_FIELDS = ("id", "images", "question", "response_1", "response_2", "label",
               "source", "category", "meta")


class ImagePathRefused(ValueError):
    """An image path outside its root (the message never says whether the target exists)."""


def _within(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


def resolve_image_path(path: str, root: str | Path, allow_absolute: bool = False,
                       recorded_root: str | Path | None = None) -> str:
    """The absolute, normalised path of an image reference, checked against its root.

    Relative: joined to `root`, and must stay inside it (`..` may not leave it). Absolute: must lie
    inside `root` (or `recorded_root`, the root an egt-written file records), unless `allow_absolute`.
    Then symbolic links: the path with every link resolved must still lie inside a root (the roots'
    own links resolved too), unless `allow_absolute` -- a link inside the root that points out of it
    would read what an absolute path may not. The text is checked first; resolving links needs only
    the links themselves, never the target, so the ImagePathRefused message is the same whether or
    not the target exists.
    """
    root = os.path.normpath(os.path.abspath(root))
    roots = [root] + ([os.path.normpath(os.path.abspath(recorded_root))] if recorded_root else [])
    if os.path.isabs(path):
        full = os.path.normpath(path)
        if not allow_absolute and not any(_within(full, r) for r in roots):
            raise ImagePathRefused(f"absolute image path '{path}' is outside the image root {root} (give "
                                   "image_root=<the folder that holds the images>, or allow_absolute_paths=true)")
    else:
        full = os.path.normpath(os.path.join(root, path))
        if not _within(full, root):
            raise ImagePathRefused(f"image path '{path}' leaves the image root {root} (paths may not climb out of "
                                   "it with '..'; give image_root=<a folder that holds the images>)")
    if not allow_absolute and not any(_within(os.path.realpath(full), os.path.realpath(r)) for r in roots):
        raise ImagePathRefused(f"image path '{path}' leads out of the image root {root} through a symbolic link "
                               "(links may point only inside the root; give image_root=<the folder the link "
                               "points into>, or allow_absolute_paths=true)")
    return full


@dataclass(frozen=True)
class ImageRef:
    """An image given by a file path or by its encoded bytes; decoded lazily, through egt.core.images.

    `refused`: where and why the path may not be read (outside its image root: `resolve_image_path`);
    set by `read_pairs`, raised by `open`, `read_bytes` and `PreferencePair.check_images`.
    `where`: the (file, line) of the record that names the image, so that an image error names the
    row; `limits`: the pixel cap (and downscale) of the command that read it (egt.core.images). Neither
    takes part in equality: the same image read from two files is the same image.
    """

    path: str | None = None
    data: bytes | None = None
    refused: tuple[str, int | None, str] | None = None   # (file, line, reason)
    where: tuple[str, int | None] | None = field(default=None, compare=False)
    limits: ImageLimits = field(default=DEFAULT_LIMITS, compare=False)

    def _check(self) -> None:
        if self.refused is not None:
            raise DataError(self.refused[0], self.refused[1], "images", self.refused[2])

    @property
    def source(self) -> str | bytes:
        """What egt.core.images reads: the embedded bytes, else the path (DataError when refused)."""
        if self.data is not None:
            return self.data
        self._check()
        if not self.path:
            raise DataError(*(self.where or ("<memory>", None)), "images", "image without a path or bytes")
        return self.path

    def with_limits(self, limits: ImageLimits) -> "ImageRef":
        return self if limits == self.limits else replace(self, limits=limits)

    def read_bytes(self) -> bytes:
        """The encoded image (embedded bytes, or the file's), DataError when refused, missing or not a file."""
        return read_image_bytes(self.source, where=self.where)

    def size(self) -> tuple[int, int]:
        """(width, height) from the header; refuses (DataError) what `open` would refuse for its size."""
        return check_image(self.source, where=self.where, max_pixels=self.limits.max_pixels,
                           downscale=self.limits.downscale)

    def open(self):
        """Decode to an RGB PIL image within `limits` (egt.core.images.open_image; DataError naming the row)."""
        return open_image(self.source, where=self.where, max_pixels=self.limits.max_pixels,
                          downscale=self.limits.downscale)

    def encoded(self) -> tuple[bytes, str]:
        """(bytes, MIME type) for a data URL, within `limits` (egt.core.images.encoded_image)."""
        return encoded_image(self.source, where=self.where, max_pixels=self.limits.max_pixels,
                             downscale=self.limits.downscale)

    def to_row(self) -> dict:
        return {"path": self.path, "bytes": self.data}

    @staticmethod
    def from_row(value: Any, base_dir: Path | None = None, allow_absolute: bool = False,
                 recorded_root: str | None = None, where: tuple[str, int | None] | None = None,
                 limits: ImageLimits = DEFAULT_LIMITS) -> "ImageRef":
        """An image of a pairs row; with `base_dir` (the image root) its path is resolved and checked
        (`resolve_image_path`): a refused path is kept with the reason, raised when the image is opened."""
        if isinstance(value, ImageRef):
            return value
        if isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict):
            raise TypeError(f"image must be a path or {{path, bytes}} object, got {type(value).__name__}")
        data = value.get("bytes")
        if data is None and value.get("bytes_base64"):
            data = base64.b64decode(value["bytes_base64"])
        path = value.get("path")
        if path and data is None and base_dir is not None:
            try:
                path = resolve_image_path(path, base_dir, allow_absolute, recorded_root)
            except ImagePathRefused as exc:
                file, line = where or ("<memory>", None)
                return ImageRef(path=path, refused=(file, line, str(exc)), where=where, limits=limits)
        return ImageRef(path=path, data=data, where=where, limits=limits)


def _swapped_meta(meta: dict) -> dict:
    """Meta of the pair with its responses exchanged. A known true label (`meta.true_label`, e.g. the
    synthetic benchmark's) names a position like `label` does, so it flips with it; the rest is kept."""
    out = dict(meta)
    if meta.get("true_label") in (1, 2):
        out["true_label"] = 3 - int(meta["true_label"])
    return out


@dataclass
class PreferencePair:
    id: str
    images: list[ImageRef]
    question: str
    response_1: str
    response_2: str
    label: int  # 1 or 2: which response is better
    source: str = ""
    category: str = ""
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # columns added by stages

    @property
    def chosen(self) -> str:
        return self.response_1 if self.label == 1 else self.response_2

    @property
    def rejected(self) -> str:
        return self.response_2 if self.label == 1 else self.response_1

    def in_order(self, order: Order) -> "PreferencePair":
        """The pair as a judge is shown it: `given` (as stored: this pair) or `swapped` (the responses
        exchanged, the label and `meta.true_label` flipped; same id). THE orientation of egt: `egt judge`,
        `egt eval` (`chosen_at`) and swap augmentation (`swapped`) all go through it."""
        if order == "given":
            return self
        if order != "swapped":
            raise ValueError(f"order must be 'given' or 'swapped', got {order!r}")
        return PreferencePair(
            id=self.id, images=list(self.images), question=self.question,
            response_1=self.response_2, response_2=self.response_1, label=3 - self.label,
            source=self.source, category=self.category, meta=_swapped_meta(self.meta), extra=dict(self.extra))

    def chosen_at(self, position: int) -> "PreferencePair":
        """The pair oriented so that its chosen response is shown at `position` (1 or 2)."""
        return self.in_order("given" if self.label == position else "swapped")

    def swapped(self, suffix: str = SWAP_SUFFIX) -> "PreferencePair":
        """A new pair for training on both orders: the swapped orientation under its own id (`<id>::swap`,
        `meta.swapped_from` = this id)."""
        pair = self.in_order("swapped")
        pair.id = self.id + suffix
        pair.meta["swapped_from"] = self.id
        return pair

    def open_images(self):
        return [ref.open() for ref in self.images]

    def check_images(self, sizes: bool = False) -> None:
        """DataError for the first image whose path is outside its root (nothing is opened); with `sizes`,
        also for the first that opening would refuse, judged from its header (missing, not an image,
        above its pixel cap: ImageRef.size): a pass over a file's images before any work."""
        for ref in self.images:
            if ref.data is None:
                ref._check()
            if sizes:
                ref.size()

    def validate(self, file: str = "<memory>", line: int | None = None) -> list[str]:
        """Raise DataError on a broken record; return warnings (e.g. identical responses)."""
        if not isinstance(self.id, str) or not self.id:
            raise DataError(file, line, "id", "must be a non-empty string")
        for name in ("question", "response_1", "response_2"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise DataError(file, line, name, f"must be a string, got {type(value).__name__}")
        for name in ("response_1", "response_2"):
            if not getattr(self, name).strip():
                raise DataError(file, line, name, "response is empty")
        if self.label not in (1, 2) or isinstance(self.label, bool):
            raise DataError(file, line, "label", f"must be 1 or 2, got {self.label!r}")
        if not isinstance(self.meta, dict):
            raise DataError(file, line, "meta", "must be an object")
        warnings = []
        if self.response_1.strip() == self.response_2.strip():
            warnings.append(f"{file}:{line}: pair '{self.id}' has identical responses")
        return warnings

    def to_row(self) -> dict:
        row = {
            "id": self.id, "images": [ref.to_row() for ref in self.images],
            "question": self.question, "response_1": self.response_1,
            "response_2": self.response_2, "label": int(self.label),
            "source": self.source, "category": self.category, "meta": self.meta,
        }
        for key, value in self.extra.items():
            if key in row:
                raise ValueError(f"extra column '{key}' clashes with a core field")
            row[key] = value
        return row

    @staticmethod
    def from_row(row: dict, file: str = "<memory>", line: int | None = None,
                 base_dir: Path | None = None, allow_absolute: bool = False,
                 recorded_root: str | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> "PreferencePair":
        missing = [name for name in ("id", "question", "response_1", "response_2", "label") if name not in row]
        if missing:
            raise DataError(file, line, missing[0], "missing required field")
        meta = row.get("meta") or {}
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except json.JSONDecodeError:
                raise DataError(file, line, "meta", "is not valid JSON") from None
        try:
            images = [ImageRef.from_row(v, base_dir, allow_absolute, recorded_root, (file, line), limits)
                      for v in (row.get("images") or [])]
        except TypeError as exc:
            raise DataError(file, line, "images", str(exc)) from None
        label = row["label"]
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        pair = PreferencePair(
            id=str(row["id"]) if isinstance(row["id"], (int, str)) else row["id"], images=images,
            question=row["question"], response_1=row["response_1"], response_2=row["response_2"],
            label=label, source=row.get("source") or "", category=row.get("category") or "",
            meta=meta, extra={k: v for k, v in row.items() if k not in CORE_FIELDS})
        pair.validate(file, line)
        return pair


# ---------------------------------------------------------------- file I/O

def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".json", ".ndjson")


def _json_default(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _row_for_jsonl(row: dict) -> dict:
    row = dict(row)
    row["images"] = [
        {"path": im["path"]} if im.get("bytes") is None
        else {"bytes_base64": base64.b64encode(im["bytes"]).decode("ascii")}
        for im in row.get("images", [])
    ]
    return row


def write_rows(rows: list[dict], path: str | Path) -> Path:
    """Write plain rows (dicts) to Parquet or JSONL, atomically."""
    path = Path(path)
    if _is_jsonl(path):
        text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
        atomic_write_bytes(path, text.encode("utf-8"))
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    # every row gets every column (pyarrow would infer the columns from the first row only)
    names = list(dict.fromkeys(k for r in rows for k in r))
    rows = [{k: (json.dumps(r.get(k), ensure_ascii=False, default=_json_default) if k == "meta" else r.get(k))
             for k in names} for r in rows]
    table = pa.Table.from_pylist(rows) if rows else pa.table({})
    root = images_folder(rows)
    if root is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), IMAGE_ROOT_KEY: root.encode("utf-8")})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue().to_pybytes())
    return path


def images_folder(rows: list[dict]) -> str | None:
    """The deepest folder holding every absolute image path of `rows` (None: no absolute path, or only
    the file system root would hold them all). write_rows records it in Parquet files."""
    folders = {os.path.dirname(os.path.normpath(im["path"])) for r in rows for im in (r.get("images") or [])
               if isinstance(im, dict) and im.get("bytes") is None and isinstance(im.get("path"), str)
               and os.path.isabs(im["path"])}
    if not folders:
        return None
    common = os.path.commonpath(sorted(folders))
    return None if common == os.path.dirname(common) else common


def read_rows(path: str | Path) -> list[dict]:
    """Read plain rows from Parquet or JSONL (JSONL errors name the line)."""
    return [row for _, row in _read_numbered_rows(Path(path))]


def recorded_image_root(path: str | Path) -> str | None:
    """The image folder an egt-written Parquet file records (`images_folder`), or None."""
    path = Path(path)
    if _is_jsonl(path):
        return None
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # unreadable files fail with a DataError when their rows are read
        return None
    value = metadata.get(IMAGE_ROOT_KEY)
    return value.decode("utf-8") if value else None


def _read_numbered_rows(path: Path) -> list[tuple[int, dict]]:
    """(JSONL line number, or 0-based Parquet row index, row) for every row."""
    if not path.exists():
        raise DataError(str(path), None, None, "file not found")
    if _is_jsonl(path):
        rows = []
        with open(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(str(path), lineno, None, "line is not valid UTF-8") from None
                if not text.strip():
                    continue
                try:
                    rows.append((lineno, json.loads(text)))
                except json.JSONDecodeError as exc:
                    raise DataError(str(path), lineno, None, f"invalid JSON ({exc.msg})") from None
        return rows
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(str(path), None, None, f"not a readable Parquet file ({exc})") from None
    rows = table.to_pylist()
    for row in rows:
        if isinstance(row.get("meta"), str):
            try:
                row["meta"] = json.loads(row["meta"])
            except json.JSONDecodeError:
                pass
    return list(enumerate(rows))


def write_pairs(pairs: Iterable[PreferencePair], path: str | Path) -> Path:
    path = Path(path)
    rows = [p.to_row() for p in pairs]
    if _is_jsonl(path):
        rows = [_row_for_jsonl(r) for r in rows]
    return write_rows(rows, path)


def image_root_of(path: str | Path, image_root: str | Path | None = None) -> tuple[Path, str | None]:
    """(the root a file's image paths resolve against, the image folder the file records or None):
    `image_root` when given (it replaces the record), else the file's folder and its record."""
    path = Path(path)
    if image_root is not None and not Path(image_root).is_dir():
        raise DataError(str(image_root), None, None, "image root is not a folder")
    if image_root is not None:
        return Path(image_root).resolve(), None
    return path.parent.resolve(), recorded_image_root(path)


def read_pairs(path: str | Path, image_root: str | Path | None = None,
               allow_absolute_paths: bool = False, limits: ImageLimits = DEFAULT_LIMITS) -> list[PreferencePair]:
    """Read a pairs file written by egt; errors name the file and line/row.

    Image paths are resolved against `image_root` (default: the file's folder) and checked by
    `resolve_image_path` (see the module docstring; a refused path fails when its image is opened).
    Every image carries its row and `limits` (the command's pixel cap, egt.core.images).
    """
    path = Path(path)
    root, recorded = image_root_of(path, image_root)
    return [PreferencePair.from_row(row, str(path), line, base_dir=root, allow_absolute=allow_absolute_paths,
                                    recorded_root=recorded, limits=limits)
            for line, row in _read_numbered_rows(path)]
