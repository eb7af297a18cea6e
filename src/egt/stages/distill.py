"""Stage 1 data: teacher reasoning traces with the fidelity filter.

A teacher writes `<think>...</think><answer>k</answer>` for every training pair.
A trace is kept only if `prompts.parse_verdict(reply).verdict == pair.label`
(the human label, never shown to the teacher by default); a pair gets up to
`max_attempts` answered attempts and is dropped, with its reason, when all fail.

    egt distill pairs=data/train.parquet output=runs/distill backend=oracle
    TEACHER_API_KEY=... egt distill --config configs/qwen2.5-vl-7b/distill_vllm_teacher.yaml --dry-run
    TEACHER_API_KEY=... egt distill --config configs/qwen2.5-vl-7b/distill_vllm_teacher.yaml

Backends:
- `openai`: one or several OpenAI-compatible chat-completions endpoints (vLLM, SGLang, a hosted
  API): `base_url` (one URL or a list) or `teachers:` entries (url, model, api_key_env, weight,
  rate limits). Requests, images, cost and budget: egt.stages.teacher; the fault policy (shared with
  the LLM logic judge): egt.core.endpoint. Keys are read from the environment variables named by
  `api_key_env` and never logged or written.
- `hf`: a local Hugging Face VLM through `egt.model.generation.judge`, batched,
  attempts in rounds over chunks of `hf_chunk_pairs` pairs.
- `oracle`: the synthetic benchmark's rule-based teacher; with probability
  `oracle_wrong_rate` an attempt is unfaithful, so the filter has work to do.

Outcome of one answered attempt: `faithful` (verdict == label), `unfaithful` (verdict != label),
`unparsable` (no verdict, or no <think> block: there is no reasoning to distill). A pair ends as
- `kept` (a faithful attempt) or `dropped` (`max_attempts` answered attempts, none faithful;
  `drop_reason` unparsable when every one was, else unfaithful): final verdicts;
- `refused`: the teacher's content policy declined it (a verdict of its own, never retried in the
  run; final only with `refusals_final: true`);
- `failed`: no verdict yet -- a request failed after its retries (`failure_class`: timeout,
  connection, rate_limited, server_error, bad_reply, truncated, rejected), or the budget or a stop
  came first (budget, stopped). Its answered attempts are kept.
A rerun of the same command sends every pair without a final verdict again, going on from its next
attempt (attempt i is sent with the seed `teacher.request_seed(seed, id, i)`), so nothing is lost
and the kept traces equal an uninterrupted run's. `--retry-failed` also re-sends pairs whose final
verdict involved a teacher failure: refusals even with `refusals_final: true`, and drops that
journals of egt before 2026-12 recorded with a teacher error among their attempts.

Decision (format): with `canonicalize: true` (default) a kept reply that
parses but is not exactly formatted is stored as
`format_judgement(think.strip(), verdict)`, so SFT teaches exactly the format
the format reward checks; `teacher_format_ok` records whether the reply was
already canonical.

Resume: each finished or unfinished pair is appended to `<output>/journal.jsonl` (an
egt.core.files.Journal: flushed and fsynced; a pair's later record wins); a torn last line (kill -9
while writing) is cut off. The final files are rebuilt from the journal: `traces.parquet` (pair +
trace + attempts), `dropped.parquet` (pair + drop_reason + attempt_outcomes), `failed.parquet`
(pairs without a final verdict: failure_class, last_error; absent when there are none),
`stats.json` (every count by class, tokens, cost), and a summary table is printed. A run that ends
with pairs still failed, reaches its budget, or stops because the teacher keeps failing
(`max_consecutive_failures` pairs in a row) exits with status 75 and says how to resume.

The folder is a run folder (egt.core.runfolder): `fingerprint.json` records the pairs file's SHA-256,
the teacher (a local model folder's files; for endpoints the served model names -- the weights behind
a URL cannot be hashed, and endpoints may be added or replaced between runs to spread load or fail
over) and the settings that change the traces; a rerun with any of them changed is refused, naming
it, while the journal holds work (`overwrite=true` starts over). Limits, concurrency, prices and the
budget are not in it: they change how pairs are sent, not what a trace is. One process writes a
folder at a time (shard jobs: one per slice, below).

Independent jobs (`shard=i/n`, `slurm` or `env`; egt.core.shards): job i of n distils the blocks
of `hf_chunk_pairs` pairs b % n == i into its own `shards/journal.<i>-of-<n>.jsonl`, holding only its
slice's lock; the folder's fingerprint (above) refuses jobs of other pairs, teachers or settings;
the last job to finish folds the journals into journal.jsonl and writes the outputs, byte for byte a
one-process run's (stats.json but its wall time and this run's counts).

Swap augmentation (`orders: both`): pairwise judges learn position shortcuts, and
the standard remedy (JudgeLM, PandaLM) is to train on both orders. Each pair is
distilled as given and with its responses swapped (`<id>::swap`, label flipped),
each order with its own attempts and fidelity filter, so SFT sees a trace
written for the order its prompt shows. The paper distils one order.

Deviation from the paper: `reveal_label: true` tells the teacher which response
is better and asks it to justify it. This LEAKS THE LABEL into the trace (the
teacher rationalises rather than judges) and makes the fidelity filter nearly
vacuous; it is off by default.
"""

