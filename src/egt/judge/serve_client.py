"""Call an `egt serve` reward service: a small HTTP client with retries, and verl's reward-function hooks.

This file uses the Python standard library only, so a trainer's environment that cannot install
egt (verl pins its own transformers) can load it by path, as verl loads reward functions:

    reward.custom_reward_function.path=$(python -c "import egt.judge.serve_client as m; print(m.__file__)")
    reward.custom_reward_function.name=compute_score            # or compute_score_async; verl <= 0.7.0's
                                                                # batch manager: compute_score_batch
    +reward.custom_reward_function.reward_kwargs.egt_url=http://judge-host:8100

(or copy the file next to the trainer). In Python: `ServeClient(url).score([...])`.

The client (`ServeClient`). POSTs JSON to the service. A refused connection, a reset, a timeout,
429, 502, 503 and 504 are retried with exponential backoff (`backoff_s` doubling up to
`max_backoff_s`, with jitter, honouring Retry-After) for up to `retries` retries: a restarted or
overloaded service loses no reward (the service is deterministic, so a retried request gets the
same answer). Any other 4xx raises `ServeError` with the service's message naming the field. The
bearer token comes from the environment variable `token_env` (default EGT_SERVE_TOKEN), never from
code; the URL from `url`, else EGT_SERVE_URL, else http://127.0.0.1:8100.

Images (`image_field`): data: URIs and http(s) URLs pass as they are; a path is read here and sent
inline (set `send_paths=True` to send the path for a server whose image_root holds it); bytes,
{"bytes", "path"} dicts (Hugging Face Image columns) and PIL images are encoded as data: URIs.

verl (`compute_score`, `compute_score_async`, `compute_score_batch`). verl passes the decoded
response (`solution_str`), the row's `reward_model.ground_truth` and `extra_info`. The judge
compares the response with a reference in both orders: `ground_truth` is the reference response,
or an object {"reference", "question", "images"} (or a JSON string of one); the question and
images may also come from `extra_info["question"]` and `extra_info["images"]` / `["image"]`.
Each call returns the same keys: `score` (the reward: P(response better than the reference), in
[0, 1], 0.5 = as good as the reference), `egt_prob`, `egt_abstain`, `egt_orders_agree`,
`egt_answer_forced`, `egt_unreadable` (verl logs every key; a reward the judge could not read is
`missing_reward`, default 0.5, and flagged by `egt_unreadable`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

DEFAULT_URL = "http://127.0.0.1:8100"
RETRY_STATUS = (429, 502, 503, 504)
VERL_KEYS = ("score", "egt_prob", "egt_abstain", "egt_orders_agree", "egt_answer_forced", "egt_unreadable")


class ServeError(RuntimeError):
    """The service refused a request (status, the field at fault, its message), or stayed unreachable."""

    def __init__(self, status: int | None, message: str, field: str | None = None, kind: str | None = None):
        self.status, self.field, self.kind, self.message = status, field, kind, message
        where = f" {field}:" if field else ""
        super().__init__(f"egt serve{f' HTTP {status}' if status else ''}:{where} {message}")


class ServeClient:
    def __init__(self, url: str | None = None, *, token_env: str = "EGT_SERVE_TOKEN", timeout_s: float = 600.0,
                 retries: int = 8, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 client_id: str | None = None, send_paths: bool = False):
        self.url = (url or os.environ.get("EGT_SERVE_URL") or DEFAULT_URL).rstrip("/")
        self.token_env = token_env
        self.timeout_s, self.retries = timeout_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.client_id, self.send_paths = client_id, send_paths
        self.retried = 0  # retries so far (for logs and tests)

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = os.environ.get(self.token_env) if self.token_env else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.client_id:
            headers["X-Client-Id"] = self.client_id
        return headers

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff_s))
            except ValueError:
                pass
        self.retried += 1
        time.sleep(delay)

    def request(self, method: str, path: str, body: Any = None) -> dict:
        """One call with retries (module docstring); the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        last = "no attempt"
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, method=method, headers=self._headers())
            retry_after = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as response:
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                payload = exc.read()
                try:
                    error = json.loads(payload).get("error") or {}
                except (ValueError, AttributeError):
                    error = {"message": payload[:200].decode("utf-8", "replace")}
                if exc.code not in RETRY_STATUS:
                    raise ServeError(exc.code, error.get("message") or exc.reason, error.get("field"),
                                     error.get("type")) from None
                last, retry_after = f"HTTP {exc.code}: {error.get('message') or exc.reason}", exc.headers.get("Retry-After")
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as exc:
                last = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            if attempt < self.retries:
                self._wait(attempt, retry_after)
        raise ServeError(None, f"{self.url}{path} failed after {self.retries} retries (last: {last})")

    # ------------------------------------------------------------ the API (docs/serve.md)

    def compare(self, pairs: Sequence[dict], orders: str | None = None, traces: bool = False) -> list[dict]:
        body = {"pairs": [self._with_images(p) for p in pairs], "traces": traces}
        if orders:
            body["orders"] = orders
        return self.request("POST", "/v1/compare", body)["results"]

    def score(self, items: Sequence[dict], traces: bool = False) -> dict:
        """{"rewards": [...], "results": [...]} for items {images, question, response, reference}."""
        return self.request("POST", "/v1/score", {"items": [self._with_images(i) for i in items], "traces": traces})

    def rank(self, question: str, candidates: Sequence[str], images=None, method: str = "round_robin") -> dict:
        return self.request("POST", "/v1/rank", self._with_images({"images": images, "question": question,
                                                                    "candidates": list(candidates),
                                                                    "method": method}))

    def info(self) -> dict:
        return self.request("GET", "/v1/info")

    def _with_images(self, item: dict) -> dict:
        item = dict(item)
        images = item.pop("images", None)
        if images is None:
            images = item.pop("image", None)
        else:
            item.pop("image", None)
        cache: dict = {}
        item["images"] = [image_field(i, self.send_paths, cache) for i in as_image_list(images)]
        return item


