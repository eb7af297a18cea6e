"""Builders shared by several test files (import with `from helpers import score_row`)."""

from __future__ import annotations

import math
from collections import Counter

from egt.schema import PreferencePair
from egt.scorefile import METRIC_COLUMNS, SCORE_COLUMNS


def score_row(pair_id: str, label: int = 1, verdicts=(1, 1, 1, 1), meta: dict | None = None,
              n_tokens_mean: float = 10.0, **metrics: float) -> dict:
    """One score-file row as `egt score` writes it: a pair's columns plus every column of SCORE_COLUMNS.

    Entropies are given by metric name (answer=, sentence=, mean=, max=, vote=); answer defaults to
    NaN (no verdict position), the others to 0. k_accuracy, majority_verdict, parse_failures and
    answer_entropy_missing follow from `verdicts`, `label` and the answer entropy as egt.entropy
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


class OpenAIServer:
    """A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol (the real `openai`
    client talks to it): `respond(path, authorization, body) -> (status, payload, headers)` answers each
    POST; `requests` records (path, authorization, body). Use as a context manager; `base_url` ends in /v1.
    Shared by the distill teacher, the LLM logic judge and egt.endpoint tests."""

    def __init__(self, respond):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.respond, self.requests, self.lock = respond, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                with server.lock:
                    server.requests.append((self.path, auth, body))
                status, payload, headers = server.respond(self.path, auth, body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def chat_completion(content: str, model: str, completion_id: str = "chatcmpl-1", prompt_tokens: int = 100,
                    completion_tokens: int = 20) -> dict:
    """The JSON body of an OpenAI chat.completion reply with one assistant message."""
    return {"id": completion_id, "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def api_error(status: int, message: str = "error") -> tuple[int, dict, dict]:
    """An OpenAI-style error reply (status, body, headers)."""
    return status, {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request"}}, {}