from __future__ import annotations

import sys
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from egt.core import prompts
from egt.core.config import StageConfig, save_config
from egt.core.errors import ConfigError, RunIncomplete
from egt.core.files import Journal, check_unique_ids, write_json
from egt.core.images import ImageOptions
from egt.core.records import PreferencePair, read_pairs, write_rows
from egt.model.loading import MAX_PIXELS_HELP, MIN_PIXELS_HELP

JOURNAL = "journal.jsonl"
# What `egt distill` writes in its folder (removed by overwrite, or when a failed run is replaced).
OWNED = (JOURNAL, "traces.parquet", "dropped.parquet", "failed.parquet", "stats.json", "distill_config.yaml")
# Config keys that change the traces (the teacher itself: its folder's files, or the served model names).
FINGERPRINTED = ("backend", "max_attempts", "reveal_label", "canonicalize", "orders", "seed", "temperature", "top_p",
                 "max_tokens", "token_param", "send_seed", "extra_body", "system_prompt", "teacher_max_image_side",
                 "teacher_max_image_pixels", "oracle_wrong_rate", "allow_absolute_paths")
ANSWERED = ("faithful", "unfaithful", "unparsable")   # outcomes of an attempt the teacher answered
TEACHER_ERRORS = ("timeout", "connection", "rate_limited", "server_error", "bad_reply", "truncated", "rejected")


