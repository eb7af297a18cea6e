"""What `egt serve` accepts: request bodies (strict pydantic models), images, and OpenRLHF's reward protocol.

Every body is a pydantic model with extra="forbid": an unknown or missing field is answered with
a 4xx naming it (`pairs[0].response_2`), never ignored. The API itself is in docs/serve.md.

Images (`load_image`): a `data:image/...;base64,` URI (inline), a path inside the server's
`image_root` (egt.core.records.resolve_image_path: a path that leaves the root is refused, with a
message that does not say whether the target exists; no root configured = paths are refused), or
an http(s) URL only when the server allows remote images (then fetched with a timeout and a
byte cap). Every image is checked before it reaches the model: at most `max_image_bytes` bytes
(checked before decoding base64 or reading the file), at most `max_image_pixels` pixels (read
from the header before decoding: a decompression bomb is refused, not decoded), and it must
decode. The check is one small function (`checked_image`) so that it can call egt.core.images
once that module lands.

OpenRLHF (`POST /get_reward`, openrlhf.utils.agent.SingleTurnAgentExecutor in 0.11.x, and
remote_rm_fn before 0.9.1): `query` is prompt + response decoded with the special tokens,
`prompts` the chat-templated prompt, `labels` the dataset's label column. The response is what
follows the last assistant header of `query` (a VLM's query does not start with its prompt: the
processor expanded the image tokens), minus end-of-turn tokens. The label carries the reference
(and optionally the question and images): a JSON object `{"reference", "question", "images"}`
(or a JSON string of one); any other string is the reference itself. Without a question in the
label, the question is the text of the prompt's last user turn (vision placeholders removed).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RequestError(Exception):
    """A request the service refuses: HTTP status, the field at fault (or None) and why."""

    def __init__(self, status: int, field: str | None, message: str, kind: str = "invalid_request",
                 headers: dict | None = None):
        self.status, self.field, self.message, self.kind = status, field, message, kind
        self.headers = headers or {}
        super().__init__(f"{field}: {message}" if field else message)

    def body(self) -> dict:
        return {"error": {"type": self.kind, "field": self.field, "message": self.message}}


# ---------------------------------------------------------------- request bodies

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _WithImages(_Strict):
    images: list[str] = Field(default_factory=list, description="data: URIs, paths inside image_root, or URLs")
    image: str | None = Field(None, description="one image (instead of images)")

    @model_validator(mode="after")
    def _one_image_field(self):
        if self.image is not None and self.images:
            raise ValueError("give images or image, not both")
        return self

    def image_list(self) -> list[str]:
        return [self.image] if self.image is not None else list(self.images)


class PairIn(_WithImages):
    question: str
    response_1: str
    response_2: str


class CompareRequest(_Strict):
    pairs: list[PairIn] = Field(..., min_length=1)
    orders: Literal["both", "given"] | None = None
    traces: bool = False


class ScoreItem(_WithImages):
    question: str
    response: str
    reference: str


class ScoreRequest(_Strict):
    items: list[ScoreItem] = Field(..., min_length=1)
    traces: bool = False


class RankRequest(_WithImages):
    question: str
    candidates: list[str] = Field(..., min_length=2)
    method: Literal["round_robin", "knockout"] = "round_robin"


class OpenRLHFRequest(_Strict):
    query: list[str]
    prompts: list[str] | None = None
    labels: list[Any] | None = None


def field_name(loc) -> str:
    """("body", "pairs", 0, "response_1") -> "pairs[0].response_1"."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


# ---------------------------------------------------------------- images

class ImageLimits(BaseModel):
    """The service's image settings (egt serve's config keys of the same names)."""

    image_root: Path | None = None
    allow_remote_images: bool = False
    remote_image_timeout_s: float = 10.0
    max_image_bytes: int = 16 * 2**20
    max_image_pixels: int = 48_000_000
    downscale_images: bool = False


def checked_image(data: bytes, where: str, max_pixels: int, downscale: bool = False) -> bytes:
    """`data` if it is an image of at most `max_pixels` pixels that decodes (RequestError naming `where` if not).

    Read through egt.core.images, the one image reader: the pixel count comes from the header, so a
    decompression bomb is refused before a pixel is decoded."""
    from egt.core.errors import DataError
    from egt.core.images import DECODE_CEILING_PIXELS, image_size, open_image

    try:
        width, height = image_size(data)
    except DataError as exc:
        raise RequestError(400, where, f"not a decodable image ({exc.reason})", "bad_image") from None
    if width * height > (DECODE_CEILING_PIXELS if downscale else max_pixels):
        raise RequestError(413, where, f"image of {width} x {height} = {width * height:,} pixels is above "
                                        f"the server's max_image_pixels ({max_pixels:,})" + (
                                        " and the most it can shrink" if downscale else ""), "image_too_large")
    try:
        open_image(data, max_pixels=max_pixels, downscale=downscale).close()  # decodes whole, not only the header
    except DataError as exc:
        raise RequestError(400, where, f"not a decodable image ({exc.reason})", "bad_image") from None
    return data


def _too_big(where: str, size: int, limits: ImageLimits) -> RequestError:
    return RequestError(413, where, f"image of {size:,} bytes is above the server's max_image_bytes "
                                    f"({limits.max_image_bytes:,})", "image_too_large")


_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.I)


