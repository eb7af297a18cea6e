"""Every image egt decodes goes through here: its pixel count is checked before a pixel is decoded.

    from egt.core.images import ImageLimits, encoded_image, image_size, open_image
    image = open_image("cat.png", where=("pairs.parquet", 12))          # an RGB PIL image, or a DataError
    image = open_image(png_bytes, max_pixels=4_000_000, downscale=True)  # shrunk to at most 4 MP
    width, height = image_size("cat.png")                                # the header only
    data, mime = encoded_image("cat.png", max_pixels=4_000_000, downscale=True)  # bytes for a data URL

Why. What an image costs in memory is its header's width x height, not its file size: a 13,000 x 13,000
one-bit PNG is 46 KB on disk, 169 million pixels decoded, and took 4.3 GB in `egt judge` before this
module existed. PIL's `Image.open` reads only the header (decoding waits for `load`), so `open_image`
multiplies width by height first and, above `max_pixels`, either refuses with a DataError naming the
pairs file, the row and the image, or -- where the user asked for it (`downscale=True`) -- decodes a
smaller image that fits:
- JPEG: `draft()` makes the decoder itself scale by 1/2, 1/4 or 1/8, so a 100 MP photo is decoded at a
  few MP; the rest of the way is a resize.
- other formats: decoded in full, then resized.
Nothing above `DECODE_CEILING_PIXELS` (~179 MP, PIL's own decompression-bomb limit, at which `Image.open`
itself raises DecompressionBombError) is decoded, even to downscale it: such an image is refused. Paths must be regular files (a symbolic link to /dev/zero or a FIFO is refused before it is
opened). Which paths may be read at all (the image root) is egt.core.records' rule, checked before this.

Limits. `DEFAULT_MAX_IMAGE_PIXELS` = 8192 x 8192 = 67,108,864 pixels: 48-MP and 64-MP phone photos
(8000 x 6000, 9248 x 6936) and every image of the reward benchmarks pass; a 108-MP photo (12000 x 9000)
needs `max_image_pixels` raised or `downscale_images=true`. Every command that reads images takes the
two config keys of `ImageOptions` (score, eval, sft, rl, distill, judge, rerank, view, data inspect)
and hands `ImageLimits` to the image references it reads (egt.core.records.ImageRef carries them).
A judge's processor resizes images to its own pixel budget anyway (Qwen2.5-VL: ~1 MP by default), so
`downscale_images=true` changes what the judge sees only for images above the cap.

API (other modules build on it: the distill teacher, the judge endpoint, a reward server):
- `open_image(source, *, where, max_pixels, downscale, field) -> PIL.Image.Image` (RGB, loaded);
- `image_size(source, *, where, field) -> (width, height)` from the header, nothing decoded
  (`image_header` adds PIL's format name);
- `check_image(source, *, where, max_pixels, downscale, field) -> (width, height)`: what `open_image`
  would refuse, refused from the header alone (a pass over a file's images before any work);
- `encoded_image(source, ...) -> (bytes, mime)`: the file's own bytes when it is a web-safe format within
  the cap, else a PNG of the (downscaled) image -- what goes into a base64 data URL;
- `read_image_bytes(source, *, where, field) -> bytes`: the encoded bytes of a regular file or of bytes;
- `ImageLimits(max_pixels, downscale)`: the policy a command applies; `ImageOptions`: its config keys;
  `image_settings(limits)`: what the policy adds to a run folder's fingerprint.
`source` is a path (str or os.PathLike) or the encoded bytes; `where` = (file, line) of the record that
names the image (None: the image itself is named); `field` the record's field ("images" by default).
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Union

from pydantic import BaseModel, Field

from egt.core.errors import DataError

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192      # 67,108,864: see the module docstring
DECODE_CEILING_PIXELS = 2 * 89_478_485      # 178,956,970: PIL's default DecompressionBombError limit
WEB_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}

Source = Union[str, os.PathLike, bytes, bytearray]
Where = Union[tuple[str, Union[int, None]], None]


@dataclass(frozen=True)
class ImageLimits:
    """How many pixels an image may decode to, and whether a larger one is shrunk (True) or refused."""

    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    downscale: bool = False

    def __post_init__(self):
        if not 1 <= self.max_pixels <= DECODE_CEILING_PIXELS:
            raise ValueError(f"max_pixels must be between 1 and {DECODE_CEILING_PIXELS:,}, got {self.max_pixels!r}")


DEFAULT_LIMITS = ImageLimits()


def image_settings(limits: ImageLimits) -> dict:
    """What the limits add to a run folder's settings (egt.core.runfolder.fingerprint): nothing unless images are
    downscaled. Without downscale the cap decides refuse-or-decode, never the pixels a judge sees, so raising it
    keeps finished work (and folders made before these keys existed keep their fingerprint)."""
    return {"downscale_images_to": limits.max_pixels} if limits.downscale else {}


class ImageOptions(BaseModel):
    """The image config keys every command that reads images takes: a mixin, `class Config(StageConfig,
    ImageOptions)`, so the keys, their checks and their help text are defined once."""

    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, ge=1, le=DECODE_CEILING_PIXELS,
        description="largest image (width x height, from its header) decoded as it is; a larger one is refused "
                    "naming its row, or shrunk with downscale_images (default 8192 x 8192)")
    downscale_images: bool = Field(False, description="shrink images above max_image_pixels to fit it instead "
                                                      f"of refusing them (up to {DECODE_CEILING_PIXELS:,} pixels)")

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_pixels, self.downscale_images)


# ---------------------------------------------------------------- errors

def _name(source: Source) -> str:
    return "<embedded bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)


def _error(name: str, where: Where, field: str, reason: str) -> DataError:
    """A DataError at the record that names the image (file, line, field), or at the image itself."""
    if where is None:
        return DataError(name, None, field, reason)
    return DataError(where[0], where[1], field, f"image {name}: {reason}")


def _too_large(name: str, where: Where, field: str, width: int, height: int, max_pixels: int) -> DataError:
    return _error(name, where, field,
                  f"{width} x {height} = {width * height:,} pixels, above max_image_pixels={max_pixels:,} "
                  "(a decompression bomb, or a very large image: raise max_image_pixels, or set "
                  "downscale_images=true to shrink it)")


# ---------------------------------------------------------------- reading

def _regular_file(source: Source, where: Where, field: str) -> str:
    path = os.fspath(source)
    try:
        info = os.stat(path)  # follows links: what would be read
    except FileNotFoundError:
        raise _error(path, where, field, "image file not found") from None
    except OSError as exc:
        raise _error(path, where, field, f"image file unreadable ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _error(path, where, field, "not a regular file (a device, FIFO or folder is never read as an image)")
    return path


def read_image_bytes(source: Source, *, where: Where = None, field: str = "images") -> bytes:
    """The encoded image: `source` itself when bytes, else the regular file's content (DataError otherwise)."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    path = _regular_file(source, where, field)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise _error(path, where, field, f"image file unreadable ({exc.strerror})") from None