# ---------------------------------------------------------------- images

def as_image_list(images) -> list:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return [i for i in images if i is not None]
    return [images]


def _data_uri(data: bytes) -> str:
    mime = ("image/png" if data.startswith(b"\x89PNG") else "image/jpeg" if data.startswith(b"\xff\xd8")
            else "image/gif" if data[:4] == b"GIF8" else "image/webp" if data[8:12] == b"WEBP"
            else "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_field(image, send_paths: bool = False, cache: dict | None = None) -> str:
    """One image as the service takes it (module docstring); `cache` reuses encodings within one request."""
    if cache is not None and id(image) in cache:
        return cache[id(image)][1]
    if isinstance(image, str):
        if image.startswith(("data:", "http://", "https://")) or send_paths:
            out = image
        else:
            with open(image, "rb") as handle:
                out = _data_uri(handle.read())
    elif isinstance(image, (bytes, bytearray)):
        out = _data_uri(bytes(image))
    elif isinstance(image, dict):
        if image.get("bytes") is not None:
            out = _data_uri(bytes(image["bytes"]))
        elif image.get("path"):
            out = image_field(image["path"], send_paths)
        else:
            raise ValueError("an image dict needs 'bytes' or 'path'")
    elif hasattr(image, "save"):  # a PIL image
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out = _data_uri(buffer.getvalue())
    else:
        raise TypeError(f"an image must be a path, data: URI, URL, bytes, dict or PIL image, got {type(image).__name__}")
    if cache is not None:
        cache[id(image)] = (image, out)  # keep the object alive so its id is not reused within the request
    return out


# ---------------------------------------------------------------- verl

_CLIENTS: dict[tuple, ServeClient] = {}


def _client(egt_url: str | None = None, **options) -> ServeClient:
    key = (egt_url or os.environ.get("EGT_SERVE_URL") or DEFAULT_URL, tuple(sorted(options.items())))
    if key not in _CLIENTS:
        _CLIENTS[key] = ServeClient(key[0], **options)
    return _CLIENTS[key]


def label_object(label):
    """A ground truth / label as given: an object as it is, a string holding a JSON object decoded, any other
    string as {"reference": the text}; anything else as it is (the caller refuses it). The server's
    OpenRLHF labels (egt.judge.serve_inputs) read labels the same way."""
    if not isinstance(label, str):
        return label
    try:
        parsed = json.loads(label)
    except json.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"reference": label}