def _inline(value: str, where: str, limits: ImageLimits) -> bytes:
    match = _DATA_URI.match(value)
    if not match:
        raise RequestError(400, where, "a data: image must be data:<mime>;base64,<payload>", "bad_image")
    payload = value[match.end():]
    if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
        raise _too_big(where, len(payload) * 3 // 4, limits)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, where, "the base64 payload does not decode", "bad_image") from None


def _remote(value: str, where: str, limits: ImageLimits) -> bytes:
    import urllib.error
    import urllib.request

    if not limits.allow_remote_images:
        raise RequestError(400, where, "remote image URLs are off on this server (send the image inline as a "
                                       "data: URI, or start it with allow_remote_images=true)", "remote_image_refused")
    try:
        with urllib.request.urlopen(urllib.request.Request(value, headers={"User-Agent": "egt-serve"}),
                                    timeout=limits.remote_image_timeout_s) as response:
            data = response.read(limits.max_image_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise RequestError(400, where, f"cannot fetch the image URL ({reason})", "bad_image") from None
    if len(data) > limits.max_image_bytes:
        raise _too_big(where, len(data), limits)
    return data


def _local(value: str, where: str, limits: ImageLimits) -> bytes:
    import os

    from egt.core.records import ImagePathRefused, resolve_image_path

    if limits.image_root is None:
        raise RequestError(400, where, "image paths are off on this server (send the image inline as a data: URI, "
                                       "or start it with image_root=<folder>)", "image_path_refused")
    try:
        full = resolve_image_path(value, limits.image_root)
    except ImagePathRefused as exc:
        raise RequestError(403, where, str(exc), "image_path_refused") from None
    try:
        size = os.stat(full).st_size
        if size > limits.max_image_bytes:
            raise _too_big(where, size, limits)
        with open(full, "rb") as handle:
            return handle.read(limits.max_image_bytes + 1)
    except OSError:
        raise RequestError(400, where, "image file not found or unreadable", "bad_image") from None


def load_image(value: str, where: str, limits: ImageLimits):
    """An ImageRef holding the checked bytes of one request image (module docstring)."""
    from egt.core.records import ImageRef

    if value.startswith("data:"):
        data = _inline(value, where, limits)
    elif value.startswith(("http://", "https://")):
        data = _remote(value, where, limits)
    else:
        data = _local(value, where, limits)
    if len(data) > limits.max_image_bytes:
        raise _too_big(where, len(data), limits)
    from egt.core.images import ImageLimits as DecodeLimits

    # The reference carries the cap, so the judge's own decode applies the same one.
    return ImageRef(data=checked_image(data, where, limits.max_image_pixels, limits.downscale_images),
                    limits=DecodeLimits(max_pixels=limits.max_image_pixels, downscale=limits.downscale_images))


# ---------------------------------------------------------------- OpenRLHF

ASSISTANT_HEADERS = ("<|im_start|>assistant\n", "<|start_header_id|>assistant<|end_header_id|>\n\n",
                     "<start_of_turn>model\n", "<|assistant|>\n", "ASSISTANT:", "Assistant:")
USER_HEADERS = ("<|im_start|>user\n", "<|start_header_id|>user<|end_header_id|>\n\n", "<start_of_turn>user\n",
                "<|user|>\n", "USER:", "User:")
TURN_ENDS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>", "<|end|>")
_VISION = re.compile(r"<\|vision_start\|>.*?<\|vision_end\|>|<\|image_pad\|>|<\|video_pad\|>|<image>|<start_of_image>"
                     r"|<end_of_image>|<image_soft_token>", re.S)


def _strip_turn_ends(text: str) -> str:
    for end in TURN_ENDS:
        text = text.replace(end, "")
    return text.strip()


def openrlhf_response(query: str, prompt: str | None) -> str:
    """The policy's response inside OpenRLHF's `query` (prompt + response with special tokens)."""
    if prompt and query.startswith(prompt):
        return _strip_turn_ends(query[len(prompt):])
    cut = max((query.rfind(h) + len(h) for h in ASSISTANT_HEADERS if h in query), default=-1)
    return _strip_turn_ends(query[cut:] if cut >= 0 else query)


def prompt_question(prompt: str) -> str:
    """The text of a chat-templated prompt's last user turn, vision placeholders removed."""
    start = max((prompt.rfind(h) + len(h) for h in USER_HEADERS if h in prompt), default=0)
    text = prompt[start:]
    ends = [text.find(e) for e in TURN_ENDS if e in text]
    if ends:
        text = text[:min(ends)]
    return _VISION.sub("", text).strip()


def openrlhf_label(label: Any, where: str) -> dict:
    """{"reference", "question" (or None), "images" (list)} from one OpenRLHF label."""
    from egt.judge.serve_client import label_object

    value = label_object(label)
    if not isinstance(value, dict):
        raise RequestError(422, where, "a label must be a JSON object {\"reference\", \"question\", \"images\"} "
                                       "(or a string of one), or the reference text")
    unknown = sorted(set(value) - {"reference", "question", "images", "image"})
    if unknown:
        raise RequestError(422, f"{where}.{unknown[0]}", "unknown label field (known: reference, question, "
                                                         "images, image)")
    if not isinstance(value.get("reference"), str) or not value["reference"].strip():
        raise RequestError(422, f"{where}.reference", "the label needs the reference response (a non-empty string)")
    images = value.get("images") if value.get("images") is not None else (
        [value["image"]] if value.get("image") is not None else [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise RequestError(422, f"{where}.images", "images must be a list of strings")
    question = value.get("question")
    if question is not None and not isinstance(question, str):
        raise RequestError(422, f"{where}.question", "the question must be a string")
    return {"reference": value["reference"], "question": question, "images": images}
