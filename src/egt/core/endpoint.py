"""One fault policy for OpenAI-compatible endpoints: the distill teacher and the LLM logic judge.

    endpoint = Endpoint(base_url, model, api_key_env="TEACHER_API_KEY", timeout_s=120,
                        policy=RetryPolicy(max_retries=5, backoff_base_s=1, backoff_max_s=60), what="teacher")
    result = endpoint.chat(messages, rng=random.Random("seed:pair"), temperature=0.7, max_tokens=1024)
    result.reply           # the Reply (content, reasoning, finish_reason, usage), or None when it failed
    result.error_class     # "" or the class of the last fault (below); result.error: its text
    endpoint.stats.as_dict()   # requests, retries, failures, faults by class over the run (thread-safe)

Several endpoints behind one retry loop (the teacher's `teachers:` list):

    pool = EndpointPool([Endpoint(url_a, ...), Endpoint(url_b, ..., weight=2)], policy, limiter=RateLimiter(...))
    result = pool.chat(messages, rng, params, tokens_estimate=3000)

Every fault is classified once (`fault_of`), into a class with one action:
- retried with exponential backoff and full jitter (`backoff_delay_s`; a server's Retry-After or
  retry-after-ms is a floor, capped at backoff_max_s, and pauses that endpoint for every thread):
  `timeout` (no reply within timeout_s -- the whole reply, body included: a server that trickles
  bytes is cut off too), `connection` (refused, reset, dropped), `rate_limited` (429), `server_error`
  (408, 409, 5xx), `bad_reply` (a 200 whose body is not a chat completion: malformed JSON, no
  choices, an error object), `truncated` (the body or stream ended before the reply did).
- per request, not retried: `refused` (the content policy declined: a 400 with a content-filter code
  or message, `finish_reason: content_filter`, or a `refusal` field; `CallResult.reply` holds it) and
  `rejected` (another 4xx about this request, e.g. a prompt over the context length).
- stop the run (`EndpointRefused`, an EgtError: one line, exit 1; later calls raise it again at
  once): 401/403/404 (a wrong key, no permission, a wrong model or URL fail every request alike), a
  429 saying the quota or credit is used up, and a 400/422 naming a request parameter the caller
  controls (`ParameterRejected`: e.g. OpenAI's `{"error": {"param": "temperature"}}`, or the name in
  the message) -- with the caller's hint of the setting that removes it, instead of a run of drops.
A request that still fails after `max_retries` retries is counted in `stats.failures`; the caller
decides its fallback (distill: the pair is left unfinished and retried on a rerun; the logic judge:
the completion's logic scores 0) and reports the count.

With several endpoints, each request goes to the least loaded one for its weight; a retry goes to
another endpoint when there is one; an endpoint that fails `set_aside_after` times in a row is set
aside for `set_aside_s` (doubling while it keeps failing, at most 10x), unless every endpoint is.

The key is read from the environment variable named `api_key_env`, never logged or written; a
named variable that is not set is a ConfigError naming it (never a silent placeholder key).
`api_key_env=None` means the server needs no key (a local vLLM without --api-key).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from egt.core.errors import ConfigError, EgtError
from egt.core.ratelimit import RateLimiter

log = logging.getLogger(__name__)

STOP_STATUSES = (401, 403, 404)
NO_KEY = "EMPTY"  # what an OpenAI client sends to a server that needs no key (api_key_env=None only)
TRANSIENT = ("timeout", "connection", "rate_limited", "server_error", "bad_reply", "truncated")
PER_REQUEST = ("refused", "rejected")
FAULT_CLASSES = TRANSIENT + PER_REQUEST
# Request fields that are never "a parameter to stop sending": a 400 naming them is about this request.
_CONTENT_FIELDS = {"messages", "model", "content", "image_url", "url", "role", "text", "type"}
_CONTENT_FILTER = re.compile(r"content[ _-]?(filter|policy|management)|safety system|responsible ai|flagged",
                             re.IGNORECASE)
_QUOTA = re.compile(r"insufficient_quota|quota|billing|credit", re.IGNORECASE)


class EndpointRefused(EgtError):
    """The endpoint refused the request in a way every request would be refused (auth, model, URL, quota)."""


class ParameterRejected(EndpointRefused):
    """The endpoint rejects a request parameter; `param` names it."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class Stopped(Exception):
    """The pool was told to stop (the run is winding down): no further request is sent."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass
class EndpointStats:
    """Counters over a run; safe to update from several threads."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    faults: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, fault: str | None = None, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
            if fault:
                self.faults[fault] += 1

    def as_dict(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries, "failures": self.failures,
                    "faults": dict(sorted(self.faults.items()))}


