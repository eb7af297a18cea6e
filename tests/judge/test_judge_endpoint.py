"""A judge behind an OpenAI-compatible endpoint: a real loopback HTTP server speaking the protocol
(helpers.FakeServedJudge), the real openai client, entropy bounds from top-k log-probs checked by hand."""

from __future__ import annotations

import math

import pytest
from helpers import FakeOpenAIServer, FakeServedJudge
from PIL import Image

from egt.core.errors import ConfigError, EgtError
from egt.judge.api import Judge, content_key, make_pair
from egt.model.generation import judgement_seed

KEY_ENV = "EGT_TEST_JUDGE_KEY"
SECRET = "sk-judge-SECRET-42"
V = 10


def bounds(probs, vocab=V):
    """Hand formula: H_k + r log(1/p_k) <= H <= H_k + r log((V - k) / r)."""
    kept = -sum(p * math.log(p) for p in probs)
    r = 1 - sum(probs)
    return kept + r * math.log(1 / min(probs)), kept + r * math.log((vocab - len(probs)) / r)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (0, 90, 200)).save(path)
    return path


def test_compare_over_http_with_entropy_bounds(image, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with FakeOpenAIServer(FakeServedJudge(key=SECRET)) as server:
        judge = Judge.from_pretrained(server.base_url, api_key_env=KEY_ENV, vocab_size=V, top_logprobs=2)
        assert judge.backend.model == "judge-x"      # the one model the server lists
        c = judge.compare(image, "What is shown?", "good answer", "bad answer")
        posts = [r for r in server.requests if r[0] == "POST"]
    assert c.verdict == 1 and c.vote_share == (1.0, 0.0) and c.orders_agree is True and c.confidence == 1.0
    assert [t.verdict for t in c.traces] == [1, 2] and [t.choice for t in c.traces] == [1, 1]
    assert c.traces[0].text == "<think>Response 1 is good.</think><answer>1</answer>"   # the stop token is cut
    # every token but the digit has the text bounds; the think block is one sentence of text tokens
    text_lo, text_up = bounds(FakeServedJudge.TEXT_PROBS)
    digit_lo, digit_up = bounds(FakeServedJudge.DIGIT_PROBS)
    n = len(FakeServedJudge.tokens(c.traces[0].text))
    assert c.entropy_kind == "upper_bound"
    expected = {"answer": digit_up, "sentence": text_up, "max": text_up, "mean": ((n - 1) * text_up + digit_up) / n}
    expected_lower = {"answer": digit_lo, "sentence": text_lo, "max": text_lo,
                      "mean": ((n - 1) * text_lo + digit_lo) / n}
    for metric in expected:
        assert c.entropies[metric] == pytest.approx(expected[metric], rel=1e-9), metric
        assert c.entropies_lower[metric] == pytest.approx(expected_lower[metric], rel=1e-9), metric
    assert c.entropies["vote"] == 0.0 and c.traces[0].n_tokens == n
    # the requests: greedy, log-probs, the image as a data URL, the prompt in both orders, the key as a bearer
    assert len(posts) == 2
    firsts = []
    for _, path, headers, body in posts:  # sent concurrently: in any order
        assert path == "/v1/chat/completions" and headers["authorization"] == f"Bearer {SECRET}"
        assert body["temperature"] == 0.0 and "seed" not in body
        assert body["logprobs"] is True and body["top_logprobs"] == 2 and body["model"] == "judge-x"
        parts = body["messages"][0]["content"]
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
        firsts.append(parts[1]["text"].split("Response 1: ")[1].split("\n")[0])
    assert sorted(firsts) == ["bad answer", "good answer"]


def test_sampled_judgements_send_their_own_seeds(image):
    with FakeOpenAIServer(FakeServedJudge()) as server:
        judge = Judge.from_pretrained(server.base_url, vocab_size=V, seed=7, temperature=0.7, top_p=0.9)
        c = judge.compare(image, "q", "bad one", "good one", samples=3)
        posts = [r[3] for r in server.requests if r[0] == "POST"]
    assert c.verdict == 2 and c.n_judgements == 6
    pair = make_pair(image, "q", "bad one", "good one")
    expected = {judgement_seed(7, content_key(pair.in_order(order)), k) for order in ("given", "swapped")
                for k in range(3)}
    assert {b["seed"] for b in posts} == expected
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 for b in posts)


def test_no_logprobs_means_no_entropies_but_votes(image):
    with FakeOpenAIServer(FakeServedJudge(logprobs=False)) as server:
        judge = Judge.from_pretrained(server.base_url, served_model="judge-x", vocab_size=V)
        c = judge.compare(image, "q", "good", "bad")
        assert not any(r[0] == "GET" for r in server.requests)   # served_model given: no lookup
    assert c.verdict == 1 and c.entropy_kind is None and c.entropies_lower is None
    assert all(c.entropies[m] is None for m in ("answer", "sentence", "mean", "max")) and c.entropies["vote"] == 0.0
    assert c.traces[0].n_tokens == len(FakeServedJudge.tokens(c.traces[0].text))   # from the usage


def test_endpoint_errors_are_one_line_and_never_show_the_key(image, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-SECRET")
    with FakeOpenAIServer(FakeServedJudge(key=SECRET)) as server:
        with pytest.raises(EgtError, match="HTTP 401") as info:
            Judge.from_pretrained(server.base_url, api_key_env=KEY_ENV)
        assert KEY_ENV in str(info.value) and "SECRET" not in str(info.value) and "\n" not in str(info.value)
        monkeypatch.delenv(KEY_ENV)
        with pytest.raises(ConfigError, match=KEY_ENV):
            Judge.from_pretrained(server.base_url, api_key_env=KEY_ENV)
    with FakeOpenAIServer(FakeServedJudge(models=("a", "b"))) as server:
        with pytest.raises(ConfigError, match="served_model"):
            Judge.from_pretrained(server.base_url)
        judge = Judge.from_pretrained(server.base_url, served_model="b", max_retries=0)
    with pytest.raises(EgtError, match="APIConnectionError"):   # the server is gone
        judge.compare(image, "q", "good", "bad")


def test_reply_without_top_alternatives_has_no_entropies(image):
    """Only the chosen tokens' log-probs (no top-k): no bound holds, so no entropies rather than wrong ones."""
    served = FakeServedJudge()

    def respond(method, path, headers, body):
        status, payload = served(method, path, headers, body)
        for entry in (payload["choices"][0]["logprobs"] or {}).get("content") or []:
            entry["top_logprobs"] = []
        return status, payload

    with FakeOpenAIServer(respond) as server:
        c = Judge.from_pretrained(server.base_url, served_model="judge-x").compare(image, "q", "good", "bad")
    assert c.verdict == 1 and c.entropy_kind is None and c.entropies["max"] is None
