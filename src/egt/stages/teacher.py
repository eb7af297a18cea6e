"""The teacher of `egt distill` behind OpenAI-compatible endpoints: requests, images, cost and budget.

Used by egt.stages.distill (backend=openai); the fault policy is egt.core.endpoint's, shared with the
LLM logic judge, and the rate limits egt.core.ratelimit's.

    teacher = OpenAITeacher(cfg, budget)           # cfg: egt.stages.distill.Config
    result = teacher.distill(pair, previous_record)   # a PairResult; previous: the journal's record or None

What a request holds is configurable, for APIs that refuse some sampling parameters: `token_param`
(`max_tokens`, `max_completion_tokens`, or null: no completion budget sent), `temperature` and `top_p`
(null: not sent), `send_seed` (the attempt's seed, so vLLM samples the same trace again on a rerun),
`extra_body` (added as given, e.g. `reasoning_effort: low`), `stream`. A 400 naming one of them stops
the run with the setting that removes it (`PARAM_HINTS`).

Attempts: attempt i of pair p is sent with seed `request_seed(seed, p, i)`; a pair left unfinished
(a teacher error, a refusal, the budget) keeps its answered attempts in the journal and a rerun goes
on from the next attempt index, so the traces a rerun keeps are those an uninterrupted run keeps.

Images above `teacher_max_image_side` / `teacher_max_image_pixels` are downscaled (aspect kept,
Lanczos) before base64 encoding; each pair's journal record lists what was resized.
(`_downscale` is the only image code here: it moves to egt.core.images when that module lands.)

Cost: `estimate` prints pairs x expected attempts x expected tokens x prices before the first
request (`dry_run` stops there); `Budget` refuses to send a request whose worst case (prompt
estimate + the completion budget) would pass `max_cost_usd` or `max_tokens_total`, with the spend
of earlier runs read from the journal.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import random
import sys
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

from egt.core.endpoint import Endpoint, EndpointPool, RetryPolicy, Stopped
from egt.core.errors import ConfigError, EgtError, RunIncomplete
from egt.core.ratelimit import RateLimiter
from egt.core.records import PreferencePair
from egt.stages.distill import (ANSWERED, TEACHER_ERRORS, Attempt, Config, PairResult, Progress, judge_reply,
                                teacher_prompt)

PROMPT_OVERHEAD_TOKENS = 12   # chat template tokens around a user message (role markers, image tags)
MIN_JOURNAL_PAIRS = 20        # finished pairs before the journal's averages replace the guesses
GUESS_ATTEMPTS = 1.5          # expected attempts per pair before the journal knows better


def param_hints(cfg: Config) -> dict[str, str]:
    """The setting that stops sending each request parameter (for ParameterRejected's message)."""
    hints = {"temperature": "set temperature: null to stop sending it",
             "top_p": "set top_p: null to stop sending it",
             "seed": "set send_seed: false to stop sending it",
             "stream": "set stream: false", "stream_options": "set stream: false",
             "max_tokens": "set token_param: max_completion_tokens (or null) to send the budget under "
                           "that name",
             "max_completion_tokens": "set token_param: max_tokens (or null)"}
    hints.update({key: f"remove extra_body.{key}" for key in cfg.extra_body})
    return hints


def request_seed(run_seed: int, pair_id: str, attempt_index: int) -> int:
    """Seed of attempt `attempt_index` of a pair: stable across runs, machines and Python versions."""
    key = f"egt-teacher\x1f{int(run_seed)}\x1f{pair_id}\x1f{int(attempt_index)}".encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") >> 1   # 31 bits: every API takes it


def request_params(cfg: Config, seed: int | None) -> dict:
    """The sampling fields of one request, as configured (a field set to null is not sent)."""
    params = {}
    if cfg.token_param is not None:
        params[cfg.token_param] = cfg.max_tokens
    if cfg.temperature is not None:
        params["temperature"] = cfg.temperature
    if cfg.top_p is not None:
        params["top_p"] = cfg.top_p
    if cfg.send_seed and seed is not None:
        params["seed"] = seed
    params.update(cfg.extra_body)
    return params


# ------------------------------------------------------------------ images

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def fit_size(width: int, height: int, max_side: int | None, max_pixels: int | None) -> tuple[int, int]:
    """The largest (w, h) of the same aspect within both limits (the size itself when it fits)."""
    scale = 1.0
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
    if max_pixels and width * height * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    if scale >= 1.0:
        return width, height
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _downscale(data: bytes, max_side: int | None, max_pixels: int | None):
    """(encoded bytes, PIL format, original size, new size or None): resized only when over a limit."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        fmt, size = image.format, image.size
    except Exception:
        return data, None, None, None
    target = fit_size(*size, max_side, max_pixels)
    if target == size:
        return data, fmt, size, None
    if fmt == "JPEG":
        image.draft("RGB", target)  # decode at a reduced scale: a 48 MP photo never decodes at full size
    image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB").resize(target, Image.LANCZOS)
    buffer = io.BytesIO()
    out_fmt = "JPEG" if fmt == "JPEG" and image.mode == "RGB" else "PNG"
    image.save(buffer, format=out_fmt, **({"quality": 92} if out_fmt == "JPEG" else {}))
    return buffer.getvalue(), out_fmt, size, target


def encode_image(ref, max_side: int | None = None, max_pixels: int | None = None):
    """(base64 data URL, (width, height) sent, resize record [w, h, new_w, new_h] or None).

    The original bytes when the format is web-safe and the image within the limits, else PNG (or JPEG
    for a downscaled JPEG)."""
    data = ref.read_bytes()  # checks the image root (egt.core.records.resolve_image_path)
    data, fmt, size, resized = _downscale(data, max_side, max_pixels)
    if fmt not in _MIME:
        buffer = io.BytesIO()
        image = ref.open()
        size = image.size
        image.save(buffer, format="PNG")
        data, fmt = buffer.getvalue(), "PNG"
    url = f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
    sent = resized or size
    return url, sent, (list(size) + list(resized) if resized else None)


def image_size(ref, max_side: int | None, max_pixels: int | None) -> tuple[int, int]:
    """The size an image is sent at (header only; no decode)."""
    from PIL import Image

    try:
        size = Image.open(io.BytesIO(ref.read_bytes())).size
    except Exception:
        return (0, 0)
    return fit_size(*size, max_side, max_pixels)


def estimate_prompt_tokens(text: str, image_sizes, pixels_per_image_token: int) -> int:
    """Prompt tokens of a request before the server counts them: ~4 characters a token, one token per
    `pixels_per_image_token` pixels of each image (784 = one 28x28 patch, Qwen2.5-VL)."""
    images = sum(max(1, math.ceil(w * h / pixels_per_image_token)) for w, h in image_sizes)
    return PROMPT_OVERHEAD_TOKENS + math.ceil(len(text) / 4) + images


# ------------------------------------------------------------------ cost and budget

def cost_usd(prompt_tokens: float, completion_tokens: float, cfg: Config) -> float:
    return (prompt_tokens * cfg.price_input_per_1k_usd + completion_tokens * cfg.price_output_per_1k_usd) / 1000


@dataclass
class Spend:
    """Tokens used by finished work, read from the journal; the ratio corrects prompt estimates."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_prompt_tokens: int = 0  # estimates of the requests counted in prompt_tokens_measured
    prompt_tokens_measured: int = 0
    answered_attempts: int = 0
    finished_pairs: int = 0
    finished_attempts: int = 0

    @classmethod
    def of(cls, records) -> "Spend":
        spend = cls()
        for rec in records:
            spend.prompt_tokens += rec.get("prompt_tokens", 0)
            spend.completion_tokens += rec.get("completion_tokens", 0)
            answered = sum(o in ANSWERED for o in rec.get("outcomes", []))
            spend.answered_attempts += answered
            if rec.get("prompt_tokens_estimate") and rec.get("prompt_tokens") and answered:
                spend.estimated_prompt_tokens += rec["prompt_tokens_estimate"] * answered
                spend.prompt_tokens_measured += rec["prompt_tokens"]
            if rec.get("status") in ("kept", "dropped"):
                spend.finished_pairs += 1
                spend.finished_attempts += answered
        return spend

    @property
    def prompt_ratio(self) -> float:
        """Measured / estimated prompt tokens (1.0 until the journal has measurements)."""
        if self.estimated_prompt_tokens < 1 or self.answered_attempts < MIN_JOURNAL_PAIRS:
            return 1.0
        return self.prompt_tokens_measured / self.estimated_prompt_tokens


class Budget:
    """`max_cost_usd` / `max_tokens_total` over every run of a folder; thread-safe.

    `reserve` admits a request only if its worst case (prompt estimate + the whole completion budget)
    fits beside what was spent and what requests in flight may still spend; `settle` replaces the
    reservation with the usage the server reported. Once a request is refused, `reached` stays set,
    so the run winds down instead of squeezing in cheaper requests."""

    def __init__(self, cfg: Config, spend: Spend):
        self.cfg = cfg
        self.prompt_tokens, self.completion_tokens = spend.prompt_tokens, spend.completion_tokens
        self.estimated, self.measured = spend.estimated_prompt_tokens, spend.prompt_tokens_measured
        self.reserved_usd = 0.0
        self.reserved_tokens = 0
        self.reached = False
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        return cost_usd(self.prompt_tokens, self.completion_tokens, self.cfg)

    @property
    def spent_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def prompt_ratio(self) -> float:
        return self.measured / self.estimated if self.estimated >= 1 and self.measured else 1.0

    def reserve(self, prompt_estimate: int) -> tuple[float, int] | None:
        cfg = self.cfg
        with self._lock:
            prompt = math.ceil(prompt_estimate * max(1.0, self.prompt_ratio()))
            worst_usd = cost_usd(prompt, cfg.max_tokens, cfg)
            worst_tokens = prompt + cfg.max_tokens
            over_cost = cfg.max_cost_usd is not None and \
                self.spent_usd + self.reserved_usd + worst_usd > cfg.max_cost_usd
            over_tokens = cfg.max_tokens_total is not None and \
                self.spent_tokens + self.reserved_tokens + worst_tokens > cfg.max_tokens_total
            if self.reached or over_cost or over_tokens:
                self.reached = True
                return None
            self.reserved_usd += worst_usd
            self.reserved_tokens += worst_tokens
            return worst_usd, worst_tokens

    def settle(self, reservation: tuple[float, int], prompt_estimate: int, prompt_tokens: int,
               completion_tokens: int) -> None:
        with self._lock:
            self.reserved_usd -= reservation[0]
            self.reserved_tokens -= reservation[1]
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            if prompt_tokens:
                self.estimated += prompt_estimate
                self.measured += prompt_tokens


@dataclass
class CostEstimate:
    pairs: int
    attempts_per_pair: float
    attempts_from: str
    prompt_tokens: float
    prompt_from: str
    completion_tokens: float
    completion_from: str
    spent_usd: float
    spent_tokens: int

    def tokens(self, attempts: float, completion: float) -> tuple[float, float]:
        requests = self.pairs * attempts
        return requests * self.prompt_tokens, requests * completion


def estimate_cost(cfg: Config, pairs: list[PreferencePair], spend: Spend) -> CostEstimate:
    """Pairs x expected attempts x expected tokens, from the journal where it knows, else from settings."""
    if cfg.expected_attempts is not None:
        attempts, attempts_from = cfg.expected_attempts, "expected_attempts"
    elif spend.finished_pairs >= MIN_JOURNAL_PAIRS:
        attempts = spend.finished_attempts / spend.finished_pairs
        attempts_from = f"journal: {spend.finished_pairs} finished pairs"
    else:
        attempts, attempts_from = min(GUESS_ATTEMPTS, cfg.max_attempts), "a guess; set expected_attempts"
    if cfg.expected_completion_tokens is not None:
        completion, completion_from = cfg.expected_completion_tokens, "expected_completion_tokens"
    elif spend.answered_attempts >= MIN_JOURNAL_PAIRS:
        completion = spend.completion_tokens / spend.answered_attempts
        completion_from = f"journal: {spend.answered_attempts} replies"
    else:
        completion, completion_from = cfg.max_tokens, "max_tokens (an upper bound; set expected_completion_tokens)"
    sample = pairs[:: max(1, len(pairs) // 200)][:200]
    prompt = 0.0
    if sample:
        prompt = sum(estimate_prompt_tokens(teacher_prompt(p, cfg.reveal_label) + (cfg.system_prompt or ""),
                                            [image_size(ref, cfg.teacher_max_image_side,
                                                        cfg.teacher_max_image_pixels) for ref in p.images],
                                            cfg.pixels_per_image_token) for p in sample) / len(sample)
    ratio = spend.prompt_ratio
    prompt_from = (f"{len(sample)} pairs: text/4 + pixels/{cfg.pixels_per_image_token}"
                   + (f", x{ratio:.2f} measured in the journal" if ratio != 1.0 else ""))
    return CostEstimate(len(pairs), attempts, attempts_from, prompt * ratio, prompt_from, completion,
                        completion_from, cost_usd(spend.prompt_tokens, spend.completion_tokens, cfg),
                        spend.prompt_tokens + spend.completion_tokens)


def _tokens_text(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,.0f}"


def format_estimate(est: CostEstimate, cfg: Config) -> str:
    """The printed estimate: expected and worst case, tokens and dollars, and the budget."""
    priced = cfg.price_input_per_1k_usd > 0 or cfg.price_output_per_1k_usd > 0
    rows = [("pairs to send", f"{est.pairs:,}"),
            ("attempts per pair", f"{est.attempts_per_pair:.2f} ({est.attempts_from}); at most {cfg.max_attempts}"),
            ("prompt tokens per request", f"{est.prompt_tokens:,.0f} ({est.prompt_from})"),
            ("completion tokens per request", f"{est.completion_tokens:,.0f} ({est.completion_from})")]
    for label, attempts, completion in (("expected", est.attempts_per_pair, est.completion_tokens),
                                        ("worst case", cfg.max_attempts, cfg.max_tokens)):
        tokens_in, tokens_out = est.tokens(attempts, completion)
        money = f" = ${cost_usd(tokens_in, tokens_out, cfg):,.2f}" if priced else ""
        rows.append((label, f"{_tokens_text(tokens_in)} input + {_tokens_text(tokens_out)} output tokens{money}"))
    if not priced:
        rows.append(("prices", "not set (price_input_per_1k_usd, price_output_per_1k_usd): tokens only"))
    rows.append(("spent so far", f"${est.spent_usd:,.2f} ({_tokens_text(est.spent_tokens)} tokens, from the journal)"))
    caps = [f"max_cost_usd ${cfg.max_cost_usd:,.2f}" if cfg.max_cost_usd is not None else "",
            f"max_tokens_total {cfg.max_tokens_total:,}" if cfg.max_tokens_total is not None else ""]
    rows.append(("budget", ", ".join(c for c in caps if c) or "none (max_cost_usd, max_tokens_total)"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(["egt distill: cost estimate"] + [f"  {label:<{width}}  {value}" for label, value in rows])


# ------------------------------------------------------------------ the teacher

def build_pool(cfg: Config) -> EndpointPool:
    """Every configured endpoint (base_url, a list of them, or `teachers:` entries) behind one pool."""
    what = "backend=openai: teacher endpoint"
    policy = RetryPolicy(cfg.max_retries, cfg.backoff_base_s, cfg.backoff_max_s)
    endpoints = []
    for entry in cfg.teacher_entries():
        key_env = entry.api_key_env if "api_key_env" in entry.model_fields_set else cfg.api_key_env
        limiter = RateLimiter(entry.requests_per_minute, entry.tokens_per_minute) \
            if entry.requests_per_minute or entry.tokens_per_minute else None
        endpoints.append(Endpoint(entry.url, entry.model or cfg.model, key_env, cfg.request_timeout_s, policy,
                                  what=what, weight=entry.weight, limiter=limiter))
    limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute) \
        if cfg.requests_per_minute or cfg.tokens_per_minute else None
    return EndpointPool(endpoints, policy, what=what, limiter=limiter, set_aside_after=cfg.endpoint_set_aside_after,
                        set_aside_s=cfg.endpoint_set_aside_s, param_hints=param_hints(cfg))


class OpenAITeacher:
    """The teacher behind one or several OpenAI-compatible endpoints (egt.core.endpoint's fault policy)."""

    def __init__(self, cfg: Config, budget: Budget | None = None):
        if not cfg.teacher_entries():
            raise ConfigError("backend=openai needs base_url (e.g. http://localhost:8000/v1) or teachers")
        if not cfg.model and not all(e.model for e in cfg.teacher_entries()):
            raise ConfigError("backend=openai needs model (or a model in every teachers entry)")
        self.cfg = cfg
        self.pool = build_pool(cfg)
        self.budget = budget or Budget(cfg, Spend())

    def messages(self, pair: PreferencePair) -> tuple[list[dict], int, list]:
        """(messages, prompt token estimate, resize records) of a pair's request."""
        cfg = self.cfg
        content, sizes, resized = [], [], []
        for index, ref in enumerate(pair.images):
            url, size, resize = encode_image(ref, cfg.teacher_max_image_side, cfg.teacher_max_image_pixels)
            content.append({"type": "image_url", "image_url": {"url": url}})
            sizes.append(size)
            if resize:
                resized.append([index] + resize)
        text = teacher_prompt(pair, cfg.reveal_label)
        content.append({"type": "text", "text": text})
        messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        estimate = estimate_prompt_tokens(text + (cfg.system_prompt or ""), sizes, cfg.pixels_per_image_token)
        return messages + [{"role": "user", "content": content}], estimate, resized

    def distill(self, pair: PreferencePair, previous: dict | None = None) -> PairResult:
        """Attempts from where `previous` (the pair's journal record, if unfinished) left off."""
        cfg = self.cfg
        result = PairResult.resume(pair.id, previous)
        if self.budget.reached:  # before the images are read and encoded
            result.failure, result.error = "budget", "budget reached before this attempt"
            return result
        messages, estimate, resized = self.messages(pair)
        result.info.update(prompt_tokens_estimate=estimate, **({"images_downscaled": resized} if resized else {}))
        rng = random.Random(f"{cfg.seed}:{pair.id}:backoff:{len(result.attempts)}")
        for attempt_index in range(len(result.attempts), cfg.max_attempts):
            reservation = self.budget.reserve(estimate)
            if reservation is None:
                result.failure, result.error = "budget", "budget reached before this attempt"
                break
            params = request_params(cfg, request_seed(cfg.seed, pair.id, attempt_index))
            call = None
            try:
                call = self.pool.chat(messages, rng, params, tokens_estimate=estimate + cfg.max_tokens,
                                      stream=cfg.stream)
            except Stopped:
                result.failure, result.error = "stopped", "the run stopped before this attempt finished"
                break
            finally:
                used_in = call.prompt_tokens if call else 0
                used_out = call.completion_tokens if call else 0
                self.budget.settle(reservation, estimate, used_in, used_out)
            result.retries += call.retries
            result.faults.update(call.faults)
            if call.reply is not None and call.reply.model:
                result.info["teacher_model"] = call.reply.model
            if call.error_class:
                result.failure, result.error = call.error_class, call.error
                if call.error_class == "refused":
                    result.prompt_tokens += used_in
                    result.completion_tokens += used_out
                break
            attempt = self._attempt(call.reply)
            attempt.outcome, trace, format_ok = judge_reply(attempt.reply, pair.label, cfg.canonicalize)
            result.attempts.append(attempt)
            if trace is not None:
                result.trace, result.format_ok = trace, format_ok
                break
        return result

    @staticmethod
    def _attempt(reply) -> Attempt:
        text = reply.content
        if reply.reasoning.strip() and "<think>" not in text:
            text = f"<think>{reply.reasoning.strip()}</think>{text}"
        return Attempt("", reply=text, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                       finish_reason=reply.finish_reason or "")


# ------------------------------------------------------------------ sending a run's pairs

class TeacherFailing(RunIncomplete):
    """`max_consecutive_failures` pairs in a row ended in teacher errors."""


def send_pairs(cfg: Config, todo: list[PreferencePair], done: dict[str, dict],
                 finish: Callable[[list[PairResult]], None], progress: Progress) -> tuple[BaseException | None, dict]:
    """Send `todo` to the teacher endpoints; returns (why the run stopped early or None, run counts).

    A stop (an endpoint refusing every request, a rejected parameter, an unreadable image, too many
    failures in a row, Ctrl-C) sends no new request; the requests in flight finish and are journalled."""
    spend = Spend.of(done.values())
    teacher = OpenAITeacher(cfg, Budget(cfg, spend))
    priced = cfg.price_input_per_1k_usd > 0 or cfg.price_output_per_1k_usd > 0
    progress.cost = (lambda: f"${teacher.budget.spent_usd:,.2f}") if priced else None
    stop: BaseException | None = None
    failures_in_a_row = 0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cfg.concurrency) as executor:
        futures = [executor.submit(teacher.distill, p, done.get(p.id)) for p in todo]

        def halt(reason: BaseException) -> None:
            nonlocal stop
            if stop is None:
                stop = reason
            teacher.pool.stop()
            for f in futures:
                f.cancel()

        remaining = set(futures)
        while remaining:
            try:
                for future in as_completed(remaining):
                    remaining.discard(future)
                    try:
                        result = future.result()
                    except CancelledError:
                        continue
                    except EgtError as exc:  # the endpoint refuses every request, a parameter, an image
                        halt(exc)
                        continue
                    except Exception as exc:  # a bug: stop sending before it propagates
                        halt(exc)
                        raise
                    if result.failure in ("budget", "stopped") and not result.attempts:
                        continue  # never asked: nothing to journal, it is sent by the next run
                    finish([result])
                    if result.failure in TEACHER_ERRORS:
                        failures_in_a_row += 1
                    elif result.failure not in ("budget", "stopped"):
                        failures_in_a_row = 0
                    if cfg.max_consecutive_failures and failures_in_a_row >= cfg.max_consecutive_failures:
                        halt(TeacherFailing(
                            f"the teacher keeps failing: {failures_in_a_row} pairs in a row ended in teacher errors "
                            f"(last: {result.error}); nothing is lost -- fix the endpoint and rerun the same "
                            f"command to resume (max_consecutive_failures: null never stops)"))
            except KeyboardInterrupt:
                if isinstance(stop, KeyboardInterrupt):
                    raise
                halt(KeyboardInterrupt())
                print("egt distill: stopping; waiting for the requests in flight to be journalled "
                      "(Ctrl-C again to abandon them)", file=sys.stderr)
    pool = teacher.pool
    wall_s = time.perf_counter() - t0
    counts = pool.stats.as_dict()
    run_info = {
        "requests": counts["requests"], "retries": counts["retries"], "faults_by_class": counts["faults"],
        "requests_per_s": round(counts["requests"] / wall_s, 2) if wall_s > 0 else 0.0,
        "send_wall_time_s": round(wall_s, 3), "budget_reached": teacher.budget.reached,
        "rate_limit_wait_s": round(sum(lim.waited_s for lim in [pool.limiter] + [e.limiter for e in pool.endpoints]
                                       if lim is not None), 3),
        "endpoints": [{"url": e.base_url, "model": e.model, "weight": e.weight, **e.stats.as_dict(),
                       "set_aside": e.set_aside_count} for e in pool.endpoints],
    }
    return stop, run_info
