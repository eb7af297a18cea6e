"""Builders shared by several test files (import with `from helpers import score_row`).

- `score_row`: one score-file row as `egt score` writes it.
- `bomb_png`: a valid one-bit PNG of any size whose file is tiny (a decompression bomb: 13,000 x 13,000 is
  ~45 KB on disk and 169 million pixels decoded), made without decoding it.
- `FakeOpenAIServer`: a real HTTP server on 127.0.0.1 speaking the OpenAI REST protocol (the teacher of
  test_distill, the logic judge of test_rewards, the served judge of test_judge_endpoint), and
  `chat_completion`, the body of a chat-completions reply; `FakeServedJudge`, a served judge to answer with,
  and `SLOW_SERVED_JUDGE`, a script serving it slowly from its own process (for kill -9 tests).
- `LiveServer`: egt serve's app on a real uvicorn server in a thread (the reward service's tests), and
  `http`, one request answered with (status, JSON, headers).
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from egt.core.records import PreferencePair
from egt.core.score_columns import METRIC_COLUMNS, SCORE_COLUMNS


def bomb_png(width: int, height: int) -> bytes:
    """A black one-bit PNG of width x height, compressed row by row (never held decoded in memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)   # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)   # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def score_row(pair_id: str, label: int = 1, verdicts=(1, 1, 1, 1), meta: dict | None = None,
              n_tokens_mean: float = 10.0, **metrics: float) -> dict:
    """One score-file row as `egt score` writes it: a pair's columns plus every column of SCORE_COLUMNS.

    Entropies are given by metric name (answer=, sentence=, mean=, max=, vote=); answer defaults to
    NaN (no verdict position), the others to 0. k_accuracy, majority_verdict, parse_failures and
    answer_entropy_missing follow from `verdicts`, `label` and the answer entropy as egt.model.entropy
    computes them.
    """
    unknown = sorted(set(metrics) - set(METRIC_COLUMNS))
    if unknown:
        raise TypeError(f"unknown metric(s) {unknown}; expected some of {list(METRIC_COLUMNS)}")
    votes = Counter(v for v in verdicts if v).most_common()
    majority = votes[0][0] if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]) else 0
    values = {name: (math.nan if name == "answer" else 0.0) for name in METRIC_COLUMNS}
    values.update(metrics)
    extra = {
        "completions": ["<think>x</think><answer>1</answer>"] * len(verdicts),
        "verdicts": list(verdicts),
        "k_accuracy": sum(v == label for v in verdicts) / len(verdicts),
        "majority_verdict": majority,
        "parse_failures": sum(v == 0 for v in verdicts),
        "answer_entropy_missing": int(math.isnan(values["answer"])),
        **{METRIC_COLUMNS[name]: value for name, value in values.items()},
        "n_tokens_mean": n_tokens_mean, "format_ok_rate": 1.0, "truncated": 0,
    }
    assert set(extra) == set(SCORE_COLUMNS)
    return PreferencePair(id=pair_id, images=[], question="Which is better?", response_1="one", response_2="two",
                          label=label, source="test", category="c", meta=meta or {}, extra=extra).to_row()


# ---------------------------------------------------------------- a fake OpenAI-compatible server

Responder = Callable[[str, str, dict, dict | None], tuple]


