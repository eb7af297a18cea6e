"""One fault policy for OpenAI-compatible endpoints: the distill teacher and the LLM logic judge.

    endpoint = Endpoint(base_url, model, api_key_env="TEACHER_API_KEY", timeout_s=120,
                        policy=RetryPolicy(max_retries=5, backoff_base_s=1, backoff_max_s=60), what="teacher")
    result = endpoint.chat(messages, rng=random.Random("seed:pair"), temperature=0.7, max_tokens=1024)
    result.response        # the ChatCompletion, or None when the request failed
    result.error           # why it failed ("HTTP 503", "APITimeoutError", ...), "" when it did not
    endpoint.stats.as_dict()   # requests, retries, failures over the whole run (thread-safe)

Every error is classified once (`classify`):
- stop: 401, 403, 404 (a wrong key, no permission, a wrong model or URL) fail every request
  alike, so the first one raises `EndpointRefused` (an EgtError: one line, exit 1) and later
  calls raise it again at once; the run stops instead of scoring or dropping everything.
- retry: timeouts, connection errors, 429 and 5xx, with exponential backoff and full jitter
  (`backoff_delay_s`); a server's Retry-After is a floor, capped at backoff_max_s.
- fail: other 4xx (the request itself is bad): no retry.
A request that still fails after `max_retries` retries, or fails outright, is counted in
`stats.failures`; the caller decides its fallback (distill: the attempt is an error; the logic
judge: the completion's logic scores 0) and reports the count.

The key is read from the environment variable named `api_key_env`, never logged or written; a
named variable that is not set is a ConfigError naming it (never a silent placeholder key).
`api_key_env=None` means the server needs no key (a local vLLM without --api-key).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from egt.core.errors import ConfigError, EgtError

STOP_STATUSES = (401, 403, 404)
NO_KEY = "EMPTY"  # what an OpenAI client sends to a server that needs no key (api_key_env=None only)


class EndpointRefused(EgtError):
    """The endpoint refused the request in a way every request would be refused (auth, model, URL)."""


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries, "failures": self.failures}


@dataclass
class CallResult:
    response: Any = None
    error: str = ""
    retries: int = 0


def backoff_delay_s(retry_index: int, base_s: float, max_s: float, rng: random.Random,
                    retry_after_s: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor (capped at max_s)."""
    delay = rng.uniform(0, min(max_s, base_s * (2 ** retry_index)))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay


def retry_after_s(response) -> float | None:
    """The Retry-After header in seconds (the delta-seconds form), or None."""
    try:
        return max(0.0, float(response.headers.get("retry-after")))
    except (TypeError, ValueError, AttributeError):
        return None


def classify(exc: BaseException) -> tuple[str, str, float | None]:
    """(action, error text, Retry-After seconds): action is "stop", "retry" or "fail"."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return "retry", type(exc).__name__, None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in STOP_STATUSES:
            return "stop", f"HTTP {status}", None
        if status == 429 or status >= 500:
            return "retry", f"HTTP {status}", retry_after_s(exc.response)
        return "fail", f"HTTP {status}", None
    return "fail", f"bad reply ({type(exc).__name__})", None


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
    """An OpenAI-compatible chat-completions endpoint with the module's fault policy."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None, timeout_s: float,
                 policy: RetryPolicy = RetryPolicy(), what: str = "endpoint"):
        import openai

        self.base_url, self.model, self.policy, self.what = base_url, model, policy, what
        self.api_key_env = api_key_env
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key(api_key_env, what), max_retries=0,
                                    timeout=timeout_s)
        self.stats = EndpointStats()
        self.refused: EndpointRefused | None = None

    def _refusal(self, status_text: str) -> EndpointRefused:
        key = f" and {self.api_key_env}" if self.api_key_env else ""
        return EndpointRefused(f"{self.what} {self.base_url} refused the request ({status_text}): check the "
                               f"model name '{self.model}', base_url{key}")

    def chat(self, messages: list[dict], rng: random.Random | None = None, **params) -> CallResult:
        """One chat completion with retries; EndpointRefused when the endpoint refuses (see classify)."""
        rng = rng or random.Random()
        error, retries = "", 0
        for retry_index in range(self.policy.max_retries + 1):
            if self.refused is not None:
                raise self.refused
            self.stats.add(requests=1)
            try:
                response = self.client.chat.completions.create(model=self.model, messages=messages, **params)
                return CallResult(response=response, retries=retries)
            except Exception as exc:  # classified below; anything unknown is a failed request, not a crash
                action, error, after_s = classify(exc)
            if action == "stop":
                self.refused = self._refusal(error)
                raise self.refused from None
            if action == "fail":
                break
            if retry_index < self.policy.max_retries:
                retries += 1
                self.stats.add(retries=1)
                time.sleep(backoff_delay_s(retry_index, self.policy.backoff_base_s, self.policy.backoff_max_s,
                                           rng, after_s))
        self.stats.add(failures=1)
        return CallResult(error=error, retries=retries)
