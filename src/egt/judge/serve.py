"""`egt serve`: a trained judge as an HTTP reward service for RL trainers (FastAPI + uvicorn).

    egt serve runs/demo/sft/model                                   # http://127.0.0.1:8100, local judge
    egt serve runs/demo/sft/model --calibration runs/calib/calibration.json --port 8100
    EGT_SERVE_TOKEN=secret egt serve runs/sft/model --host 0.0.0.0 --auth_token_env EGT_SERVE_TOKEN
    egt serve http://localhost:8000/v1 --served_model judge --concurrency 16      # in front of `vllm serve`

Endpoints (docs/serve.md has a request and a response for each, and the errors):
  POST /v1/compare   pairs -> verdict, P(each response better) averaged over both orders, orders_agree,
                     entropies, abstain (egt.judge.probability)
  POST /v1/score     response vs reference, both orders -> reward = P(response better than reference)
  POST /v1/rank      N candidates of one prompt, round robin or knockout (as `egt rerank`) -> rewards
  POST /get_reward   OpenRLHF's remote reward protocol (query / prompts / labels)
  GET  /healthz      the process answers;  GET /readyz  the judge can take work (503 when its queue is full)
  GET  /v1/info      model, settings, calibration, limits;  GET /metrics  Prometheus

How requests become model calls. Each pair becomes its oriented judgements (both orders x samples);
they queue in egt.judge.batching.Batcher: one model worker for a local checkpoint (a batch runs
when it holds `max_batch_size` judgements or `max_batch_wait_ms` after its first arrived), or
`concurrency` workers sending one judgement each to an OpenAI-compatible endpoint. The queue is
bounded (`max_queue` judgements): a request that does not fit is answered 503 with Retry-After at
once. Identical judgements (same content and settings) in flight or recently finished are run once
(`cache_size`), so identical requests get identical answers.

Safe defaults. Binds 127.0.0.1 (a warning when bound elsewhere without a token); an optional
bearer token read from the environment variable `auth_token_env` (compared in constant time, never
logged; /healthz and /readyz stay open for probes); request bodies above `max_request_bytes` are
refused before they are read (413); images inline or inside `image_root` only, with byte and pixel
caps, remote URLs only when allowed (egt.judge.serve_inputs); at most `max_concurrent_per_client`
requests in flight per client (the X-Client-Id header, else the peer address: 429 with Retry-After);
a malformed body is answered 422 naming the field; a request that waits longer than
`request_timeout_s` (a slow or dead upstream: its own timeout_s and max_retries bound each call) is
answered 503, and its queued judgements are dropped. SIGTERM stops accepting, finishes the requests
in flight (up to `shutdown_timeout_s`) and exits.

Departure: the paper trains and evaluates the judge; serving it as a reward is egt's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from pydantic import Field

from egt.core.errors import ConfigError, EgtError
from egt.judge.api import JudgeOptions, content_key, is_endpoint, make_pair, orders_for
from egt.judge.serve_inputs import (
    CompareRequest,
    ImageLimits,
    OpenRLHFRequest,
    RankRequest,
    RequestError,
    ScoreRequest,
    field_name,
    load_image,
    openrlhf_label,
    openrlhf_response,
    prompt_question,
)

log = logging.getLogger("egt.serve")
PUBLIC_PATHS = ("/healthz", "/readyz")
ENDPOINTS = ("/v1/compare", "/v1/score", "/v1/rank", "/get_reward", "/v1/info", "/metrics") + PUBLIC_PATHS


class Config(JudgeOptions):
    batch_size: int = Field(16, ge=1, description="not used by egt serve: see max_batch_size")
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback exposes the judge")
    port: int = Field(8100, ge=0, le=65535, description="port; 0 = any free port (printed when ready)")
    auth_token_env: str | None = Field(None, description="environment variable holding the bearer token clients "
                                                         "must send (Authorization: Bearer ...); None = no token")
    calibration: Path | None = Field(None, description="calibration JSON from `egt calibrate` (temperature, "
                                                       "abstention threshold)")
    max_batch_size: int = Field(16, ge=1, description="local judge: most judgements per model batch")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="local judge: how long a batch waits to fill up")
    max_queue: int = Field(256, ge=1, description="judgements waiting at most; a request that does not fit is "
                                                  "answered 503 with Retry-After")
    request_timeout_s: float = Field(300.0, gt=0, description="longest a request waits for its judgements (503)")
    max_items_per_request: int = Field(64, ge=1, description="pairs / items / candidates / queries per request")
    max_request_bytes: int = Field(32 * 2**20, ge=1024, description="largest request body (413 above)")
    max_image_bytes: int = Field(16 * 2**20, ge=1, description="largest image, encoded (413 above)")
    max_image_pixels: int = Field(48_000_000, ge=1, le=178_956_970,
                                  description="largest image, width x height (413 above; at most PIL's own limit)")
    max_images_per_item: int = Field(8, ge=0, description="images per pair, item or rank request")
    image_root: Path | None = Field(None, description="folder that image paths resolve in and may not leave; "
                                                      "None = paths refused (inline data: URIs only)")
    allow_remote_images: bool = Field(False, description="fetch http(s) image URLs (with a timeout and the byte cap)")
    remote_image_timeout_s: float = Field(10.0, gt=0, description="timeout of one remote image fetch")
    max_concurrent_per_client: int = Field(32, ge=1, description="requests in flight per client (429 above)")
    cache_size: int = Field(4096, ge=0, description="finished judgements kept for identical requests; 0 = none")
    shutdown_timeout_s: float = Field(60.0, gt=0, description="SIGTERM: how long in-flight requests may finish")
    access_log: bool = Field(True, description="one log line per request (uvicorn's access log; never headers)")
    ready_file: Path | None = Field(None, description="write the service's URL here once it accepts requests")


def judge_options(cfg: Config) -> JudgeOptions:
    """The judge's own options from the service config (its batches are the batcher's)."""
    values = {name: getattr(cfg, name) for name in JudgeOptions.model_fields}
    values["batch_size"] = cfg.max_batch_size
    return JudgeOptions.model_validate(values)


def read_token(env: str | None) -> str | None:
    if env is None:
        return None
    token = os.environ.get(env)
    if not token:
        raise ConfigError(f"egt serve: auth_token_env names {env}, which is not set or empty")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- metrics

class Metrics:
    """Prometheus metrics of one service (its own registry)."""

    def __init__(self, service: "Service"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.core import CounterMetricFamily

        self.registry = registry = CollectorRegistry()
        self.requests = Counter("egt_serve_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=registry)
        self.latency = Histogram("egt_serve_request_seconds", "request latency by endpoint", ["endpoint"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                                 registry=registry)
        self.batch_size = Histogram("egt_serve_batch_size", "judgements per model batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=registry)
        self.batch_seconds = Histogram("egt_serve_batch_seconds", "model time per batch",
                                       buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120),
                                       registry=registry)
        self.errors = Counter("egt_serve_errors", "refused or failed requests by kind", ["kind"], registry=registry)
        self.pairs = Counter("egt_serve_pairs", "pairs judged, by endpoint", ["endpoint"], registry=registry)
        self.abstained = Counter("egt_serve_abstained", "pairs answered with abstain=true", registry=registry)
        self.forced = Counter("egt_serve_answer_forced", "judgements whose answer was forced (no verdict written)",
                              registry=registry)
        Gauge("egt_serve_queue_depth", "judgements waiting for the model", registry=registry) \
            .set_function(lambda: service.batcher.depth)
        Gauge("egt_serve_running_judgements", "judgements in the model now", registry=registry) \
            .set_function(lambda: service.batcher.running)
        Gauge("egt_serve_requests_in_flight", "requests being answered", registry=registry) \
            .set_function(lambda: sum(service.clients.values()))

        class _BatcherCounters:
            def collect(self):
                stats = service.batcher.stats
                for name, value, doc in (("judgements", stats.jobs, "judgements run by the model"),
                                         ("cache_hits", stats.cache_hits, "judgements answered from the cache"),
                                         ("deduplicated", stats.deduplicated, "judgements shared with an "
                                                                              "identical one in flight")):
                    family = CounterMetricFamily(f"egt_serve_{name}", doc)
                    family.add_metric([], value)
                    yield family

        registry.register(_BatcherCounters())

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)


# ---------------------------------------------------------------- the service

class Service:
    """The judge, its batcher, the limits and the counters behind one app."""

    def __init__(self, cfg: Config, judge, token: str | None = None):
        from egt.judge.batching import Batcher

        self.cfg, self.judge, self.token = cfg, judge, token
        endpoint = is_endpoint(cfg.model)
        self.metrics: Metrics | None = None
        self.batcher = Batcher(judge.run, max_batch_size=1 if endpoint else cfg.max_batch_size,
                               max_batch_wait_ms=0 if endpoint else cfg.max_batch_wait_ms, max_queue=cfg.max_queue,
                               workers=cfg.concurrency if endpoint else 1, cache_size=cfg.cache_size,
                               on_batch=lambda n, s: self.metrics.observe_batch(n, s) if self.metrics else None)
        self.metrics = Metrics(self)
        self.limits = ImageLimits(image_root=cfg.image_root, allow_remote_images=cfg.allow_remote_images,
                                  remote_image_timeout_s=cfg.remote_image_timeout_s,
                                  max_image_bytes=cfg.max_image_bytes, max_image_pixels=cfg.max_image_pixels,
                                  downscale_images=cfg.downscale_images)
        self.clients: dict[str, int] = {}
        self.started = time.time()
        self.draining = False
        # The settings a judgement's result depends on besides its content (the cache key's other half).
        self.settings_key = json.dumps({k: getattr(judge.options, k) for k in
                                        ("model", "samples", "temperature", "top_p", "max_new_tokens", "seed")},
                                       sort_keys=True, default=str)

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.draining = True
        self.batcher.stop(self.cfg.shutdown_timeout_s)

    def info(self) -> dict:
        o, cal = self.judge.options, self.judge.calibration
        return {"model": o.model if is_endpoint(o.model) else str(Path(o.model).resolve()),
                "backend": "endpoint" if is_endpoint(o.model) else "local",
                "entropy_kind": self.judge.entropy_kind,
                "settings": {"samples": o.samples, "orders": o.orders, "max_new_tokens": o.max_new_tokens,
                             "temperature": o.temperature if o.samples > 1 else None, "seed": o.seed,
                             "deterministic": o.samples == 1},
                "calibration": {"temperature": cal.temperature, "abstain_metric": cal.abstain_metric,
                                "abstain_threshold": cal.abstain_threshold,
                                "file": str(self.cfg.calibration) if self.cfg.calibration else None},
                "limits": {k: getattr(self.cfg, k) for k in
                           ("max_batch_size", "max_batch_wait_ms", "max_queue", "request_timeout_s",
                            "max_items_per_request", "max_request_bytes", "max_image_bytes", "max_image_pixels",
                            "max_images_per_item", "allow_remote_images", "max_concurrent_per_client")},
                "image_paths": self.cfg.image_root is not None, "auth": self.token is not None,
                "uptime_s": round(time.time() - self.started, 1)}

    # ------------------------------------------------------------ inputs

    def _count(self, n: int, field: str) -> None:
        if n > self.cfg.max_items_per_request:
            raise RequestError(413, field, f"{n} entries; this server takes at most {self.cfg.max_items_per_request} "
                                           "per request (max_items_per_request): split the request", "too_many_items")

    def images(self, values: list[str], field: str) -> list:
        if len(values) > self.cfg.max_images_per_item:
            raise RequestError(413, field, f"{len(values)} images; at most {self.cfg.max_images_per_item} "
                                           "(max_images_per_item)", "too_many_images")
        return [load_image(v, f"{field}[{i}]", self.limits) for i, v in enumerate(values)]

    # ------------------------------------------------------------ judging

    async def judge_pairs(self, pairs: list, orders: tuple[str, ...], endpoint: str) -> list:
        """PairRewards of `pairs` (egt.judge.probability), through the batcher."""
        from egt.judge.batching import QueueFull

        per_pair = [self.judge.requests_for(p, orders) for p in pairs]
        jobs = [r for group in per_pair for r in group]
        if len(jobs) > self.cfg.max_queue:
            raise RequestError(413, None, f"this request needs {len(jobs)} judgements, more than the queue holds "
                                          f"(max_queue {self.cfg.max_queue}): split it", "too_many_items")
        keys = [(content_key(r.pair), r.seed, self.settings_key) for r in jobs]
        try:
            results = await asyncio.wait_for(self.batcher.submit(jobs, keys), self.cfg.request_timeout_s)
        except QueueFull as exc:
            raise RequestError(503, None, f"{exc}; retry later", "queue_full",
                               {"Retry-After": str(max(1, round(exc.retry_after_s)))}) from None
        except asyncio.TimeoutError:
            raise RequestError(503, None, f"the judgements took longer than request_timeout_s "
                                          f"({self.cfg.request_timeout_s:g} s); retry later", "timeout",
                               {"Retry-After": str(max(1, round(self.batcher.retry_after_s())))}) from None
        except EgtError as exc:  # the endpoint backend's one-line failure (after its retries)
            log.warning("upstream judge failed: %s", exc)
            raise RequestError(503, None, f"the upstream judge failed: {exc}", "upstream",
                               {"Retry-After": "5"}) from None
        out, start = [], 0
        for group in per_pair:
            out.append(self.judge.reward(results[start:start + len(group)], orders))
            start += len(group)
        self.metrics.pairs.labels(endpoint).inc(len(out))
        self.metrics.abstained.inc(sum(r.abstain for r in out))
        self.metrics.forced.inc(sum(r.answer_forced for r in out))
        return out


# ---------------------------------------------------------------- ASGI guard: auth, size, per-client, metrics

async def _send_error(send, error: RequestError) -> None:
    data = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Checks done before a request body is read: token, body size, per-client concurrency; and metrics."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, cfg = self.service, self.service.cfg
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        started = time.perf_counter()
        status = {"code": 500}

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = headers.get("x-client-id") or (scope.get("client") or ("unknown",))[0]
        counted = False
        try:
            error = None
            if service.token is not None and path not in PUBLIC_PATHS:
                given = headers.get("authorization", "")
                if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), service.token.encode())):
                    error = RequestError(401, "Authorization", "missing or wrong bearer token", "unauthorized",
                                         {"WWW-Authenticate": "Bearer"})
            length = headers.get("content-length")
            if error is None and length is not None and length.isdigit() and int(length) > cfg.max_request_bytes:
                error = RequestError(413, "body", f"{int(length):,} bytes; this server takes at most "
                                                  f"{cfg.max_request_bytes:,} (max_request_bytes)", "body_too_large")
            if error is None and scope["method"] == "POST":
                if service.clients.get(client, 0) >= cfg.max_concurrent_per_client:
                    error = RequestError(429, None, f"this client already has {cfg.max_concurrent_per_client} "
                                                    "requests in flight (max_concurrent_per_client)",
                                         "client_limit", {"Retry-After": "1"})
                else:
                    service.clients[client] = service.clients.get(client, 0) + 1
                    counted = True
            if error is not None:
                service.metrics.errors.labels(error.kind).inc()
                await _send_error(tracked_send, error)
                return
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > cfg.max_request_bytes:
                        raise RequestError(413, "body", f"more than {cfg.max_request_bytes:,} bytes "
                                                        "(max_request_bytes)", "body_too_large")
                return message

            await self.app(scope, limited_receive, tracked_send)
        finally:
            if counted:
                service.clients[client] -= 1
                if not service.clients[client]:
                    del service.clients[client]
            service.metrics.requests.labels(endpoint, str(status["code"])).inc()
            service.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- the app

def create_app(service: Service):
    """The FastAPI app of `service`, wrapped in its Guard (an ASGI app for uvicorn)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    from egt.judge.rerank import best_index, knockout_round, round_robin_matches

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="egt serve", version=__import__("egt").__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)

    def error_response(error: RequestError) -> JSONResponse:
        service.metrics.errors.labels(error.kind).inc()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        problems = exc.errors()
        first = problems[0] if problems else {"loc": ("body",), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error_response(RequestError(400, "body", f"not valid JSON ({first.get('msg')})", "bad_json"))
        where = field_name(first["loc"])
        message = "unknown field" if first.get("type") == "extra_forbidden" else first["msg"]
        error = RequestError(422, where, message)
        service.metrics.errors.labels(error.kind).inc()
        body = error.body()
        body["error"]["problems"] = [{"field": field_name(p["loc"]), "message": p["msg"]} for p in problems[:20]]
        return JSONResponse(body, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return error_response(RequestError(exc.status_code, None, str(exc.detail), kind))

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        log.exception("internal error answering %s", request.url.path)
        return error_response(RequestError(500, None, f"internal error ({type(exc).__name__}); see the server log",
                                           "internal"))

    # ------------------------------------------------------------ probes, info, metrics

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        depth, cap = service.batcher.depth, service.cfg.max_queue
        if service.draining or depth >= cap:
            return JSONResponse({"status": "draining" if service.draining else "queue_full", "queue_depth": depth,
                                 "max_queue": cap}, status_code=503, headers={"Retry-After": "1"})
        return {"status": "ready", "queue_depth": depth, "max_queue": cap}

    @app.get("/v1/info")
    async def info():
        return service.info()

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------ judging

    async def pairs_of(items: list, field: str, build) -> list:
        service._count(len(items), field)
        return await asyncio.to_thread(lambda: [build(i, item) for i, item in enumerate(items)])

    @app.post("/v1/compare")
    async def compare(body: CompareRequest):
        orders = orders_for(body.orders or service.judge.options.orders)
        pairs = await pairs_of(body.pairs, "pairs", lambda i, p: make_pair(
            service.images(p.image_list(), f"pairs[{i}].images"), p.question, p.response_1, p.response_2))
        rewards = await service.judge_pairs(pairs, orders, "/v1/compare")
        return {"results": [r.to_dict(traces=body.traces) for r in rewards], "orders": list(orders),
                "samples": service.judge.options.samples, "temperature": service.judge.calibration.temperature}

    @app.post("/v1/score")
    async def score(body: ScoreRequest):
        orders = service.judge.orders
        pairs = await pairs_of(body.items, "items", lambda i, it: make_pair(
            service.images(it.image_list(), f"items[{i}].images"), it.question, it.response, it.reference))
        rewards = await service.judge_pairs(pairs, orders, "/v1/score")
        return {"rewards": [r.prob_1 for r in rewards], "results": [r.to_dict(traces=body.traces) for r in rewards]}

    @app.post("/v1/rank")
    async def rank(body: RankRequest):
        service._count(len(body.candidates), "candidates")
        images = await asyncio.to_thread(service.images, body.image_list(), "images")
        n, orders = len(body.candidates), service.judge.orders
        won: dict[tuple[int, int], float] = {}
        unreadable = 0

        async def play(matches: list[tuple[int, int]]) -> None:
            nonlocal unreadable
            pairs = [make_pair(images, body.question, body.candidates[i], body.candidates[j]) for i, j in matches]
            for (i, j), r in zip(matches, await service.judge_pairs(pairs, orders, "/v1/rank")):
                p = 0.5 if r.prob_1 is None else r.prob_1
                unreadable += r.prob_1 is None
                won[(i, j)], won[(j, i)] = p, 1.0 - p

        if body.method == "round_robin":
            matches = round_robin_matches(n)
            await play(matches)
            rewards = [sum(won[(i, j)] for j in range(n) if j != i) / (n - 1) for i in range(n)]
            scores = [r * (n - 1) for r in rewards]
        else:
            alive, reached, depth = list(range(n)), [0] * n, 0
            matches = []
            while len(alive) > 1:
                depth += 1
                games = [(alive[k], alive[k + 1]) for k in range(0, len(alive) - 1, 2)]
                matches += games
                await play(games)
                alive = knockout_round(alive, lambda i, j: won[(i, j)])
                for i in alive:
                    reached[i] = depth
            scores = [float(r) for r in reached]
            rewards = [r / depth for r in reached]
        return {"method": body.method, "best": best_index(scores), "rewards": rewards, "scores": scores,
                "matches": len(matches), "unreadable_matches": unreadable}

    @app.post("/get_reward")
    async def get_reward(body: OpenRLHFRequest):
        n = len(body.query)
        service._count(n, "query")
        for name in ("prompts", "labels"):
            given = getattr(body, name)
            if given is not None and len(given) != n:
                raise RequestError(422, name, f"{len(given)} entries for {n} queries")
        if n and body.labels is None:
            raise RequestError(422, "labels", "egt's judge compares with a reference: set OpenRLHF's "
                                              "--data.label_key to a column holding it (docs/serve.md)")
        prompts = body.prompts or [None] * n

        def build(i: int):
            label = openrlhf_label(body.labels[i], f"labels[{i}]")
            question = label["question"] if label["question"] is not None else prompt_question(prompts[i] or "")
            return make_pair(service.images(label["images"], f"labels[{i}].images"), question,
                             openrlhf_response(body.query[i], prompts[i]), label["reference"])

        pairs = await asyncio.to_thread(lambda: [build(i) for i in range(n)])
        rewards = await service.judge_pairs(pairs, service.judge.orders, "/get_reward") if pairs else []
        values = [0.5 if r.prob_1 is None else r.prob_1 for r in rewards]
        return {"rewards": values, "scores": values,
                "extra_logs": {"egt_prob": values,
                               "egt_abstain": [float(r.abstain) for r in rewards],
                               "egt_orders_agree": [float(bool(r.orders_agree)) for r in rewards],
                               "egt_answer_forced": [float(r.answer_forced) for r in rewards],
                               "egt_unreadable": [float(r.prob_1 is None) for r in rewards]}}

    return Guard(app, service)


# ---------------------------------------------------------------- the command

def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); EgtError naming the address if it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EgtError(f"egt serve: cannot listen on {host}:{port} ({exc.strerror or exc}): choose another "
                       "--port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s egt serve %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def run(cfg: Config) -> None:
    """Load the judge, bind, serve until SIGTERM / SIGINT (then finish the requests in flight)."""
    import uvicorn

    from egt.judge.probability import RewardJudge

    _setup_logging()
    token = read_token(cfg.auth_token_env)
    if not is_loopback(cfg.host) and token is None:
        log.warning("listening on %s without a token: anyone who can reach this address can use the judge "
                    "(set auth_token_env)", cfg.host)
    upstream_worst = cfg.timeout_s * (cfg.max_retries + 1)
    if is_endpoint(cfg.model) and upstream_worst > cfg.request_timeout_s:
        log.warning("timeout_s x (max_retries + 1) = %g s exceeds request_timeout_s = %g s", upstream_worst,
                    cfg.request_timeout_s)
    started = time.perf_counter()
    judge = RewardJudge.from_options(judge_options(cfg), cfg.calibration)
    service = Service(cfg, judge, token)
    sock = bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    cal = judge.calibration
    log.info("judge %s loaded in %.1f s (%s; samples %d, orders %s, max_new_tokens %d; temperature %g, abstain "
             "%s); limits: batch %d / %g ms, queue %d, %d per client, %d items per request; auth %s",
             getattr(judge.backend, "name", cfg.model), time.perf_counter() - started,
             "endpoint" if is_endpoint(cfg.model) else f"local {getattr(judge.backend.model, 'device', '')}",
             cfg.samples, cfg.orders, cfg.max_new_tokens, cal.temperature,
             f"{cal.abstain_metric} > {cal.abstain_threshold:g}" if cal.abstain_threshold is not None else "off",
             cfg.max_batch_size, cfg.max_batch_wait_ms, cfg.max_queue, cfg.max_concurrent_per_client,
             cfg.max_items_per_request, "on" if token else "off")
    app = create_app(service)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                # uvicorn re-raises the signal after its graceful shutdown (the process then dies by it); a
                # drained stop is a normal exit here: the stop line is logged and the status is 0.
                self._captured_signals.clear()

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if not self.should_exit:
                print(f"egt serve: ready on {url}", flush=True)
                if cfg.ready_file is not None:
                    from egt.core.files import write_text

                    write_text(url + "\n", cfg.ready_file)

    config = uvicorn.Config(app, log_level="info", access_log=cfg.access_log, lifespan="on",
                            timeout_graceful_shutdown=int(max(1, cfg.shutdown_timeout_s)), server_header=False)
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    log.info("stopped: %d judgements run, %d from the cache", service.batcher.stats.jobs,
             service.batcher.stats.cache_hits)