def reference_fields(ground_truth) -> dict:
    """{"reference", "question", "images"} from a ground truth / label: an object, a JSON string of one, or the text."""
    value = label_object(ground_truth)
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        raise ValueError("egt serve: ground_truth must be the reference response, or an object with a "
                         f"'reference' string (got {type(ground_truth).__name__})")
    return {"reference": value["reference"], "question": value.get("question"),
            "images": value.get("images", value.get("image"))}


def verl_item(solution_str: str, ground_truth, extra_info: dict | None) -> dict:
    """The /v1/score item of one verl sample (module docstring)."""
    fields = reference_fields(ground_truth)
    extra = extra_info or {}
    question = fields["question"] if fields["question"] is not None else extra.get("question")
    if not isinstance(question, str):
        raise ValueError("egt serve: no question for the judge: put it in extra_info['question'] (or in the "
                         "ground truth object)")
    images = fields["images"] if fields["images"] is not None else extra.get("images", extra.get("image"))
    return {"images": images, "question": question, "response": solution_str, "reference": fields["reference"]}


def verl_result(reward: float | None, result: dict, missing_reward: float = 0.5) -> dict:
    """The dict verl logs: always the keys of VERL_KEYS (verl builds its arrays from the first sample's keys)."""
    value = missing_reward if reward is None else float(reward)
    return {"score": value, "egt_prob": value, "egt_abstain": float(bool(result.get("abstain"))),
            "egt_orders_agree": float(bool(result.get("orders_agree"))),
            "egt_answer_forced": float(result.get("answer_forced") or 0), "egt_unreadable": float(reward is None)}


def _split_options(kwargs: dict) -> tuple[str | None, float, dict]:
    """egt_url, missing_reward and client options from verl's kwargs; verl's own extras are ignored."""
    options = {k[len("egt_"):]: v for k, v in kwargs.items()
               if k in ("egt_timeout_s", "egt_retries", "egt_token_env", "egt_send_paths")}
    return kwargs.get("egt_url"), float(kwargs.get("missing_reward", 0.5)), options


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl's per-sample reward function: {"score": P(response better than the reference), ...}."""
    url, missing, options = _split_options(kwargs)
    answer = _client(url, **options).score([verl_item(solution_str, ground_truth, extra_info)])
    return verl_result(answer["rewards"][0], answer["results"][0], missing)


async def compute_score_async(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """compute_score for verl's reward loop as a coroutine (the HTTP call runs in a thread)."""
    return await asyncio.to_thread(compute_score, data_source, solution_str, ground_truth, extra_info, **kwargs)


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, chunk_size: int = 64,
                        **kwargs) -> list[dict]:
    """verl's batched form (BatchRewardManager): one request per `chunk_size` samples."""
    url, missing, options = _split_options(kwargs)
    client = _client(url, **options)
    if extra_infos is None:  # verl passes numpy arrays: no truth value, so test for None
        extra_infos = [None] * len(solution_strs)
    items = [verl_item(s, g, e) for s, g, e in zip(solution_strs, ground_truths, extra_infos)]
    out = []
    for start in range(0, len(items), chunk_size):
        answer = client.score(items[start:start + chunk_size])
        out += [verl_result(r, res, missing) for r, res in zip(answer["rewards"], answer["results"])]
    return out
