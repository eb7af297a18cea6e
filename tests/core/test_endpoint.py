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


# ---------------------------------------------------------------- classes of faults

def test_retry_after_forms_are_read():
    from egt.core.endpoint import retry_after_s

    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25   # the precise one wins
    assert 40 < retry_after_s({"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                            time.gmtime(time.time() + 45))}) <= 45
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


@pytest.mark.parametrize("error, param", [
    ({"message": "Unsupported value: 'temperature' does not support 0.7 with this model.", "param": "temperature",
      "code": "unsupported_value"}, "temperature"),
    # no param field: the first sent parameter the message names
    ({"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                 "'max_completion_tokens' instead.", "param": None}, "max_tokens"),
    ({"message": "top_p must be in (0, 1], got 0.0."}, "top_p"),
])
def test_a_rejected_parameter_stops_with_the_setting_that_removes_it(monkeypatch, error, param):
    from egt.core.endpoint import EndpointPool, ParameterRejected

    with FakeOpenAIServer(scripted((400, {"error": error}, {}))) as server:
        ep = endpoint(server, monkeypatch)
        pool = EndpointPool([ep], ep.policy, what="teacher", param_hints={param: f"set {param}: null"})
        params = {"temperature": 0.7, "top_p": 0.0, "max_tokens": 9}
        with pytest.raises(ParameterRejected, match=rf"rejects the parameter '{param}' .*set {param}: null") as info:
            pool.chat([{"role": "user", "content": "hi"}], None, params)
        assert info.value.param == param
        with pytest.raises(ParameterRejected):  # every later request stops at once, unsent
            pool.chat([{"role": "user", "content": "hi"}], None, params)
    assert len(server.requests) == 1 and str(info.value).count("\n") == 0


def test_a_400_about_the_request_itself_is_a_per_request_rejection(monkeypatch):
    reply = (400, {"error": {"message": "This model's maximum context length is 8192 tokens; messages[0] has "
                                        "9000", "param": "messages", "code": "context_length_exceeded"}}, {})
    with FakeOpenAIServer(scripted(reply)) as server:
        result = endpoint(server, monkeypatch).chat([{"role": "user", "content": "hi"}], temperature=0.7)
    assert result.error_class == "rejected" and "maximum context length" in result.error
    assert len(server.requests) == 1


def test_content_policy_refusals_are_their_own_class_and_not_retried(monkeypatch):
    filtered = (400, {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's "
                                           "content management policy.", "code": "content_filter"}}, {})
    finish = (200, chat_completion("", "m", finish_reason="content_filter"), {})
    refusal_body = chat_completion("", "m")
    refusal_body["choices"][0]["message"]["refusal"] = "I can't help with that."
    with FakeOpenAIServer(scripted(filtered, finish, (200, refusal_body, {}))) as server:
        ep = endpoint(server, monkeypatch)
        for text in ("content management policy", "content_filter", "I can't help with that."):
            result = ep.chat([{"role": "user", "content": "hi"}])
            assert result.error_class == "refused" and text in result.error and result.retries == 0
    assert len(server.requests) == 3


def test_quota_exhausted_stops_instead_of_retrying(monkeypatch):
    quota = (429, {"error": {"message": "You exceeded your current quota, please check your plan and billing "
                                        "details.", "type": "insufficient_quota", "code": "insufficient_quota"}}, {})
    with FakeOpenAIServer(scripted(quota)) as server:
        with pytest.raises(EndpointRefused, match="quota or credit is used up"):
            endpoint(server, monkeypatch).chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1


@pytest.mark.parametrize("kind", ["malformed", "error_200", "truncated", "dropped", "slow_body", "timeout",
                                  "unavailable"])
def test_every_transient_fault_is_classified_and_retried(monkeypatch, kind):
    from fault_teacher import FaultTeacher

    from egt.core.endpoint import TRANSIENT

    with FaultTeacher(faults={kind: 1.0}, timeout_s=0.5) as teacher:
        monkeypatch.setenv(KEY_ENV, "sk")
        ep = Endpoint(teacher.base_url, "m", KEY_ENV, timeout_s=0.5,
                      policy=RetryPolicy(max_retries=1, backoff_base_s=0.001, backoff_max_s=0.01))
        started = time.monotonic()
        result = ep.chat([{"role": "user", "content": [{"type": "text", "text": "Question: q1\n"}]}], seed=1)
        elapsed = time.monotonic() - started
    expected = {"malformed": "bad_reply", "error_200": "server_error", "truncated": "truncated",
                "dropped": "connection", "slow_body": "timeout", "timeout": "timeout", "unavailable": "server_error"}
    assert result.reply is None and result.error_class == expected[kind] in TRANSIENT
    assert result.retries == 1 and teacher.injected == {kind: 2}
    assert elapsed < 2 * (0.5 + 0.5) + 1.5   # a trickling body is cut off at its deadline, not read to its end


def test_streamed_replies_are_assembled_and_a_cut_stream_is_retried(monkeypatch):
    from fault_teacher import FaultTeacher, reply_text

    from egt.core.endpoint import EndpointPool

    monkeypatch.setenv(KEY_ENV, "sk")
    messages = [{"role": "user", "content": [{"type": "text", "text": "Question: q8\n"}]}]
    with FaultTeacher(faults={}) as teacher:
        ep = Endpoint(teacher.base_url, "m", KEY_ENV, timeout_s=2, policy=RetryPolicy(0, 0.001, 0.01))
        pool = EndpointPool([ep], ep.policy)
        result = pool.chat(messages, None, {"seed": 5}, stream=True)
    assert result.reply.content == reply_text("q8", 5) and result.reply.completion_tokens > 0
    assert teacher.bodies[0]["stream"] is True and teacher.bodies[0]["stream_options"] == {"include_usage": True}
    with FaultTeacher(faults={"truncated": 1.0}) as teacher:
        ep = Endpoint(teacher.base_url, "m", KEY_ENV, timeout_s=2, policy=RetryPolicy(1, 0.001, 0.01))
        result = EndpointPool([ep], ep.policy).chat(messages, None, {"seed": 5}, stream=True)
    assert result.error_class == "truncated" and result.retries == 1


def test_requests_spread_by_weight_and_fail_over_from_a_dead_endpoint(monkeypatch):
    from fault_teacher import FaultTeacher

    from egt.core.endpoint import EndpointPool

    monkeypatch.setenv(KEY_ENV, "sk")
    policy = RetryPolicy(max_retries=3, backoff_base_s=0.001, backoff_max_s=0.01)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Question: q1\n"}]}]
    with FaultTeacher() as a, FaultTeacher() as b:
        pool = EndpointPool([Endpoint(a.base_url, "m", KEY_ENV, 2, policy),
                             Endpoint(b.base_url, "m", KEY_ENV, 2, policy, weight=3)], policy)
        for i in range(20):
            assert pool.chat(messages, None, {"seed": i}).reply is not None
    assert (a.requests, b.requests) == (5, 15)
    with FaultTeacher() as alive:
        dead = Endpoint("http://127.0.0.1:9/v1", "m", KEY_ENV, 0.5, policy, name="dead")
        pool = EndpointPool([dead, Endpoint(alive.base_url, "m", KEY_ENV, 2, policy)], policy, set_aside_after=2,
                            set_aside_s=60)
        results = [pool.chat(messages, None, {"seed": i}) for i in range(10)]
    assert all(r.reply is not None for r in results) and alive.requests == 10
    # the dead endpoint failed twice in a row, was set aside, and got no more requests
    assert dead.stats.as_dict()["requests"] == 2 and dead.set_aside_count == 1
    assert sum(r.retries for r in results) == 2


def test_the_shared_rate_limit_holds_across_threads(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from fault_teacher import FaultTeacher

    from egt.core.endpoint import EndpointPool
    from egt.core.ratelimit import RateLimiter

    monkeypatch.setenv(KEY_ENV, "sk")
    messages = [{"role": "user", "content": [{"type": "text", "text": "Question: q1\n"}]}]
    with FaultTeacher() as teacher:
        ep = Endpoint(teacher.base_url, "m", KEY_ENV, 2, RetryPolicy(0, 0, 0))
        pool = EndpointPool([ep], ep.policy, limiter=RateLimiter(requests_per_minute=1200))  # 20/s, bursts of 20
        with ThreadPoolExecutor(8) as workers:
            list(workers.map(lambda i: pool.chat(messages, None, {"seed": i}), range(50)))
    times = sorted(teacher.times)
    # after the first second's burst, 30 more requests at 20/s take at least 1.5 s, whatever the machine
    assert len(times) == 50 and times[-1] - times[0] >= 1.4
    assert pool.limiter.waited_s > 0
