"""Field access shared by every reader (egt.data.readers, egt.data.training_sets).

Each helper reads one field of a source row and raises `DataError(file, line, field, reason)` when it
is missing or of the wrong kind, so every reader's errors name the file, the line (or row) and the
field. `Ctx` carries what a reader needs about its file: the image root, the column map, and the lists
it fills (warnings; `dropped`: pairs its pairing rule leaves out, each with its reason) and the pixel cap of
the command reading the file (`limits`). Images are checked from their headers through egt.core.images (an
image, a regular file, within the cap when one is given); nothing is decoded here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egt.core.errors import DataError
from egt.core.images import DEFAULT_LIMITS, ImageLimits, check_image, image_size
from egt.core.records import ImagePathRefused, ImageRef, resolve_image_path

MAX_VIDEO_FRAMES = 8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass
class Ctx:
    file: str
    base_dir: Path           # the image root: relative paths resolve here, every path stays inside
    allow_absolute: bool     # absolute paths outside base_dir are read (the user said so)
    column_map: dict
    warnings: list[str]
    limits: ImageLimits | None = None   # the caller's pixel cap (None: check only that images are images)
    group_pos: dict = field(default_factory=dict)    # mmrlhf: id -> (next k, size)
    # pairs a format's pairing rule leaves out (a tie, an unrated completion): {file, line, id, reason}
    dropped: list[dict] = field(default_factory=list)

    def drop(self, line: int, pair_id: str, reason: str) -> None:
        self.dropped.append({"file": self.file, "line": line, "id": pair_id, "reason": reason})


def get_field(row: dict, key: str, ctx: Ctx, line: int, kind: type | tuple = str, required: bool = True):
    if key not in row or row[key] is None:
        if required:
            raise DataError(ctx.file, line, key, "missing required field")
        return None
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(ctx.file, line, key, f"expected {names}, got {type(value).__name__}")
    return value


def as_id(value: Any, ctx: Ctx, line: int, key: str) -> str:
    if value is None:
        raise DataError(ctx.file, line, key, "missing required field")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise DataError(ctx.file, line, key, f"expected a non-empty string id, got {value!r}")
    return str(value)


def content_id(prefix: str, *parts: Any) -> str:
    """`<prefix>-<12 hex>`: an id derived from a row's content (images, question, responses), for sources
    without ids. Unlike a line number it survives filtering or reordering the file."""
    def default(value):
        if isinstance(value, (bytes, bytearray)):
            return hashlib.sha256(value).hexdigest()
        return repr(value)

    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=default)
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def image_ref(source: str | bytes, ctx: Ctx, line: int, key: str) -> ImageRef:
    """The checked reference: its header read through egt.core.images (an image, a regular file, within
    the caller's pixel cap when it gave `limits`; pixels are decoded only when used)."""
    if ctx.limits is None:
        image_size(source, where=(ctx.file, line), field=key)
    else:
        check_image(source, where=(ctx.file, line), field=key, max_pixels=ctx.limits.max_pixels,
                    downscale=ctx.limits.downscale)
    limits = ctx.limits or DEFAULT_LIMITS
    if isinstance(source, bytes):
        return ImageRef(data=source, where=(ctx.file, line), limits=limits)
    return ImageRef(path=source, where=(ctx.file, line), limits=limits)


def resolve_path(path: str, ctx: Ctx, line: int, key: str) -> str:
    try:
        return resolve_image_path(path, ctx.base_dir, ctx.allow_absolute)
    except ImagePathRefused as exc:
        raise DataError(ctx.file, line, key, str(exc)) from None


def read_image(value: Any, ctx: Ctx, line: int, key: str) -> ImageRef:
    """A path, raw bytes, or a {bytes, path} / {bytes_base64} dict -> checked ImageRef."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("bytes_base64"):
            import base64

            try:
                data = base64.b64decode(value["bytes_base64"], validate=True)
            except ValueError:
                raise DataError(ctx.file, line, key, "bytes_base64 is not valid base64") from None
        if data is None:
            value = value.get("path")
        else:
            value = data
    if isinstance(value, (bytes, bytearray)):
        return image_ref(bytes(value), ctx, line, key)
    if not isinstance(value, str) or not value:
        raise DataError(ctx.file, line, key,
                        f"expected an image path, bytes or {{bytes, path}}, got {type(value).__name__}")
    full = resolve_path(value, ctx, line, key)
    if not os.path.lexists(full):
        raise DataError(ctx.file, line, key, f"image file not found: {full}")
    return image_ref(full, ctx, line, key)


def read_images(value: Any, ctx: Ctx, line: int, key: str) -> list[ImageRef]:
    """None -> no image (a text-only pair); one image or a list of them -> ImageRefs in list order."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [read_image(v, ctx, line, key) for v in values]


def even_frames(files: list[str]) -> list[str]:
    """Up to MAX_VIDEO_FRAMES evenly spaced items of `files` (first and last included)."""
    if len(files) <= MAX_VIDEO_FRAMES:
        return list(files)
    step = (len(files) - 1) / (MAX_VIDEO_FRAMES - 1)
    return [files[round(i * step)] for i in range(MAX_VIDEO_FRAMES)]


def folder_frames(folder: str) -> list[str]:
    """The frames of a video given as a folder of images (sorted by name, evenly subsampled)."""
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    return [os.path.join(folder, f) for f in even_frames(files)]
