"""egt.core.endpoint: the one fault policy of the distill teacher and the LLM logic judge, against a real
loopback HTTP server speaking the OpenAI chat-completions protocol (tests/helpers.FakeOpenAIServer)."""

from __future__ import annotations

import random
import time

import pytest
from helpers import FakeOpenAIServer, api_error, chat_completion

from egt.core.endpoint import Endpoint, EndpointRefused, RetryPolicy, backoff_delay_s
from egt.core.errors import ConfigError

KEY_ENV = "EGT_TEST_ENDPOINT_KEY"


def scripted(*replies):
    """A server that answers with `replies` in turn (the last one repeats)."""
    replies = list(replies)
    seen = []

    def respond(method, path, headers, body):
        seen.append(body["model"])
        return replies[min(len(seen), len(replies)) - 1]
    return respond


def endpoint(server, monkeypatch, model="m", **policy) -> Endpoint:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    return Endpoint(server.base_url, model, KEY_ENV, timeout_s=5,
                    policy=RetryPolicy(**{"max_retries": 3, "backoff_base_s": 0.001, "backoff_max_s": 0.01, **policy}),
                    what="test endpoint")


def test_transient_errors_are_retried_and_counted(monkeypatch):
    ok = (200, chat_completion("fine", "m"), {})
    with FakeOpenAIServer(scripted(api_error(503), api_error(500), (429, {"error": {"message": "slow"}}, {}), ok)) as server:
        ep = endpoint(server, monkeypatch)
        result = ep.chat([{"role": "user", "content": "hi"}], random.Random(0))
    assert result.reply.content == "fine" and result.retries == 3
    assert ep.stats.as_dict() == {"requests": 4, "retries": 3, "failures": 0,
                                  "faults": {"rate_limited": 1, "server_error": 2}}
    assert {headers.get("authorization") for _, _, headers, _ in server.requests} == {"Bearer sk-test"}


def test_retries_run_out_into_a_counted_failure(monkeypatch):
    with FakeOpenAIServer(scripted(api_error(502))) as server:
        ep = endpoint(server, monkeypatch, max_retries=2)
        result = ep.chat([{"role": "user", "content": "hi"}])
    assert result.reply is None and result.error == "HTTP 502: error" and result.retries == 2
    assert ep.stats.as_dict() == {"requests": 3, "retries": 2, "failures": 1, "faults": {"server_error": 3}}


def test_a_bad_request_is_not_retried(monkeypatch):
    with FakeOpenAIServer(scripted(api_error(400, "bad field"))) as server:
        ep = endpoint(server, monkeypatch)
        result = ep.chat([{"role": "user", "content": "hi"}])
    assert result.error == "HTTP 400: bad field" and result.error_class == "rejected"
    assert len(server.requests) == 1 and ep.stats.failures == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_permission_and_wrong_model_stop_at_once(monkeypatch, status):
    with FakeOpenAIServer(scripted(api_error(status))) as server:
        ep = endpoint(server, monkeypatch, model="no-such-model")
        with pytest.raises(EndpointRefused, match=rf"test endpoint .* \(HTTP {status}\).*'no-such-model'.*{KEY_ENV}"):
            ep.chat([{"role": "user", "content": "hi"}])
        with pytest.raises(EndpointRefused):  # later calls stop without asking again
            ep.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1


def test_retry_after_is_honoured(monkeypatch):
    ok = (200, chat_completion("fine", "m"), {})
    with FakeOpenAIServer(scripted((429, {"error": {"message": "slow"}}, {"Retry-After": "0.3"}), ok)) as server:
        ep = endpoint(server, monkeypatch, backoff_max_s=1.0)
        started = time.monotonic()
        assert ep.chat([{"role": "user", "content": "hi"}]).reply is not None
    assert time.monotonic() - started >= 0.3


def test_connection_errors_retry_then_fail(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk")
    ep = Endpoint("http://127.0.0.1:9/v1", "m", KEY_ENV, timeout_s=0.5,
                  policy=RetryPolicy(max_retries=1, backoff_base_s=0.0, backoff_max_s=0.0))
    result = ep.chat([{"role": "user", "content": "hi"}])
    assert result.error_class == "connection" and "APIConnectionError" in result.error
    assert ep.stats.as_dict() == {"requests": 2, "retries": 1, "failures": 1, "faults": {"connection": 2}}


def test_a_missing_key_variable_is_named_and_never_replaced(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"environment variable {KEY_ENV} .* is not set"):
        Endpoint("http://127.0.0.1:9/v1", "m", KEY_ENV, timeout_s=1)
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(ConfigError, match=KEY_ENV):
        Endpoint("http://127.0.0.1:9/v1", "m", KEY_ENV, timeout_s=1)


def test_backoff_is_exponential_jittered_and_capped():
    rng = random.Random(0)
    delays = [backoff_delay_s(i, 1.0, 8.0, rng) for i in range(6) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays[:200]) <= 1.0 and max(delays[600:800]) > 4.0   # the cap grows as 2^i, up to max_s
    assert backoff_delay_s(0, 1.0, 8.0, rng, retry_after_s=5.0) >= 5.0
    assert backoff_delay_s(0, 1.0, 8.0, rng, retry_after_s=100.0) == 8.0
