"""A loopback teacher that speaks the OpenAI chat-completions protocol and injects faults.

    with FaultTeacher(faults={"rate_limited": 0.05, "timeout": 0.01}, timeout_s=1.0) as teacher:
        ... egt distill base_url=teacher.base_url ...
    teacher.injected        # Counter of the faults it injected, by kind
    teacher.answered        # requests it answered with a completion

or as a process (benchmarks/bench_teacher_faults.py):

    python tests/fault_teacher.py --port 0 --faults rate_limited=0.05,timeout=0.01 --timeout-s 1
    (prints its base URL; GET /stats returns the counts as JSON)

Its answers depend only on the request (the pair's question and the `seed` field), never on the faults
or on the order requests arrive in, so a run under faults must end with the same traces as a run
without: `fault_pairs` writes pairs whose question `q<i>` fixes the label (`label_of`) and whether the
teacher refuses it (`refuses`: 2 in 25, half with a 400 content_filter error, half with a 200
`finish_reason: content_filter`); each attempt is faithful, unfaithful or unparsable by the hash of
(question, seed).

Fault kinds (each request draws at most one, with the given probabilities):
- rate_limited: 429 with `retry-after-ms: 20` (and Retry-After: 0)
- server_error: 500; unavailable: 503 with Retry-After: 0
- timeout: no reply until after the client's timeout
- dropped: the connection is closed without a reply
- slow_body: headers at once, then the body a byte at a time for longer than the client's timeout
- truncated: a Content-Length larger than the body, then the connection is closed (in a stream: the
  events stop before the last one)
- malformed: a 200 whose body is not JSON; error_200: a 200 whose body is an error object
`reject_param` answers every request that holds that field with OpenAI's 400 for it
(`{"error": {"param": ..., "code": "unsupported_parameter"}}`); `slow_ok_s` delays every reply.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAULT_KINDS = ("rate_limited", "server_error", "unavailable", "timeout", "dropped", "slow_body", "truncated",
               "malformed", "error_200")
# The mix the fault tests and the benchmark use: ~22% of requests fail, every kind represented.
DEFAULT_FAULTS = {"rate_limited": 0.05, "server_error": 0.03, "unavailable": 0.03, "timeout": 0.01,
                  "dropped": 0.03, "slow_body": 0.01, "truncated": 0.02, "malformed": 0.02, "error_200": 0.02}


def _hash(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def label_of(question: str) -> int:
    return 1 + _hash("label", question) % 2


def refuses(question: str) -> str | None:
    """How the teacher's content policy declines this question: "400", "200" or None (it answers).
    Pairs q<i> with i % 25 == 7 get a 400 content_filter error, i % 25 == 19 a 200 content_filter finish."""
    digits = question.lstrip("q")
    i = int(digits) if digits.isdigit() else _hash("refuse", question)
    return "400" if i % 25 == 7 else "200" if i % 25 == 19 else None


def reply_text(question: str, seed) -> str:
    """The teacher's reply to attempt `seed` of `question`: faithful 75%, unfaithful 17%, unparsable 8%."""
    label = label_of(question)
    u = _hash("attempt", question, seed) % 1000 / 1000
    if u < 0.75:
        return f"<think>Response {label} answers {question} best (seed {seed}).</think><answer>{label}</answer>"
    if u < 0.92:
        return f"<think>Response {3 - label} looks better.</think><answer>{3 - label}</answer>"
    return "I cannot decide between them."


def fault_pairs(n: int, folder: Path, images_per_pair: int = 1, image_size=(8, 8)) -> Path:
    """A pairs file of n pairs `p<i>` with question `q<i>` (label_of decides the label), one image each."""
    from PIL import Image

    from egt.core.records import ImageRef, PreferencePair, write_pairs

    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "img.png"
    Image.new("RGB", image_size, (200, 30, 30)).save(image)
    pairs = [PreferencePair(id=f"p{i:05d}", images=[ImageRef(path=str(image))] * images_per_pair,
                            question=f"q{i:05d}", response_1=f"first answer {i}", response_2=f"second answer {i}",
                            label=label_of(f"q{i:05d}")) for i in range(n)]
    path = folder / "pairs.parquet"
    write_pairs(pairs, path)
    return path