@dataclass
class Reply:
    """One chat completion, read from a JSON body or assembled from a stream."""

    content: str = ""
    reasoning: str = ""
    refusal: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""


@dataclass
class Fault(Exception):
    """One failed request: its class (FAULT_CLASSES, or a stop class), text and Retry-After."""

    kind: str
    text: str
    retry_after_s: float | None = None
    param: str | None = None
    reply: Reply | None = None   # a refusal's reply (its usage may be billed)

    def __str__(self) -> str:
        return self.text


@dataclass
class CallResult:
    reply: Reply | None = None
    error: str = ""
    error_class: str = ""
    retries: int = 0
    faults: Counter = field(default_factory=Counter)
    endpoint: str = ""

    @property
    def prompt_tokens(self) -> int:
        return self.reply.prompt_tokens if self.reply else 0

    @property
    def completion_tokens(self) -> int:
        return self.reply.completion_tokens if self.reply else 0


def backoff_delay_s(retry_index: int, base_s: float, max_s: float, rng: random.Random,
                    retry_after_s: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor (capped at max_s)."""
    delay = rng.uniform(0, min(max_s, base_s * (2 ** retry_index)))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay


def retry_after_s(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), or None."""
    if headers is None:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return max(0.0, float(value) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, AttributeError, IndexError, OverflowError):
        return None


def _one_line(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_object(body: Any) -> dict:
    """The `error` object of an error body ({"error": {...}}, or the object itself)."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            return inner
        if isinstance(inner, str):
            return {"message": inner}
        return body
    return {"message": str(body)} if body else {}


def named_param(error: dict, sent: tuple[str, ...]) -> str | None:
    """The request parameter a 400 names: its `param` field, else the first sent name in its message."""
    param = error.get("param")
    if isinstance(param, str) and param:
        base = re.split(r"[.\[]", param, maxsplit=1)[0]
        return base if base not in _CONTENT_FIELDS else None
    message = str(error.get("message") or "")
    found = [(m.start(), name) for name in sent if name not in _CONTENT_FIELDS
             for m in [re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message)] if m]
    return min(found)[1] if found else None


def classify_status(status: int, body: Any, headers=None, sent: tuple[str, ...] = ()) -> Fault:
    """The Fault of an HTTP error reply (or of a 200 whose body is an error object, `status` its code)."""
    error = _error_object(body)
    message = _one_line(error.get("message") or "")
    code = " ".join(str(error.get(k) or "") for k in ("code", "type"))
    text = f"HTTP {status}" + (f": {message}" if message else "")
    if status in STOP_STATUSES:
        return Fault("auth" if status in (401, 403) else "not_found", text)
    if status == 429 and _QUOTA.search(code):
        return Fault("quota", text)
    if status == 429:
        return Fault("rate_limited", text, retry_after_s(headers))
    if status in (408, 409) or status >= 500:
        return Fault("server_error", text, retry_after_s(headers))
    if _CONTENT_FILTER.search(code) or _CONTENT_FILTER.search(message):
        return Fault("refused", text)
    if status in (400, 422):
        param = named_param(error, sent)
        if param is not None:
            return Fault("param", text, param=param)
    return Fault("rejected", text)


def fault_of(exc: BaseException, sent: tuple[str, ...] = ()) -> Fault:
    """Classify any exception a request raised; an exception that is not about the request is re-raised."""
    import openai

    if isinstance(exc, Fault):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)) or names & {"TimeoutException", "ReadTimeout"}:
        return Fault("timeout", "timeout")
    if isinstance(exc, openai.APIStatusError):
        return classify_status(exc.status_code, exc.body, exc.response.headers, sent)
    if isinstance(exc, (openai.APIConnectionError, OSError)) or names & {"TransportError", "NetworkError"}:
        return Fault("connection", f"connection error ({type(exc).__name__})")
    if isinstance(exc, (openai.OpenAIError, ValueError)):
        return Fault("bad_reply", f"bad reply ({type(exc).__name__})")
    raise exc


# ---------------------------------------------------------------- reading a reply

def _text(value: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _usage(reply: Reply, usage: Any) -> None:
    if isinstance(usage, dict):
        reply.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        reply.completion_tokens = int(usage.get("completion_tokens") or 0)


def _refused(reply: Reply) -> Reply:
    if reply.finish_reason == "content_filter" or reply.refusal.strip():
        why = _one_line(reply.refusal) or "finish_reason content_filter"
        raise Fault("refused", f"refused: {why}", reply=reply)
    return reply


def parse_completion(data: bytes, sent: tuple[str, ...] = ()) -> Reply:
    """The Reply of a chat.completion JSON body; Fault(bad_reply) when it is not one."""
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Fault("bad_reply", f"bad reply (not JSON: {_one_line(data[:60], 80)!r})") from None
    if isinstance(body, dict) and "error" in body and not body.get("choices"):
        code = _error_object(body).get("code")
        raise classify_status(code if isinstance(code, int) else 500, body, None, sent)
    try:
        choice = body["choices"][0]
        message = choice["message"]
        reply = Reply(content=_text(message.get("content")), refusal=str(message.get("refusal") or ""),
                      finish_reason=choice.get("finish_reason"), model=str(body.get("model") or ""))
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        reply.reasoning = reasoning if isinstance(reasoning, str) else ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise Fault("bad_reply", "bad reply (no choices[0].message)") from None
    _usage(reply, body.get("usage"))
    return _refused(reply)


def parse_stream(data: bytes, sent: tuple[str, ...] = ()) -> Reply:
    """The Reply assembled from a server-sent-events stream of chat.completion.chunk objects."""
    reply, parts, reasoning, refusal, done = Reply(), [], [], [], False
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise Fault("bad_reply", "bad reply (a stream event that is not JSON)") from None
        if not isinstance(chunk, dict):
            raise Fault("bad_reply", "bad reply (a stream event that is not an object)")
        if "error" in chunk:
            code = _error_object(chunk).get("code")
            raise classify_status(code if isinstance(code, int) else 500, chunk, None, sent)
        reply.model = str(chunk.get("model") or reply.model)
        _usage(reply, chunk.get("usage"))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            parts.append(_text(delta.get("content")))
            extra = delta.get("reasoning_content") or delta.get("reasoning")
            reasoning.append(extra if isinstance(extra, str) else "")
            refusal.append(str(delta.get("refusal") or ""))
            reply.finish_reason = choice.get("finish_reason") or reply.finish_reason
    if not done and reply.finish_reason is None:
        raise Fault("truncated", "truncated stream (it ended before the reply did)")
    reply.content, reply.reasoning, reply.refusal = "".join(parts), "".join(reasoning), "".join(refusal)
    return _refused(reply)


# ---------------------------------------------------------------- one endpoint

def api_key(api_key_env: str | None, what: str) -> str:
    """The key from the environment variable named `api_key_env` (ConfigError naming it if unset)."""
    if api_key_env is None:
        return NO_KEY
    value = os.environ.get(api_key_env)
    if not value:
        raise ConfigError(f"{what}: environment variable {api_key_env} (api_key_env) is not set; set it to the "
                          f"endpoint's key (any non-empty value for a local server without auth), or give "
                          f"api_key_env: null for a server that needs none")
    return value


class Endpoint:
    """One OpenAI-compatible chat-completions server; `chat` applies the module's fault policy to it alone."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None, timeout_s: float,
                 policy: RetryPolicy = RetryPolicy(), what: str = "endpoint", weight: float = 1.0,
                 limiter: RateLimiter | None = None, name: str | None = None, param_hints: dict | None = None):
        import openai

        self.base_url, self.model, self.policy, self.what = base_url, model, policy, what
        self.api_key_env, self.timeout_s, self.weight = api_key_env, timeout_s, weight
        self.limiter, self.name, self.param_hints = limiter, name or base_url, param_hints
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key(api_key_env, what), max_retries=0,
                                    timeout=timeout_s)
        self.stats = EndpointStats()
        # health, read and written by EndpointPool under its lock
        self.in_flight = self.served = self.failures_in_a_row = self.set_aside_count = 0
        self.paused_until = self.set_aside_until = 0.0
        self._pool: EndpointPool | None = None

    @property
    def refused(self) -> EndpointRefused | None:
        return self._pool.refused if self._pool else None

    def send(self, messages: list[dict], params: dict, stream: bool = False) -> Reply:
        """One request, no retry: the Reply, or a Fault (see `fault_of`)."""
        body = dict(params)
        if stream:
            body["stream"] = True
            body.setdefault("stream_options", {"include_usage": True})
        sent = tuple(body)
        self.stats.add(requests=1)
        deadline = time.monotonic() + self.timeout_s
        # Every parameter goes in the body as given (extra_body): the request is exactly what the user
        # configured, and the raw reply is read here, with a deadline on the whole body.
        try:
            with self.client.chat.completions.with_streaming_response.create(
                    model=self.model, messages=messages, extra_body=body) as response:
                chunks = []
                try:
                    for chunk in response.iter_bytes():
                        chunks.append(chunk)
                        if time.monotonic() > deadline:
                            raise Fault("timeout", f"timeout (the reply took over {self.timeout_s:g} s)")
                except Fault:
                    raise
                except Exception as exc:
                    fault = fault_of(exc, sent)
                    if fault.kind == "connection":
                        fault = Fault("truncated", f"truncated reply ({type(exc).__name__})")
                    raise fault from None
            data = b"".join(chunks)
            return parse_stream(data, sent) if stream else parse_completion(data, sent)
        except Fault:
            raise
        except Exception as exc:
            raise fault_of(exc, sent) from None

    def chat(self, messages: list[dict], rng: random.Random | None = None, **params) -> CallResult:
        """One chat completion with retries on this endpoint alone; EndpointRefused when it refuses."""
        if self._pool is None:
            self._pool = EndpointPool([self], self.policy, what=self.what, stats=self.stats,
                                      param_hints=self.param_hints)
        return self._pool.chat(messages, rng, params)


