"""egt serve's HTTP API on a real uvicorn server (in a thread) with the tiny judge: every endpoint, the errors
(4xx naming the field), auth, size and image limits, the bounded queue (503 + Retry-After), per-client limits,
timeouts, an upstream endpoint judge that is slow or dead, determinism under repetition and concurrency, and
/metrics. Process-level behaviour (SIGTERM, kill -9 and restart) is in test_serve_process.py."""

from __future__ import annotations

import copy
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import FakeOpenAIServer, FakeServedJudge, LiveServer, bomb_png, http
from PIL import Image

from egt.core.config import load_config
from egt.judge.probability import RewardJudge
from egt.judge.serve import Config, Service, judge_options
from egt.judge.serve_client import image_field

MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def tiny_judge(tiny_model_dir):
    """The random-weight tiny judge: it writes no verdict in 6 tokens, so every answer is forced."""
    cfg = load_config(Config, None, {"model": str(tiny_model_dir), "max_new_tokens": MAX_NEW_TOKENS, "device": "cpu"})
    return RewardJudge.from_options(judge_options(cfg))


def service_for(judge, **overrides) -> Service:
    cfg = load_config(Config, None, {"model": judge.options.model, "max_new_tokens": MAX_NEW_TOKENS, **overrides})
    return Service(cfg, judge)


def gated(judge):
    """The judge, with its model calls held until `.gate` is set (to fill the queue on purpose)."""
    held = copy.copy(judge)
    held.gate = threading.Event()
    held.run = lambda requests: (held.gate.wait(30), judge.run(requests))[1]
    return held