def _completion(content: str, model: str, prompt_tokens: int, finish_reason: str = "stop") -> dict:
    completion_tokens = max(1, len(content) // 4)
    return {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def _stream_events(body: dict) -> list[bytes]:
    """The SSE events of a completion, as OpenAI streams it: role, content pieces, finish, usage, [DONE]."""
    choice = body["choices"][0]
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
    content = choice["message"]["content"]
    pieces = [content[i:i + 16] for i in range(0, len(content), 16)] or [""]
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    chunks.append({**base, "choices": [], "usage": body["usage"]})
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


class FaultTeacher:
    """The server (a context manager). `faults`: kind -> probability per request; `timeout_s`: the
    client's timeout, which `timeout` and `slow_body` faults outlast."""

    def __init__(self, faults: dict[str, float] | None = None, timeout_s: float = 1.0, seed: int = 0,
                 reject_param: str | None = None, slow_ok_s: float = 0.0, port: int = 0, key: str | None = None):
        unknown = set(faults or {}) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.faults, self.timeout_s, self.reject_param = dict(faults or {}), timeout_s, reject_param
        self.slow_ok_s, self.key = slow_ok_s, key
        self.rng = random.Random(seed)
        self.injected: Counter = Counter()
        self.answered = 0
        self.refused = 0
        self.requests = 0
        self.bodies: list[dict] = []      # every request body (without the messages)
        self.image_urls: list[str] = []   # every image data URL received
        self.times: list[float] = []      # arrival time of every request (time.monotonic)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FaultTeacher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stats(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "answered": self.answered, "refused": self.refused,
                    "injected": dict(sorted(self.injected.items())), "injected_total": sum(self.injected.values())}

    def _draw(self) -> str | None:
        with self.lock:
            u, acc = self.rng.random(), 0.0
            for kind in FAULT_KINDS:
                acc += self.faults.get(kind, 0.0)
                if u < acc:
                    self.injected[kind] += 1
                    return kind
        return None

    def _handler(self):
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None,
                      content_type: str = "application/json", length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload) if length is None else length))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()

            def _error(self, status: int, message: str, headers: dict | None = None, **fields) -> None:
                body = {"error": {"message": message, "type": "server_error" if status >= 500 else
                                  "invalid_request_error", "param": None, "code": None, **fields}}
                self._send(status, json.dumps(body).encode(), headers)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def do_GET(self):  # noqa: N802
                if self.path.rstrip("/").endswith("/stats"):
                    self._send(200, json.dumps(teacher.stats()).encode())
                else:
                    self._error(404, "not found")

            def do_POST(self):  # noqa: N802
                try:
                    self._post()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up: as a real server sees it
                    self.close_connection = True

            def _post(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                with teacher.lock:
                    teacher.requests += 1
                    teacher.times.append(time.monotonic())
                    teacher.bodies.append({k: v for k, v in body.items() if k != "messages"})
                    teacher.image_urls += [p["image_url"]["url"] for m in body.get("messages", [])
                                           if isinstance(m.get("content"), list)
                                           for p in m["content"] if p.get("type") == "image_url"]
                if teacher.key is not None and self.headers.get("Authorization") != f"Bearer {teacher.key}":
                    return self._error(401, "Incorrect API key provided")
                if not self.path.endswith("/chat/completions"):
                    return self._error(404, f"no route {self.path}")
                if teacher.reject_param and teacher.reject_param in body:
                    return self._error(400, f"Unsupported parameter: '{teacher.reject_param}' is not supported "
                                            f"with this model.", param=teacher.reject_param,
                                       code="unsupported_parameter")
                fault = teacher._draw()
                stream = bool(body.get("stream"))
                if fault == "rate_limited":
                    return self._error(429, "Rate limit reached for requests", {"retry-after-ms": "20",
                                                                                 "Retry-After": "0"})
                if fault == "server_error":
                    return self._error(500, "The server had an error while processing your request.")
                if fault == "unavailable":
                    return self._error(503, "The engine is currently overloaded.", {"Retry-After": "0"})
                if fault == "timeout":
                    time.sleep(teacher.timeout_s + 0.3)
                    return self._drop()
                if fault == "dropped":
                    return self._drop()
                if fault == "malformed":
                    return self._send(200, b'{"id": "chatcmpl-x", "object": "chat.completion", "choi')
                if fault == "error_200":
                    return self._send(200, json.dumps({"error": {"message": "upstream overloaded",
                                                                 "code": 502}}).encode())
                text = next(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text")
                question = text.split("Question: ", 1)[1].split("\n", 1)[0].strip()
                images = sum(p["type"] == "image_url" for p in body["messages"][-1]["content"])
                prompt_tokens = len(text) // 4 + 64 * images
                how = refuses(question)
                if how == "400":
                    status, reply = 400, {"error": {"message": "The response was filtered due to the prompt triggering "
                                                               "the content management policy.",
                                                    "type": "invalid_request_error", "param": "prompt",
                                                    "code": "content_filter"}}
                elif how == "200":
                    status, reply = 200, _completion("", body.get("model", "m"), prompt_tokens, "content_filter")
                else:
                    status, reply = 200, _completion(reply_text(question, body.get("seed")), body.get("model", "m"),
                                                     prompt_tokens)
                if status != 200 and fault in ("truncated", "slow_body"):
                    with teacher.lock:  # body faults are for replies: an error's body is read before raising
                        teacher.injected[fault] -= 1
                    fault = None
                if teacher.slow_ok_s:
                    time.sleep(teacher.slow_ok_s)
                if stream and status == 200:
                    events = _stream_events(reply)
                    if fault == "truncated":
                        events = events[: max(1, len(events) // 2)]
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for event in events:
                        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                        self.wfile.flush()
                        if fault == "slow_body":
                            time.sleep(teacher.timeout_s / 3)
                    if fault == "truncated":
                        return self._drop()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    payload = json.dumps(reply).encode()
                    if fault == "truncated":
                        self._send(status, payload[: len(payload) // 2], length=len(payload))
                        return self._drop()
                    if fault == "slow_body":
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        step = max(1, len(payload) // 10)
                        for i in range(0, len(payload), step):
                            self.wfile.write(payload[i:i + step])
                            self.wfile.flush()
                            time.sleep((teacher.timeout_s + 0.5) / 10)
                        return
                    self._send(status, payload)
                with teacher.lock:  # delivered whole: the client reads this reply
                    if how is None:
                        teacher.answered += 1
                    else:
                        teacher.refused += 1

        return Handler


def _parse_faults(text: str) -> dict[str, float]:
    if text == "default":
        return dict(DEFAULT_FAULTS)
    return {k: float(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", default="default", help="kind=p,... or 'default' or ''")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="the client's timeout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped with SIGTERM (SIGINT may be ignored)
    with FaultTeacher(_parse_faults(args.faults), args.timeout_s, args.seed, port=args.port) as teacher:
        print(teacher.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    sys.exit(main())
