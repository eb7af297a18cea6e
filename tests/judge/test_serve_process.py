"""`egt serve` as a real process: SIGTERM finishes the requests in flight and exits 0; kill -9 and a restart on
the same port lose no request of a retrying client, and the restarted server gives the same rewards; a bad
model folder fails at start with one line. Several processes and many requests: marked heavy (make test-heavy)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import http

from egt.judge.serve_client import ServeClient

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "src" / "egt" / "assets" / "tiny_judge_base"

pytestmark = pytest.mark.heavy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`python -m egt.cli serve BASE ...` on 127.0.0.1:port; waits until it is ready."""

    def __init__(self, tmp: Path, port: int, *args: str):
        self.ready = tmp / f"ready-{port}-{time.monotonic_ns()}"
        self.log = tmp / f"serve-{port}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "egt.cli", "serve", str(BASE), "--port", str(port),
                                          "--device", "cpu", "--ready_file", str(self.ready), "--access_log", "false",
                                          *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"egt serve did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.url = self.ready.read_text().strip()


def item(i: int) -> dict:
    return {"question": f"Is shape number {i} red?", "response": f"Yes, shape {i} is red.",
            "reference": "No, it is blue."}


def test_sigterm_finishes_the_requests_in_flight(tmp_path):
    server = ServeProcess(tmp_path, free_port(), "--max_new_tokens", "48", "--cache_size", "0",
                          "--max_batch_size", "4")
    client = ServeClient(server.url, retries=0, timeout_s=300)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client.score, [item(i)]) for i in range(8)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the model is busy with them
            metrics = http("GET", server.url + "/metrics")[1]
            if "egt_serve_running_judgements 0.0" not in metrics:
                break
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        results = [f.result(timeout=300) for f in futures]
    assert all(len(r["rewards"]) == 1 and 0 < r["rewards"][0] < 1 for r in results)
    assert server.proc.wait(120) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=2).close()
    log = server.log.read_text()
    assert "Shutting down" in log and "stopped:" in log


def test_kill_9_and_restart_lose_nothing(tmp_path):
    port = free_port()
    args = ("--max_new_tokens", "8", "--cache_size", "0")
    server = ServeProcess(tmp_path, port, *args)
    client = ServeClient(server.url, retries=40, backoff_s=0.2, max_backoff_s=2.0, timeout_s=120)
    results: dict[int, float] = {}
    errors: list[BaseException] = []

    def trainer():
        for i in range(24):
            try:
                results[i] = client.score([item(i)])["rewards"][0]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    thread = threading.Thread(target=trainer)
    thread.start()
    while len(results) < 6:
        time.sleep(0.05)
    server.proc.kill()                                   # kill -9 mid-run
    assert server.proc.wait(30) == -signal.SIGKILL
    restarted = ServeProcess(tmp_path, port, *args)      # same port: the client's retries find it
    thread.join(600)
    assert not errors and sorted(results) == list(range(24)) and client.retried > 0
    # the restarted process (no cache) gives the same rewards as the one that was killed, up to the batching
    # tolerance (alone now, batched with others during the run: docs/serve.md#determinism)
    fresh = ServeClient(restarted.url, retries=0)
    for i in (0, 1, 2):
        assert fresh.score([item(i)])["rewards"][0] == pytest.approx(results[i], abs=1e-5)
    restarted.proc.send_signal(signal.SIGTERM)
    assert restarted.proc.wait(120) == 0


def test_a_bad_model_folder_fails_at_start_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "egt.cli", "serve", str(tmp_path / "missing"), "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    token_env = subprocess.run([sys.executable, "-m", "egt.cli", "serve", str(BASE), "--auth_token_env",
                                "EGT_TEST_UNSET_TOKEN"], env=env, capture_output=True, text=True, timeout=300)
    assert token_env.returncode == 1 and "EGT_TEST_UNSET_TOKEN" in token_env.stderr