class TeacherEntry(BaseModel):
    """One teacher endpoint of `teachers:` (backend=openai)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="base URL, e.g. http://gpu-node-3:8000/v1")
    model: str | None = Field(None, description="model served there (default: the top-level model)")
    api_key_env: str | None = Field(None, description="NAME of its key's env var (default: the top-level "
                                                      "api_key_env; null: no key)")
    weight: float = Field(1.0, gt=0, description="share of the requests, relative to the other entries")
    requests_per_minute: float | None = Field(None, gt=0, description="this endpoint's own limit")
    tokens_per_minute: float | None = Field(None, gt=0, description="this endpoint's own limit")


class Config(StageConfig, ImageOptions):
    pairs: Path = Field(description="pairs file (Parquet or JSONL) to distill")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside "
                                                      "(default: the pairs file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    output: Path = Field(description="run folder: traces.parquet, dropped.parquet, stats.json, journal.jsonl")
    overwrite: bool = Field(False, description="discard traces of another pairs file, teacher or settings in output")
    backend: Literal["openai", "hf", "oracle"] = "oracle"
    max_attempts: int = Field(3, ge=1, description="answered attempts per pair before it is dropped")
    reveal_label: bool = Field(False, description="tell the teacher the better response (LEAKS the label)")
    canonicalize: bool = Field(True, description="store kept traces as format_judgement(think, verdict)")
    limit: int | None = Field(None, ge=1, description="distill only the first N pairs")
    orders: Literal["one", "both"] = Field(
        "one", description="both: swap augmentation -- each pair is also distilled with its responses swapped "
                           "(`<id>::swap`, label flipped), each order with its own attempts and filter")
    seed: int = 0
    progress: bool = True
    shard: str | None = Field(None, description="i/n, slurm or env: this independent job's slice of the pairs "
                                                "(egt.core.shards; the last job to finish writes the outputs)")
    dry_run: bool = Field(False, description="print what would be sent and the cost estimate, send nothing")
    retry_failed: bool = Field(False, description="also re-send pairs whose final verdict involved a teacher "
                                                  "failure (refusals, old journals' drops with errors)")
    # openai backend: endpoints
    base_url: str | list[str] | None = Field(None, description="e.g. http://localhost:8000/v1, or a list of "
                                                              "URLs serving the same model")
    teachers: list[TeacherEntry] = Field(default_factory=list, description="endpoints with their own model, "
                                         "key, weight and limits (instead of base_url)")
    model: str | None = Field(None, description="model name served at base_url (openai) or path (hf)")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="NAME of the env var holding the key "
                                                                 "(null: the server needs none)")
    concurrency: int = Field(8, ge=1, description="requests in flight")
    request_timeout_s: float = Field(120.0, gt=0, description="limit for one whole reply, body included")
    max_retries: int = Field(5, ge=0, description="retries per attempt on timeouts, connection errors, 429, "
                                                  "5xx, malformed or truncated replies")
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    requests_per_minute: float | None = Field(None, gt=0, description="limit over all endpoints")
    tokens_per_minute: float | None = Field(None, gt=0, description="limit over all endpoints (prompt "
                                                                   "estimate + max_tokens, corrected by usage)")
    endpoint_set_aside_after: int = Field(5, ge=1, description="failures in a row that set an endpoint aside "
                                                               "(several endpoints only)")
    endpoint_set_aside_s: float = Field(60.0, ge=0, description="first set-aside period; doubles, at most 10x")
    max_consecutive_failures: int | None = Field(
        25, ge=1, description="stop (exit 75, resumable) after this many pairs in a row end in teacher errors")
    refusals_final: bool = Field(False, description="a content-policy refusal is a final verdict (not asked "
                                                    "again on a rerun)")
    # openai backend: what a request holds
    temperature: float | None = Field(0.7, ge=0, description="null: not sent (models that refuse it)")
    top_p: float | None = Field(None, gt=0, le=1, description="null: not sent (the server's default)")
    max_tokens: int = Field(1024, ge=1, description="teacher completion budget (max_new_tokens for hf)")
    token_param: Literal["max_tokens", "max_completion_tokens"] | None = Field(
        "max_tokens", description="field the completion budget is sent in (max_completion_tokens for "
                                  "reasoning APIs); null: not sent")
    send_seed: bool = Field(True, description="send each attempt's seed (reproducible sampling on vLLM)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="added to every request as given, "
                                       "e.g. {reasoning_effort: low}")
    stream: bool = Field(False, description="read replies as server-sent events")
    system_prompt: str | None = None
    teacher_max_image_side: int | None = Field(None, ge=1, description="downscale images whose longer side "
                                                                       "is above this before sending")
    teacher_max_image_pixels: int | None = Field(
        12_845_056, ge=1, description="downscale images above this many pixels before sending (default: "
                                      "Qwen2.5-VL's own max_pixels, 3584x3584)")
    # openai backend: cost
    price_input_per_1k_usd: float = Field(0.0, ge=0, description="price of 1,000 prompt tokens")
    price_output_per_1k_usd: float = Field(0.0, ge=0, description="price of 1,000 completion tokens")
    expected_attempts: float | None = Field(None, ge=1, description="attempts per pair in the estimate "
                                            "(default: the journal's mean, else 1.5)")
    expected_completion_tokens: int | None = Field(None, ge=1, description="completion tokens per reply in the "
                                                   "estimate (default: the journal's mean, else max_tokens)")
    pixels_per_image_token: int = Field(784, ge=1, description="image tokens in the prompt estimate: "
                                                               "pixels / this (784 = 28x28, Qwen2.5-VL)")
    max_cost_usd: float | None = Field(None, gt=0, description="stop before spending more (all runs of the "
                                                               "folder; needs prices)")
    max_tokens_total: int | None = Field(None, ge=1, description="stop before using more prompt + completion "
                                                                 "tokens (all runs of the folder)")
    # hf backend
    device: str = "auto"
    processor_max_pixels: int | None = Field(None, ge=1, description="hf: " + MAX_PIXELS_HELP)
    processor_min_pixels: int | None = Field(None, ge=1, description="hf: " + MIN_PIXELS_HELP)
    batch_size: int = Field(16, ge=1)
    hf_chunk_pairs: int = Field(256, ge=1, description="pairs per journal flush (hf, oracle)")
    # oracle backend
    oracle_wrong_rate: float = Field(0.1, ge=0, le=1, description="probability an oracle attempt is unfaithful")

    def teacher_entries(self) -> list[TeacherEntry]:
        """The endpoints of backend=openai: `teachers`, else one entry per URL of `base_url`."""
        if self.teachers and self.base_url:
            raise ConfigError("give either base_url or teachers, not both")
        if self.teachers:
            return list(self.teachers)
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url or [])
        return [TeacherEntry(url=url) for url in urls]


# ------------------------------------------------------------------ attempts

@dataclass
class Attempt:
    outcome: str                 # faithful | unfaithful | unparsable (ANSWERED); error in old journals
    reply: str = ""
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


@dataclass
class PairResult:
    """A pair's attempts in this run, plus what its journal record carried from earlier runs."""

    id: str
    attempts: list[Attempt] = field(default_factory=list)
    trace: str | None = None
    format_ok: bool = False
    retries: int = 0
    failure: str = ""            # why it has no final verdict: a TEACHER_ERRORS class, refused, budget, stopped
    error: str = ""              # the last error's text
    faults: Counter = field(default_factory=Counter)   # failed requests by class (retried ones included)
    prompt_tokens: int = 0       # tokens not held by `attempts`: earlier runs', a refusal's
    completion_tokens: int = 0
    hit_max_tokens: int = 0      # earlier runs' replies cut at max_tokens (finish_reason length)
    info: dict = field(default_factory=dict)   # prompt_tokens_estimate, images_downscaled, teacher_model

    @classmethod
    def resume(cls, pair_id: str, previous: dict | None) -> "PairResult":
        """Go on from a journal record without a final verdict: its answered attempts and counts."""
        if previous is None:
            return cls(pair_id)
        return cls(pair_id, attempts=[Attempt(o) for o in previous.get("outcomes", []) if o in ANSWERED],
                   retries=previous.get("retries", 0), faults=Counter(previous.get("faults", {})),
                   prompt_tokens=previous.get("prompt_tokens", 0),
                   completion_tokens=previous.get("completion_tokens", 0),
                   hit_max_tokens=previous.get("hit_max_tokens", 0))

    @property
    def status(self) -> str:
        if self.trace is not None:
            return "kept"
        if self.failure:
            return "refused" if self.failure == "refused" else "failed"
        return "dropped"

    def record(self) -> dict:
        outcomes = [a.outcome for a in self.attempts]
        status = self.status
        rec = {"id": self.id, "status": status, "attempts": len(self.attempts), "outcomes": outcomes,
               "retries": self.retries,
               "prompt_tokens": self.prompt_tokens + sum(a.prompt_tokens for a in self.attempts),
               "completion_tokens": self.completion_tokens + sum(a.completion_tokens for a in self.attempts)}
        cut = self.hit_max_tokens + sum(a.finish_reason == "length" for a in self.attempts)
        rec.update({k: v for k, v in (("faults", dict(sorted(self.faults.items()))), ("hit_max_tokens", cut))
                    if v})
        rec.update(self.info)
        if status == "kept":
            rec.update(trace=self.trace, teacher_format_ok=self.format_ok)
        elif status == "dropped":
            rec["drop_reason"] = drop_reason(outcomes)
            rec["last_error"] = next((a.error for a in reversed(self.attempts) if a.error), "")
        else:
            rec.update(failure_class=self.failure, last_error=self.error)
        return rec