class FakeOpenAIServer:
    """A loopback server that answers with `respond(method, path, headers, body)`.

    `respond` returns (status, payload) or (status, payload, extra headers); the payload is sent
    as JSON. Every request is recorded in `requests` as (method, path, headers, body). Use it as a
    context manager; `base_url` ends in /v1, as the openai client expects.
    """

    def __init__(self, respond: Responder):
        self.respond = respond
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _answer(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server.lock:
                    server.requests.append((method, self.path, headers, body))
                status, payload, *extra = server.respond(method, self.path, headers, body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (extra[0] if extra else {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_POST(self):  # noqa: N802
                self._answer("POST")

            def do_GET(self):  # noqa: N802
                self._answer("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def chat_completion(content: str, model: str, logprobs: list[dict] | None = None, finish_reason: str = "stop",
                    completion_tokens: int = 20, reply_id: str = "chatcmpl-x") -> dict:
    """A chat.completion body as OpenAI (and vLLM) send it; `logprobs` is the list of per-token entries."""
    return {"id": reply_id, "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason,
                         "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": completion_tokens,
                      "total_tokens": 100 + completion_tokens}}


class FakeServedJudge:
    """A judge served behind the OpenAI protocol (what `vllm serve <judge>` answers), for FakeOpenAIServer.

    It prefers the response that starts with "good" and writes `<think>Response k is good.</think>
    <answer>k</answer>` (no verdict when neither starts with "good"); a question containing "hard"
    makes it pick the other response. With `logprobs` it returns every token (tags, words, single
    other characters, then an `<|im_end|>` stop token that the content leaves out) with its raw
    bytes and two top log-probs: `TEXT_PROBS` for every token but the verdict digit, which gets
    `DIGIT_PROBS` (`HARD_DIGIT_PROBS` on hard questions). GET /models lists `models`.
    """

    TEXT_PROBS = (0.6, 0.3)
    DIGIT_PROBS = (0.9, 0.05)
    HARD_DIGIT_PROBS = (0.5, 0.4)

    def __init__(self, models=("judge-x",), logprobs: bool = True, key: str | None = None):
        self.models, self.logprobs, self.key = list(models), logprobs, key

    @staticmethod
    def tokens(text: str) -> list[str]:
        import re

        parts = re.findall(r"</?\w+>|\w+|[^\w<]|<", text)
        assert "".join(parts) == text
        return parts

    @staticmethod
    def entry(token: str, probs) -> dict:
        alternatives = [token] + [f"alt{i}" for i in range(1, len(probs))]
        return {"token": token, "logprob": math.log(probs[0]), "bytes": list(token.encode("utf-8")),
                "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": list(t.encode("utf-8"))}
                                 for t, p in zip(alternatives, probs)]}

    def __call__(self, method, path, headers, body):
        if self.key is not None and headers.get("authorization") != f"Bearer {self.key}":
            return 401, {"error": {"message": "bad key", "type": "invalid_request_error"}}
        if method == "GET" and path.endswith("/models"):
            return 200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "x"}
                                                    for m in self.models]}
        text = next(part["text"] for part in body["messages"][-1]["content"] if part["type"] == "text")
        question = text.split("Question: ", 1)[1].split("\n", 1)[0]
        first = text.split("\nResponse 1: ", 1)[1].split("\nResponse 2: ")[0]
        second = text.split("\nResponse 2: ", 1)[1]
        good = 1 if first.startswith("good") else 2 if second.startswith("good") else None
        hard = "hard" in question
        if good is None:
            content = "<think>Neither is good.</think>"
        else:
            verdict = 3 - good if hard else good
            content = f"<think>Response {verdict} is good.</think><answer>{verdict}</answer>"
        logprobs = None
        if self.logprobs and body.get("logprobs"):
            tokens = self.tokens(content) + ["<|im_end|>"]
            digit = len(tokens) - 3 if good is not None else -1  # "<answer>", digit, "</answer>", stop
            probs = self.HARD_DIGIT_PROBS if hard else self.DIGIT_PROBS
            logprobs = [self.entry(t, probs if i == digit else self.TEXT_PROBS) for i, t in enumerate(tokens)]
        return 200, chat_completion(content, body["model"], logprobs, completion_tokens=len(self.tokens(content)))


# A script that serves FakeServedJudge on loopback in its own process, answering each request after 20 ms (so that
# a client can be killed half-way): `python -c SLOW_SERVED_JUDGE <tests folder>` prints the base URL, then serves
# until a line arrives on stdin.
SLOW_SERVED_JUDGE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from helpers import FakeOpenAIServer, FakeServedJudge
judge = FakeServedJudge()
def slow(*args):
    time.sleep(0.02)
    return judge(*args)
with FakeOpenAIServer(slow) as server:
    print(server.base_url, flush=True)
    sys.stdin.readline()
"""


def api_error(status: int, message: str = "error") -> tuple[int, dict, dict]:
    """An OpenAI-style error reply (status, body, headers) for FakeOpenAIServer's `respond`."""
    return status, {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request"}}, {}


def assert_tiles(spans, text):
    """Char spans that tile `text`: contiguous, ordered, covering it exactly."""
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(s <= e for s, e in spans)
    assert "".join(text[s:e] for s, e in spans) == text


# ---------------------------------------------------------------- egt serve in a thread

class LiveServer:
    """egt serve's app (egt.judge.serve.create_app) on a real uvicorn server in a thread, on 127.0.0.1:<free port>.

    `with LiveServer(service) as server: server.url`. What needs a process of its own (SIGTERM, kill -9,
    the frameworks' clients) runs `egt serve` itself (tests/judge/test_serve_process.py).
    """

    def __init__(self, service):
        import uvicorn

        from egt.judge.serve import bind, create_app

        self.service = service
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="on",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def http(method: str, url: str, body=None, headers: dict | None = None, raw: bytes | None = None):
    """(status, decoded JSON or text, headers) of one request; never raises for an HTTP status."""
    import urllib.error
    import urllib.request

    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, payload, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, payload, got = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(payload), got
    except ValueError:
        return status, payload.decode("utf-8", "replace"), got


def kill_once_journalled(cmd: list[str], log, lines: int, timeout_s: float = 120, env: dict | None = None) -> int:
    """Start `cmd`, SIGKILL it once its journal `log` holds `lines` complete lines; the lines it holds then.
    Fails (with the command's stderr) if it exits first or nothing is journalled in time."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and log.read_bytes().count(b"\n") >= lines):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"{log}: fewer than {lines} lines after {timeout_s} s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return log.read_bytes().count(b"\n")


def child_pids(pid: int) -> list[int]:
    """The pids whose parent is `pid` (the ranks a torchrun launcher started), from /proc."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def folder_state(out) -> dict[str, str]:
    """Every file under `out` (the lock file aside) with its SHA-256: two states are equal when nothing changed."""
    import hashlib

    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".egt.lock")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