def png(size=(8, 8), colour=(200, 20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = image_field(png())


def pair(question="What colour is the square?", r1="It is red.", r2="It is blue.", **extra):
    return {"image": IMAGE, "question": question, "response_1": r1, "response_2": r2, **extra}


def test_compare_score_rank_and_openrlhf_on_the_tiny_judge(tiny_judge):
    with LiveServer(service_for(tiny_judge)) as server:
        status, body, _ = http("POST", server.url + "/v1/compare", {"pairs": [pair(), pair(r1="It is blue.",
                                                                                          r2="It is red.")],
                                                                    "traces": True})
        assert status == 200, body
        first, swapped = body["results"]
        assert body["orders"] == ["given", "swapped"] and body["temperature"] == 1.0
        p1, p2 = first["prob"]
        assert 0 < p1 < 1 and p1 + p2 == pytest.approx(1.0)
        # position-debiased: the mean of P("1") in the given order and P("2") in the swapped one
        assert p1 == pytest.approx((first["prob_by_order"]["given"] + first["prob_by_order"]["swapped"]) / 2)
        assert first["verdict"] == (1 if p1 > 0.5 else 2)
        assert first["orders_agree"] == ((first["prob_by_order"]["given"] > 0.5) ==
                                        (first["prob_by_order"]["swapped"] > 0.5))
        assert first["answer_forced"] == 2 and first["entropy_kind"] == "exact"
        assert set(first["entropies"]) == {"answer", "sentence", "mean", "max", "vote"}
        assert [t["order"] for t in first["traces"]] == ["given", "swapped"]
        # the same two judgements, swapped: response 1 of one pair is response 2 of the other
        assert swapped["prob"][0] == pytest.approx(p2, abs=1e-5)

        status, body, _ = http("POST", server.url + "/v1/score", {"items": [
            {"image": IMAGE, "question": "What colour?", "response": "red", "reference": "blue"}]})
        assert status == 200 and 0 < body["rewards"][0] < 1 and body["rewards"][0] == body["results"][0]["prob"][0]

        for method, n_matches in (("round_robin", 3), ("knockout", 2)):
            status, body, _ = http("POST", server.url + "/v1/rank", {"images": [IMAGE], "question": "What colour?",
                                                                     "candidates": ["red", "blue", "green"],
                                                                     "method": method})
            assert status == 200 and body["matches"] == n_matches
            assert all(0 <= r <= 1 for r in body["rewards"]) and body["best"] in (0, 1, 2)
        assert sum(body["rewards"]) == pytest.approx(1.5)  # knockout: the winner 1, the finalist 1/2, out first 0

        prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour?<|im_end|>\n<|im_start|>assistant\n"
        label = json.dumps({"reference": "blue", "images": [IMAGE]})
        status, body, _ = http("POST", server.url + "/get_reward", {
            "query": [prompt.replace("<|image_pad|>", "<|image_pad|>" * 4) + "red<|im_end|>"], "prompts": [prompt],
            "labels": [label]})
        assert status == 200 and len(body["rewards"]) == 1 and body["scores"] == body["rewards"]
        assert set(body["extra_logs"]) == {"egt_prob", "egt_abstain", "egt_orders_agree", "egt_answer_forced",
                                           "egt_unreadable"}
        # the OpenRLHF reward is the /v1/score reward of the same response, reference, question and image
        _, scored, _ = http("POST", server.url + "/v1/score", {"items": [
            {"image": IMAGE, "question": "What colour?", "response": "red", "reference": "blue"}]})
        assert body["rewards"][0] == scored["rewards"][0]
        assert http("POST", server.url + "/get_reward", {"query": [], "prompts": [], "labels": []})[1]["rewards"] == []

        status, info, _ = http("GET", server.url + "/v1/info")
        assert info["backend"] == "local" and info["settings"]["deterministic"] and not info["auth"]
        assert http("GET", server.url + "/healthz")[:2] == (200, {"status": "ok"})
        assert http("GET", server.url + "/readyz")[1]["status"] == "ready"


def test_malformed_requests_get_a_4xx_naming_the_field(tiny_judge, tmp_path):
    big = image_field(png((2000, 1000)))
    (tmp_path / "ok.png").write_bytes(png())
    with LiveServer(service_for(tiny_judge, max_items_per_request=2, max_image_pixels=1_000_000,
                                image_root=str(tmp_path))) as server:
        def error(path, body=None, raw=None):
            status, answer, _ = http("POST", server.url + path, body, raw=raw)
            return status, answer["error"]["field"], answer["error"]["type"], answer["error"]["message"]

        bad = pair()
        del bad["response_2"]
        assert error("/v1/compare", {"pairs": [bad]})[:2] == (422, "pairs[0].response_2")
        assert error("/v1/compare", {"pairs": [pair(colour="red")]})[:3] == (422, "pairs[0].colour", "invalid_request")
        assert error("/v1/compare", {"pairs": []})[:2] == (422, "pairs")
        assert error("/v1/compare", {"pairs": [pair()], "orders": "sideways"})[:2] == (422, "orders")
        assert error("/v1/compare", raw=b"{not json")[:3] == (400, "body", "bad_json")
        assert error("/v1/rank", {"question": "q", "candidates": ["one"]})[:2] == (422, "candidates")
        assert error("/v1/compare", {"pairs": [pair()] * 3})[:3] == (413, "pairs", "too_many_items")
        # images: caps, encoding, paths
        assert error("/v1/compare", {"pairs": [pair(image=big)]})[:3] == (413, "pairs[0].images[0]", "image_too_large")
        # a decompression bomb (~45 KB, 169 MP): refused from its header, never decoded
        bomb = error("/v1/compare", {"pairs": [pair(image=image_field(bomb_png(13_000, 13_000)))]})
        assert bomb[:3] == (413, "pairs[0].images[0]", "image_too_large") and "169,000,000 pixels" in bomb[3]
        assert error("/v1/compare", {"pairs": [pair(image="data:image/png;base64,@@@")]})[:2] == (400, "pairs[0].images[0]")
        assert error("/v1/compare", {"pairs": [pair(image=image_field(b"not an image"))]})[2] == "bad_image"
        status, field, kind, message = error("/v1/compare", {"pairs": [pair(image="../outside.png")]})
        assert (status, field, kind) == (403, "pairs[0].images[0]", "image_path_refused")
        assert error("/v1/compare", {"pairs": [pair(image="/etc/hostname")]})[0] == 403
        assert error("/v1/compare", {"pairs": [pair(image="http://127.0.0.1:9/x.png")]})[2] == "remote_image_refused"
        assert http("POST", server.url + "/v1/compare", {"pairs": [pair(image="ok.png")]})[0] == 200
        # OpenRLHF: labels must carry the reference
        assert error("/get_reward", {"query": ["x"], "prompts": ["p"]})[:2] == (422, "labels")
        assert error("/get_reward", {"query": ["x"], "prompts": ["p"], "labels": [{"question": "q"}]})[:2] == \
            (422, "labels[0].reference")
        assert error("/get_reward", {"query": ["x", "y"], "labels": ["r"]})[:2] == (422, "labels")
        status, answer, _ = http("GET", server.url + "/nowhere")
        assert status == 404 and answer["error"]["type"] == "not_found"


def test_image_paths_are_refused_without_an_image_root(tiny_judge):
    with LiveServer(service_for(tiny_judge)) as server:
        status, answer, _ = http("POST", server.url + "/v1/compare", {"pairs": [pair(image="scene.png")]})
        assert status == 400 and "image_root" in answer["error"]["message"]


def test_remote_images_when_allowed_are_fetched_with_a_byte_cap(tiny_judge):
    small, large = png(), png((600, 600), (1, 2, 3)) + b"\0" * 5000

    def respond(method, path, headers, body):
        raise AssertionError("not used")

    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Images(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            data = small if self.path == "/small.png" else large
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    images = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{images.server_address[1]}"
    try:
        with LiveServer(service_for(tiny_judge, allow_remote_images=True, max_image_bytes=len(small) + 10)) as server:
            assert http("POST", server.url + "/v1/compare", {"pairs": [pair(image=base + "/small.png")]})[0] == 200
            status, answer, _ = http("POST", server.url + "/v1/compare", {"pairs": [pair(image=base + "/large.png")]})
            assert status == 413 and answer["error"]["field"] == "pairs[0].images[0]"
    finally:
        images.shutdown()


def test_bearer_token_body_limit_and_per_client_limit(tiny_judge, caplog):
    judge = gated(tiny_judge)
    service = service_for(judge, max_concurrent_per_client=1, max_request_bytes=4096)
    service.token = "s3cret-token"
    with LiveServer(service) as server:
        body = {"pairs": [pair(image=None)]}
        assert http("POST", server.url + "/v1/compare", body)[0] == 401
        status, _, headers = http("POST", server.url + "/v1/compare", body, {"Authorization": "Bearer wrong"})
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert http("GET", server.url + "/metrics")[0] == 401
        assert http("GET", server.url + "/healthz")[0] == 200 and http("GET", server.url + "/readyz")[0] == 200
        auth = {"Authorization": "Bearer s3cret-token"}
        status, answer, _ = http("POST", server.url + "/v1/compare", {"pairs": [pair()] * 40}, auth)
        assert status == 413 and answer["error"]["type"] == "body_too_large"
        # one request in flight per client: a second from the same client is refused, another client's is not
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(http, "POST", server.url + "/v1/compare", body, {**auth, "X-Client-Id": "a"})
            deadline = time.monotonic() + 10
            while service.clients.get("a", 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            status, answer, headers = http("POST", server.url + "/v1/compare", body, {**auth, "X-Client-Id": "a"})
            assert status == 429 and headers["Retry-After"] == "1" and answer["error"]["type"] == "client_limit"
            other = pool.submit(http, "POST", server.url + "/v1/compare", body, {**auth, "X-Client-Id": "b"})
            judge.gate.set()
            assert first.result()[0] == 200 and other.result()[0] == 200
        assert "s3cret-token" not in caplog.text


def test_a_full_queue_answers_503_with_retry_after_and_a_slow_judge_times_out(tiny_judge):
    judge = gated(tiny_judge)
    service = service_for(judge, max_queue=4, max_batch_size=2, request_timeout_s=30)
    with LiveServer(service) as server, ThreadPoolExecutor(4) as pool:
        body = {"pairs": [pair()]}                                              # 2 judgements
        taken = pool.submit(http, "POST", server.url + "/v1/compare", body)     # in the model, held
        deadline = time.monotonic() + 10
        while service.batcher.running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = [pool.submit(http, "POST", server.url + "/v1/compare", {"pairs": [pair(question=f"q{i}")]})
                   for i in range(2)]                                          # fill the queue: 4 of 4
        while service.batcher.depth < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        status, answer, headers = http("POST", server.url + "/v1/compare", {"pairs": [pair(question="late")]})
        assert status == 503 and answer["error"]["type"] == "queue_full" and int(headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 5                                   # refused at once, not queued
        assert http("GET", server.url + "/readyz")[0] == 503
        status, answer, _ = http("POST", server.url + "/v1/compare", {"pairs": [pair()] * 3})
        assert status == 413                                                    # 6 judgements never fit in 4
        judge.gate.set()
        assert taken.result()[0] == 200 and [w.result()[0] for w in waiting] == [200, 200]
        _, metrics, _ = http("GET", server.url + "/metrics")
        assert 'egt_serve_errors_total{kind="queue_full"} 1.0' in metrics
        assert "egt_serve_batch_size_bucket" in metrics and "egt_serve_queue_depth 0.0" in metrics
        assert 'egt_serve_requests_total{code="503",endpoint="/v1/compare"} 1.0' in metrics
        assert "egt_serve_request_seconds_bucket" in metrics

    slow = gated(tiny_judge)
    with LiveServer(service_for(slow, request_timeout_s=0.3)) as server:
        status, answer, headers = http("POST", server.url + "/v1/compare", {"pairs": [pair()]})
        assert status == 503 and answer["error"]["type"] == "timeout" and "Retry-After" in headers
        slow.gate.set()


def test_same_request_same_answer_repeated_concurrent_and_across_batch_compositions(tiny_judge):
    body = {"pairs": [pair()]}
    with LiveServer(service_for(tiny_judge)) as server:
        answers = [http("POST", server.url + "/v1/compare", body)[1] for _ in range(2)]
        with ThreadPoolExecutor(6) as pool:
            answers += [f.result()[1] for f in [pool.submit(http, "POST", server.url + "/v1/compare", body)
                                                for _ in range(6)]]
        assert all(a == answers[0] for a in answers)
    # without the cache, the same pair judged alone and inside batches of other pairs: equal up to float noise
    with LiveServer(service_for(tiny_judge, cache_size=0, max_batch_size=8, max_batch_wait_ms=300)) as server:
        alone = http("POST", server.url + "/v1/compare", body)[1]["results"][0]
        crowd = [{"pairs": [pair(question=f"Which shape is number {i}?", r1="A longer answer " * i)]} for i in range(3)]
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(http, "POST", server.url + "/v1/compare", b) for b in crowd + [body]]
            batched = futures[-1].result()[1]["results"][0]
        assert server.service.batcher.stats.batches < 1 + 4  # some of them shared a batch
        assert batched["prob"][0] == pytest.approx(alone["prob"][0], abs=1e-5)
        assert batched["verdict"] == alone["verdict"]


def test_an_upstream_endpoint_judge_and_its_failures(tmp_path):
    served = FakeServedJudge()
    delay = {"s": 0.0}

    def respond(method, path, headers, body):
        time.sleep(delay["s"] if method == "POST" else 0)
        return served(method, path, headers, body)

    with FakeOpenAIServer(respond) as upstream:
        cfg = load_config(Config, None, {"model": upstream.base_url, "served_model": "judge-x", "vocab_size": 10,
                                         "top_logprobs": 2, "timeout_s": 0.5, "max_retries": 0, "concurrency": 2})
        judge = RewardJudge.from_options(judge_options(cfg))
        with LiveServer(Service(cfg, judge)) as server:
            status, body, _ = http("POST", server.url + "/v1/compare", {"pairs": [
                {"question": "q", "response_1": "good one", "response_2": "bad one"}]})
            assert status == 200, body
            result = body["results"][0]
            # the digit had p = 0.9 and the other answer was not in the top 2: bounded by the smallest listed (0.05)
            assert result["prob"][0] == pytest.approx(0.9 / 0.95) and result["verdict"] == 1
            assert result["orders_agree"] is True and result["entropy_kind"] == "upper_bound"
            # no verdict in either order: no probability, abstain
            status, body, _ = http("POST", server.url + "/v1/score", {"items": [
                {"question": "q", "response": "bad a", "reference": "bad b"}]})
            assert status == 200 and body["rewards"] == [None] and body["results"][0]["abstain"] is True
            # a slow upstream: its own timeout, then a 503 (never a hung worker)
            delay["s"] = 2.0
            started = time.monotonic()
            status, body, headers = http("POST", server.url + "/v1/compare", {"pairs": [
                {"question": "q2", "response_1": "good two", "response_2": "bad"}]})
            assert status == 503 and body["error"]["type"] == "upstream" and "Retry-After" in headers
            assert time.monotonic() - started < 10
            delay["s"] = 0.0
            upstream.__exit__()  # dead upstream
            status, body, _ = http("POST", server.url + "/v1/compare", {"pairs": [
                {"question": "q3", "response_1": "good three", "response_2": "bad"}]})
            assert status == 503 and body["error"]["type"] == "upstream"