def drop_reason(outcomes: list[str]) -> str:
    """Why a pair whose attempts were all answered was dropped (teacher_error: old journals only)."""
    if all(o == "error" for o in outcomes):
        return "teacher_error"
    if all(o in ("unparsable", "error") for o in outcomes):
        return "unparsable"
    return "unfaithful"


def judge_reply(reply: str, label: int, canonicalize: bool) -> tuple[str, str | None, bool]:
    """(outcome, trace to store or None, reply already canonical) for one teacher reply."""
    verdict = prompts.parse_verdict(reply)
    if verdict.verdict is None or verdict.think is None or not verdict.think.strip():
        return "unparsable", None, False
    if verdict.verdict != label:
        return "unfaithful", None, verdict.format_ok
    trace = prompts.format_judgement(verdict.think.strip(), verdict.verdict) if canonicalize else reply
    return "faithful", trace, verdict.format_ok


def teacher_prompt(pair: PreferencePair, reveal_label: bool) -> str:
    text = prompts.judge_prompt_text(pair.question, pair.response_1, pair.response_2)
    if reveal_label:
        text += (f"\nResponse {pair.label} is the better one. Explain step by step why, inside "
                 f"<think></think>, comparing both responses, then write {pair.label} inside <answer></answer>.")
    return text


def run_attempts(pair: PreferencePair, cfg: Config, ask: Callable[[int], Attempt | str]) -> PairResult:
    """Ask the teacher up to max_attempts times; stop at the first faithful trace."""
    result = PairResult(pair.id)
    for attempt_index in range(cfg.max_attempts):
        got = ask(attempt_index)
        attempt = got if isinstance(got, Attempt) else Attempt("", reply=got)
        if attempt.outcome != "error":
            attempt.outcome, trace, format_ok = judge_reply(attempt.reply, pair.label, cfg.canonicalize)
            if trace is not None:
                result.trace, result.format_ok = trace, format_ok
        result.attempts.append(attempt)
        if result.trace is not None:
            break
    return result


# ------------------------------------------------------------------ local backends

def _oracle_results(pairs: list[PreferencePair], cfg: Config) -> list[PairResult]:
    from egt.data.synth import oracle_trace

    results = []
    for pair in pairs:
        def ask(attempt_index: int, pair=pair) -> str:
            rng = random.Random(f"{cfg.seed}:{pair.id}:{attempt_index}")
            faithful = rng.random() >= cfg.oracle_wrong_rate
            return oracle_trace(pair, faithful=faithful, rng=rng)
        results.append(run_attempts(pair, cfg, ask))
    return results