@contextmanager
def _header(source: Source, where: Where, field: str, name: str | None = None) -> Iterator:
    """The lazily opened image (header read, nothing decoded), closed after the block; `name`: how errors
    name the image (default: its path, or <embedded bytes>)."""
    from PIL import Image, UnidentifiedImageError

    name = name or _name(source)
    handle = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else _regular_file(source, where,
                                                                                                    field)
    try:
        with warnings.catch_warnings():
            # Between PIL's two limits it only warns; egt decides by max_pixels itself.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
    except Image.DecompressionBombError:
        raise _error(name, where, field, f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, PIL's "
                                         "decompression-bomb limit: egt decodes no image this large") from None
    except FileNotFoundError:
        raise _error(name, where, field, "image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _error(name, where, field, f"image cannot be decoded ({exc.__class__.__name__})") from None
    try:
        yield image
    finally:
        image.close()


def image_header(source: Source, *, where: Where = None, field: str = "images",
                 name: str | None = None) -> tuple[int, int, str | None]:
    """(width, height, PIL format name) from the image's header; nothing is decoded. DataError for what is
    not an image. `name`: how errors name the image (e.g. the file that bytes were read from)."""
    with _header(source, where, field, name) as image:
        return image.size[0], image.size[1], image.format


def image_size(source: Source, *, where: Where = None, field: str = "images") -> tuple[int, int]:
    """(width, height) from the image's header; nothing is decoded. DataError for what is not an image."""
    return image_header(source, where=where, field=field)[:2]


def check_image(source: Source, *, where: Where = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                downscale: bool = False, field: str = "images") -> tuple[int, int]:
    """(width, height), refusing from the header alone what `open_image` would refuse for its size."""
    width, height = image_size(source, where=where, field=field)
    if width * height > max_pixels:
        if not downscale:
            raise _too_large(_name(source), where, field, width, height, max_pixels)
        if width * height > DECODE_CEILING_PIXELS:
            raise _error(_name(source), where, field, _ceiling_reason(width, height))
    return width, height


def _ceiling_reason(width: int, height: int) -> str:
    return (f"{width} x {height} = {width * height:,} pixels: too large to decode even to downscale it (egt "
            f"decodes at most {DECODE_CEILING_PIXELS:,} pixels)")


def fitted_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size of the same aspect ratio (within rounding) with at most `max_pixels` pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > max_pixels:  # floating-point edge
        w, h = (w - 1, h) if w >= h else (w, h - 1)
    return w, h


def open_image(source: Source, *, where: Where = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               downscale: bool = False, field: str = "images", name: str | None = None):
    """Decode an image to RGB, checking its pixel count from the header first (see the module docstring).

    Above `max_pixels`: a DataError naming `where` (the record) and the image, or with `downscale` an image
    shrunk to fit (aspect ratio kept). DataError also for a missing file, a non-regular file, or data that
    is not an image. `name`: how errors name the image (default: its path, or <embedded bytes>)."""
    return _decode(source, where, max_pixels, downscale, field, name or _name(source))


def _decode(source: Source, where: Where, max_pixels: int, downscale: bool, field: str, name: str):
    from PIL import Image

    with _header(source, where, field, name) as image:
        width, height = image.size
        try:
            if width * height <= max_pixels:
                image.load()
                return image.convert("RGB")
            if not downscale:
                raise _too_large(name, where, field, width, height, max_pixels)
            target = fitted_size(width, height, max_pixels)
            if image.format == "JPEG":
                image.draft("RGB", target)  # the decoder scales by 1/2, 1/4 or 1/8, staying >= target
            if image.size[0] * image.size[1] > DECODE_CEILING_PIXELS:
                raise _error(name, where, field, _ceiling_reason(width, height))
            image.load()
            if image.mode not in ("RGB", "L"):
                image = image.convert("L" if image.mode in ("1", "I", "I;16", "F") else "RGB")
            return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0).convert("RGB")
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt pixel data
            raise _error(name, where, field, f"image cannot be decoded ({exc.__class__.__name__})") from None


def encoded_image(source: Source, *, where: Where = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                  downscale: bool = False, field: str = "images") -> tuple[bytes, str]:
    """(encoded bytes, MIME type) to send an image as a data URL: the file's own bytes when its format is
    web-safe (PNG, JPEG, WEBP, GIF) and it is within `max_pixels`; else a PNG of `open_image`'s result
    (downscaled when `downscale`). Refuses what `open_image` refuses."""
    data = read_image_bytes(source, where=where, field=field)
    with _header(data, where, field, _name(source)) as image:
        fmt, (width, height) = image.format, image.size
    if fmt in WEB_FORMATS and width * height <= max_pixels:
        return data, WEB_FORMATS[fmt]
    decoded = _decode(data, where, max_pixels, downscale, field, _name(source))
    buffer = io.BytesIO()
    decoded.save(buffer, format="PNG")
    return buffer.getvalue(), WEB_FORMATS["PNG"]