# ---------------------------------------------------------------- several endpoints, one retry loop

class EndpointPool:
    """Endpoints behind one retry loop: load spreading by weight, failover, set-aside, rate limits."""

    def __init__(self, endpoints: list[Endpoint], policy: RetryPolicy, what: str = "endpoint",
                 limiter: RateLimiter | None = None, set_aside_after: int = 5, set_aside_s: float = 60.0,
                 param_hints: dict[str, str] | None = None, stats: EndpointStats | None = None,
                 clock=time.monotonic):
        if not endpoints:
            raise ConfigError(f"{what}: no endpoint given")
        self.endpoints, self.policy, self.what, self.limiter = list(endpoints), policy, what, limiter
        self.set_aside_after, self.set_aside_s = set_aside_after, set_aside_s
        self.param_hints = param_hints or {}
        self.stats = stats or EndpointStats()
        self.clock = clock
        self.refused: EndpointRefused | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Send no further request (requests in flight finish); chat raises Stopped."""
        self.stopping.set()

    # -- choosing an endpoint
    def _choose(self, exclude: Endpoint | None) -> Endpoint:
        while True:
            with self._lock:
                now = self.clock()
                pool = [e for e in self.endpoints if e is not exclude] or self.endpoints
                active = [e for e in pool if e.set_aside_until <= now] or pool
                ready = [e for e in active if e.paused_until <= now]
                if ready:
                    best = min(ready, key=lambda e: (e.in_flight / e.weight, (e.served + 1) / e.weight))
                    best.in_flight += 1
                    best.served += 1
                    return best
                wait = min(e.paused_until for e in active) - now
            if self.stopping.wait(max(wait, 0.0)):
                raise Stopped()

    def _done(self, endpoint: Endpoint, fault: Fault | None) -> None:
        with self._lock:
            endpoint.in_flight -= 1
            if fault is None or fault.kind in PER_REQUEST:
                endpoint.failures_in_a_row = 0
                return
            now = self.clock()
            if fault.retry_after_s:  # the server asked for a pause: every thread honours it
                pause = min(fault.retry_after_s, self.policy.backoff_max_s)
                endpoint.paused_until = max(endpoint.paused_until, now + pause)
            endpoint.failures_in_a_row += 1
            if len(self.endpoints) > 1 and endpoint.failures_in_a_row >= self.set_aside_after \
                    and endpoint.set_aside_until <= now:
                period = self.set_aside_s * min(2 ** endpoint.set_aside_count, 10)
                endpoint.set_aside_until = now + period
                endpoint.set_aside_count += 1
                log.warning("%s %s set aside for %.0f s after %d failures in a row (last: %s)", self.what,
                            endpoint.name, period, endpoint.failures_in_a_row, fault.text)

    def _stop_error(self, endpoint: Endpoint, fault: Fault) -> EndpointRefused:
        where = f"{self.what} {endpoint.base_url}"
        if fault.kind == "param":
            hint = self.param_hints.get(fault.param, f"stop sending '{fault.param}'")
            return ParameterRejected(f"{where} rejects the parameter '{fault.param}' ({fault.text}); {hint}, "
                                     f"then rerun the same command to resume", fault.param)
        if fault.kind == "quota":
            return EndpointRefused(f"{where}: the quota or credit is used up ({fault.text}); add credit or use "
                                   f"another key, then rerun the same command to resume")
        key = f" and {endpoint.api_key_env}" if endpoint.api_key_env else ""
        status = fault.text.split(":", 1)[0]
        return EndpointRefused(f"{where} refused the request ({status}): check the model name "
                               f"'{endpoint.model}', base_url{key}")

    def _check(self) -> None:
        if self.refused is not None:
            raise self.refused
        if self.stopping.is_set():
            raise Stopped()

    def chat(self, messages: list[dict], rng: random.Random | None, params: dict, tokens_estimate: float = 0.0,
             stream: bool = False) -> CallResult:
        """One chat completion with the fault policy; raises EndpointRefused (stop) or Stopped."""
        rng = rng or random.Random()
        result = CallResult()
        exclude = None
        for retry_index in range(self.policy.max_retries + 1):
            self._check()
            grant = self.limiter.acquire(tokens_estimate, self.stopping) if self.limiter else None
            self._check()
            endpoint = self._choose(exclude)
            own = endpoint.limiter.acquire(tokens_estimate, self.stopping) if endpoint.limiter else None
            fault = None
            try:
                reply = endpoint.send(messages, params, stream)
            except Fault as exc:
                fault = exc
            finally:
                used = 0 if fault is None else (fault.reply.prompt_tokens + fault.reply.completion_tokens
                                                if fault.reply else 0)
                if fault is None:
                    used = reply.prompt_tokens + reply.completion_tokens or tokens_estimate
                for limiter, g in ((self.limiter, grant), (endpoint.limiter, own)):
                    if limiter is not None and g is not None:
                        limiter.settle(g, used)
                self._done(endpoint, fault)
            result.endpoint = endpoint.name
            if endpoint.stats is not self.stats:
                self.stats.add(requests=1)
            if fault is None:
                result.reply, result.error, result.error_class = reply, "", ""
                return result
            self.stats.add(fault=fault.kind)
            if endpoint.stats is not self.stats:
                endpoint.stats.add(fault=fault.kind)
            result.faults[fault.kind] += 1
            result.error, result.error_class = fault.text, fault.kind
            if fault.kind not in FAULT_CLASSES:  # a stop class
                with self._lock:
                    if self.refused is None:
                        self.refused = self._stop_error(endpoint, fault)
                raise self.refused
            if fault.kind in PER_REQUEST:
                result.reply = fault.reply
                break
            if retry_index < self.policy.max_retries:
                result.retries += 1
                self.stats.add(retries=1)
                exclude = endpoint
                delay = backoff_delay_s(retry_index, self.policy.backoff_base_s, self.policy.backoff_max_s,
                                        rng, fault.retry_after_s)
                if self.stopping.wait(delay):
                    raise Stopped()
        self.stats.add(failures=1)
        return result