class HFTeacher:
    def __init__(self, cfg: Config):
        from egt.model.loading import load_judge

        if not cfg.model:
            raise ConfigError("backend=hf needs model (a local Hugging Face VLM folder)")
        if cfg.reveal_label:
            raise ConfigError("reveal_label is supported by the openai backend only")
        import torch

        self.cfg = cfg
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.processor = load_judge(cfg.model, device=device, max_pixels=cfg.processor_max_pixels,
                                                min_pixels=cfg.processor_min_pixels)

    def results(self, pairs: list[PreferencePair]) -> list[PairResult]:
        """Attempts in rounds: every still-unfinished pair of the chunk gets its next attempt."""
        from egt.model.generation import JudgeRequest, judge, judgement_seed

        cfg = self.cfg
        results = {p.id: PairResult(p.id) for p in pairs}
        pending = list(pairs)
        for attempt_index in range(cfg.max_attempts):
            if not pending:
                break
            requests = [JudgeRequest(p, seed=judgement_seed(cfg.seed, p.id, attempt_index)) for p in pending]
            judgements = judge(self.model, self.processor, requests,
                               temperature=1.0 if cfg.temperature is None else cfg.temperature,
                               top_p=cfg.top_p or 1.0, max_new_tokens=cfg.max_tokens, batch_size=cfg.batch_size,
                               progress=False)
            still = []
            for pair, judgement in zip(pending, judgements):
                outcome, trace, format_ok = judge_reply(judgement.text, pair.label, cfg.canonicalize)
                res = results[pair.id]
                res.attempts.append(Attempt(outcome, reply=judgement.text,
                                            completion_tokens=len(judgement.token_ids)))
                if trace is not None:
                    res.trace, res.format_ok = trace, format_ok
                else:
                    still.append(pair)
            pending = still
        return [results[p.id] for p in pairs]


# ------------------------------------------------------------------ which pairs a run sends

def is_final(rec: dict, refusals_final: bool) -> bool:
    """A final verdict: kept, dropped by the fidelity filter, or refused when refusals are final."""
    status = rec.get("status")
    if status == "dropped":
        return rec.get("drop_reason") != "teacher_error"   # old journals: a pair that was never answered
    return status == "kept" or (status == "refused" and refusals_final)


def involved_failure(rec: dict) -> bool:
    """A verdict that a teacher failure had a hand in: a refusal, or an old journal's drop with errors."""
    return rec.get("status") == "refused" or \
        (rec.get("status") == "dropped" and any(o not in ANSWERED for o in rec.get("outcomes", [])))


def needs_sending(rec: dict | None, cfg: Config) -> bool:
    """Whether this run sends the pair: no record, no final verdict, or `retry_failed` and a failure."""
    if rec is None or not is_final(rec, cfg.refusals_final):
        return True
    return cfg.retry_failed and involved_failure(rec)


# ------------------------------------------------------------------ progress

class Progress:
    """The bar: pairs done with ETA, kept %, failed pairs, retries and cost so far."""

    def __init__(self, cfg: Config, total: int, done: dict[str, dict], pairs: list[PreferencePair]):
        from tqdm.auto import tqdm

        records = [done[p.id] for p in pairs if p.id in done and not needs_sending(done[p.id], cfg)]
        self.bar = tqdm(total=total, initial=len(records), desc="distill", unit="pair", disable=not cfg.progress,
                        dynamic_ncols=True)
        self.done = len(records)
        self.kept = sum(r["status"] == "kept" for r in records)
        self.failed = self.retries = 0
        self.cost: Callable[[], str] | None = None

    def update(self, records: list[dict]) -> None:
        self.done += len(records)
        self.kept += sum(r["status"] == "kept" for r in records)
        self.failed += sum(r["status"] == "failed" for r in records)
        self.retries += sum(r.get("retries", 0) for r in records)
        postfix = {"kept": f"{100 * self.kept / max(self.done, 1):.1f}%"}
        if self.failed or self.retries:
            postfix.update(failed=self.failed, retries=self.retries)
        if self.cost is not None:
            postfix["cost"] = self.cost()
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(len(records))

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------ run

def fingerprint(cfg: Config) -> dict:
    """What the traces depend on (egt.core.runfolder): the pairs file's content, the teacher -- a local model
    folder's files, or the model names the endpoints serve (the weights behind a URL cannot be hashed; the
    URLs themselves may change between runs) -- and the settings that change what it writes."""
    from egt.core import runfolder
    from egt.core.images import image_settings

    settings = {key: getattr(cfg, key) for key in FINGERPRINTED}
    settings["image_root"] = None if cfg.image_root is None else str(Path(cfg.image_root).resolve())
    settings.update(image_settings(cfg.image_limits))
    models = {}
    if cfg.backend == "openai":
        settings["models"] = sorted({entry.model or cfg.model or "" for entry in cfg.teachers} or {cfg.model or ""})
    elif cfg.backend == "hf":
        models["teacher"] = cfg.model
    return runfolder.fingerprint(inputs={"pairs": cfg.pairs}, models=models, settings=settings)


def run(cfg: Config) -> Path:
    from egt.core.runfolder import open_run_folder

    if cfg.shard is not None:
        return _run_shard_job(cfg)
    journal = Path(cfg.output) / JOURNAL
    # one writer; a folder holding traces of other pairs, another teacher or settings is refused
    with open_run_folder(cfg.output, "distill", fingerprint=lambda: fingerprint(cfg), owned=(*OWNED, "shards"),
                         overwrite=cfg.overwrite,
                         has_results=lambda: journal.exists() and bool(Journal(journal).read())):
        return _run(cfg)


def _run(cfg: Config, job=None) -> Path:
    t0 = time.perf_counter()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_pairs(cfg.pairs, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    check_unique_ids([p.id for p in pairs], cfg.pairs)
    if cfg.backend != "oracle":   # the teachers that see images: each inside its root and within the cap
        for pair in pairs:
            pair.check_images(sizes=True)
    if cfg.orders == "both":
        pairs = [q for p in pairs for q in (p, p.swapped())]
        check_unique_ids([p.id for p in pairs], cfg.pairs)  # an input id may already end in ::swap

    journal = Journal(_journal_path(out, job), key="id")
    done = _load_journals(out, journal)
    todo = [p for p in _owned(pairs, cfg, job) if needs_sending(done.get(p.id), cfg)]
    if cfg.dry_run:
        _dry_run(cfg, pairs, todo, done)
        return out
    save_config(cfg.model_copy(update={"shard": None}), out / "distill_config.yaml")  # the env var NAME only
    if cfg.backend == "openai" and todo:
        from egt.stages.teacher import Spend, estimate_cost, format_estimate

        print(format_estimate(estimate_cost(cfg, todo, Spend.of(done.values())), cfg), file=sys.stderr)
    progress = Progress(cfg, len(pairs), done, pairs)

    def finish(results: list[PairResult]) -> None:
        records = [r.record() for r in results]
        journal.append(records)
        progress.update(records)

    stop: BaseException | None = None
    run_info: dict = {}
    try:
        if cfg.backend == "openai" and todo:
            from egt.stages.teacher import send_pairs

            stop, run_info = send_pairs(cfg, todo, done, finish, progress)
        elif cfg.backend in ("hf", "oracle") and todo:
            teacher = HFTeacher(cfg) if cfg.backend == "hf" else None
            for start in range(0, len(todo), cfg.hf_chunk_pairs):
                chunk = todo[start:start + cfg.hf_chunk_pairs]
                finish(teacher.results(chunk) if teacher else _oracle_results(chunk, cfg))
    finally:
        progress.close()
    if job is not None:
        return _finish_shard_job(cfg, out, pairs, job, journal, time.perf_counter() - t0, run_info, stop)
    _fold_shard_journals(out, pairs)   # what shard jobs left in this folder, if any
    return _write_and_report(cfg, out, pairs, journal.load(), time.perf_counter() - t0, run_info, stop)


def _write_and_report(cfg: Config, out: Path, pairs: list[PreferencePair], done: dict[str, dict], wall_s: float,
                      run_info: dict, stop: BaseException | None) -> Path:
    """Write the outputs, print the summary table, and exit 75 if the run is unfinished."""
    stats = _write_outputs(cfg, out, pairs, done, wall_s, run_info)
    if cfg.backend == "openai" or cfg.progress:
        print(format_summary(stats, out), file=sys.stderr)
    _raise_if_unfinished(cfg, stats, stop)
    return out


def _dry_run(cfg: Config, pairs: list[PreferencePair], todo: list[PreferencePair], done: dict) -> None:
    """Print what a run would send and, for backend=openai, the cost estimate; send nothing."""
    print(f"egt distill (dry run): {len(pairs)} pairs, {len(pairs) - len(todo)} with a final verdict in the "
          f"journal, {len(todo)} to send", file=sys.stderr)
    if cfg.backend == "openai":
        from egt.stages.teacher import Spend, estimate_cost, format_estimate

        print(format_estimate(estimate_cost(cfg, todo, Spend.of(done.values())), cfg), file=sys.stderr)


def _raise_if_unfinished(cfg: Config, stats: dict, stop: BaseException | None) -> None:
    """Exit 75 (resumable) for a budget, a failing teacher or failed pairs; re-raise any other stop."""
    if stop is not None:
        raise stop
    left = stats["outcomes"]["failed"] + stats["outcomes"]["not_sent"]
    if stats["this_run"].get("budget_reached"):
        cap = (f"max_cost_usd ${cfg.max_cost_usd:,.2f}" if cfg.max_cost_usd is not None else "") + \
              (" / " if cfg.max_cost_usd is not None and cfg.max_tokens_total is not None else "") + \
              (f"max_tokens_total {cfg.max_tokens_total:,}" if cfg.max_tokens_total is not None else "")
        raise RunIncomplete(f"budget reached: spent ${stats['cost_usd']:,.2f} and {stats['tokens_total']:,} tokens "
                            f"of {cap}; {left} pairs left (journal.jsonl keeps the rest): raise the cap and rerun "
                            f"the same command to resume")
    failed = stats["failed_by_class"]
    if stats["outcomes"]["failed"]:
        classes = ", ".join(f"{name} {n}" for name, n in sorted(failed.items(), key=lambda kv: -kv[1]))
        raise RunIncomplete(f"{stats['outcomes']['failed']} pairs have no verdict yet ({classes}; listed in "
                            f"failed.parquet); rerun the same command to retry them")


def _write_outputs(cfg: Config, out: Path, pairs: list[PreferencePair], done: dict[str, dict],
                   wall_s: float, run_info: dict | None = None) -> dict:
    kept_rows, dropped_rows, failed_rows = [], [], []
    attempts_hist: Counter = Counter()
    reasons: Counter = Counter()
    failed_by: Counter = Counter()
    faults: Counter = Counter()
    tokens = Counter()
    for pair in pairs:
        rec = done.get(pair.id)
        if rec is None:
            tokens["not_sent"] += 1
            continue
        row = pair.to_row()
        tokens["prompt"] += rec.get("prompt_tokens", 0)
        tokens["completion"] += rec.get("completion_tokens", 0)
        tokens["retries"] += rec.get("retries", 0)
        tokens["hit_max_tokens"] += rec.get("hit_max_tokens", 0)
        tokens["images_downscaled"] += len(rec.get("images_downscaled", []))
        faults.update(rec.get("faults", {}))
        if rec["status"] == "kept":
            row.update(trace=rec["trace"], attempts=rec["attempts"],
                       teacher_format_ok=bool(rec.get("teacher_format_ok")))
            kept_rows.append(row)
            attempts_hist[rec["attempts"]] += 1
        elif is_final(rec, cfg.refusals_final) or rec["status"] == "refused":  # a refusal is a verdict of its own
            reason = rec.get("drop_reason") or "content_refused"
            row.update(drop_reason=reason, attempts=rec["attempts"], attempt_outcomes=rec["outcomes"],
                       last_error=rec.get("last_error", ""))
            dropped_rows.append(row)
            reasons[reason] += 1
        else:
            failure = rec.get("failure_class") or "teacher_error"
            row.update(failure_class=failure, attempts=rec["attempts"], attempt_outcomes=rec["outcomes"],
                       last_error=rec.get("last_error", ""))
            failed_rows.append(row)
            failed_by[failure] += 1
    write_rows(kept_rows, out / "traces.parquet")
    write_rows(dropped_rows, out / "dropped.parquet")
    if failed_rows:
        write_rows(failed_rows, out / "failed.parquet")
    else:
        (out / "failed.parquet").unlink(missing_ok=True)  # a rerun that finished them all
    n = len(pairs)
    stats = {
        "backend": cfg.backend, "model": cfg.model, "pairs": n, "kept": len(kept_rows),
        "dropped": len(dropped_rows), "kept_pct": round(100 * len(kept_rows) / n, 3) if n else 0.0,
        "complete": not failed_rows and not tokens["not_sent"],
        "outcomes": {"kept": len(kept_rows), "dropped": len(dropped_rows) - reasons["content_refused"],
                     "refused": reasons["content_refused"], "failed": len(failed_rows),
                     "not_sent": tokens["not_sent"]},
        "attempts_histogram": {str(k): attempts_hist[k] for k in sorted(attempts_hist)},
        "drop_reasons": dict(reasons),
        "failed_by_class": dict(sorted(failed_by.items())),
        "faults_by_class": dict(sorted(faults.items())),
        "max_attempts": cfg.max_attempts, "reveal_label": cfg.reveal_label, "orders": cfg.orders,
        "refusals_final": cfg.refusals_final,
        "prompt_tokens": tokens["prompt"], "completion_tokens": tokens["completion"],
        "tokens_total": tokens["prompt"] + tokens["completion"],
        "cost_usd": round((tokens["prompt"] * cfg.price_input_per_1k_usd
                           + tokens["completion"] * cfg.price_output_per_1k_usd) / 1000, 6),
        "retries": tokens["retries"], "hit_max_tokens": tokens["hit_max_tokens"],
        "images_downscaled": tokens["images_downscaled"], "wall_time_s": round(wall_s, 3),
        "this_run": run_info or {},
    }
    write_json(stats, out / "stats.json")
    return stats


def format_summary(stats: dict, out: Path) -> str:
    """The table printed at the end of a run: every pair's outcome by class, requests, tokens, cost."""
    o, n = stats["outcomes"], max(stats["pairs"], 1)
    rows = [("kept", o["kept"], "")]
    for reason, count in sorted(stats["drop_reasons"].items()):
        if reason == "content_refused":
            rows.append(("refused by content policy", count, "final" if stats["refusals_final"] else
                         "asked again on a rerun (refusals_final: true keeps them dropped)"))
        else:
            rows.append((f"dropped: {reason}", count, "final"))
    for name, count in sorted(stats["failed_by_class"].items(), key=lambda kv: -kv[1]):
        rows.append((f"failed: {name}", count, "no verdict yet: a rerun retries it"))
    if o["not_sent"]:
        rows.append(("not sent", o["not_sent"], "a rerun sends it"))
    lines = [f"egt distill: {stats['pairs']} pairs -> {out}" + ("" if stats["complete"] else " (incomplete)")]
    lines += [f"  {label:<28} {count:>8}  {100 * count / n:5.1f}%  {note}".rstrip() for label, count, note in rows]
    run = stats["this_run"]
    if run:
        faults = ", ".join(f"{k} {v}" for k, v in run["faults_by_class"].items()) or "none"
        lines.append(f"  this run: {run['requests']:,} requests ({run['requests_per_s']}/s), {run['retries']:,} "
                     f"retries; failed requests by class: {faults}")
        if run.get("rate_limit_wait_s"):
            lines.append(f"  rate limiter waited {run['rate_limit_wait_s']:.1f} s (summed over threads)")
        aside = [f"{e['url']} {e['set_aside']}x" for e in run["endpoints"] if e["set_aside"]]
        if aside:
            lines.append(f"  endpoints set aside: {', '.join(aside)}")
    cost = f" = ${stats['cost_usd']:,.2f}" if stats["cost_usd"] else ""
    lines.append(f"  tokens (all runs): {stats['prompt_tokens']:,} prompt + {stats['completion_tokens']:,} "
                 f"completion{cost}; retries {stats['retries']:,}")
    extras = [f"{stats['images_downscaled']} images downscaled" if stats["images_downscaled"] else "",
              f"{stats['hit_max_tokens']} replies cut at max_tokens (raise max_tokens?)"
              if stats["hit_max_tokens"] else ""]
    if any(extras):
        lines.append("  " + "; ".join(e for e in extras if e))
    return "\n".join(lines)


# ------------------------------------------------------------------ independent jobs (--shard i/n)

def _journal_path(out: Path, job) -> Path:
    from egt.core.shards import slot_journal

    return out / JOURNAL if job is None else slot_journal(out, JOURNAL, job)


def _load_journals(out: Path, journal: Journal) -> dict[str, dict]:
    """This folder's pairs: the journal and the shard jobs' journals (egt.core.shards.load_all)."""
    from egt.core.shards import load_all

    return load_all(out, JOURNAL, "id", own=journal.path)


def _fold_shard_journals(out: Path, pairs: list[PreferencePair]) -> None:
    from egt.core.shards import fold_journals

    fold_journals(out, JOURNAL, "id", [p.id for p in pairs])


def _owned(pairs: list[PreferencePair], cfg: Config, job) -> list[PreferencePair]:
    """The pairs of `job`'s blocks of hf_chunk_pairs (all pairs without a job)."""
    from egt.core.shards import blocks

    if job is None:
        return pairs
    return [pairs[i] for b, block in enumerate(blocks(len(pairs), cfg.hf_chunk_pairs)) if job.owns(b) for i in block]


def _finish_shard_job(cfg: Config, out: Path, pairs: list[PreferencePair], job, journal: Journal, wall_s: float,
                      run_info: dict, stop: BaseException | None) -> Path:
    """A shard job's end: the last job to finish (every pair has a record in some journal) folds the journals
    and writes the outputs; another says what is left. Either exits 75 when its own slice is unfinished."""
    from egt.core.runfolder import merge_lock

    if stop is not None:
        raise stop
    done = _load_journals(out, journal)
    left = sum(p.id not in done for p in pairs)
    if not left:
        with merge_lock(out, "distill"):
            _fold_shard_journals(out, pairs)
            return _write_and_report(cfg, out, pairs, Journal(out / JOURNAL, key="id").load(), wall_s, run_info, None)
    print(f"egt distill: shard job {job.label} finished its pairs; {left} of {len(pairs)} are left to other "
          f"jobs (the last to finish writes the outputs)", file=sys.stderr)
    unfinished = sum(needs_sending(done.get(p.id), cfg) for p in _owned(pairs, cfg, job))
    if unfinished:
        raise RunIncomplete(f"shard job {job.label}: {unfinished} of its pairs have no verdict yet; rerun the same "
                            f"command to retry them")
    return out


def _run_shard_job(cfg: Config) -> Path:
    """One independent job's slice (egt.core.shards): the folder's fingerprint claim (`fingerprint`, as a
    one-process run's) refuses jobs of other pairs, teachers or settings, and each job holds its slice's lock."""
    from egt.core.runfolder import open_run_folder
    from egt.core.shards import parse_shard

    job = parse_shard(cfg.shard)
    out = Path(cfg.output)

    def has_results() -> bool:
        return (out / JOURNAL).exists() or (out / "shards").exists()

    with open_run_folder(out, "distill", shard=job, overwrite=False, has_results=has_results,
                         fingerprint=lambda: fingerprint(cfg), owned=(*OWNED, "shards")):
        return _run(cfg, job)
