"""Stage 1 data: teacher reasoning traces with the fidelity filter.

A teacher writes `<think>...</think><answer>k</answer>` for every training pair.
A trace is kept only if `prompts.parse_verdict(reply).verdict == pair.label`
(the human label, never shown to the teacher by default); a pair gets up to
`max_attempts` attempts and is dropped, with its reason, when all fail.

    egt distill pairs=data/train.parquet output=runs/distill backend=oracle
    TEACHER_API_KEY=... egt distill --config configs/qwen2.5-vl-7b/distill_vllm_teacher.yaml

Backends:
- `openai`: any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a
  hosted API). The key is read from the environment variable named by
  `api_key_env` and is never logged or written. Images go as base64 data URLs;
  `concurrency` pairs are in flight. Faults follow egt.core.endpoint (shared with the
  LLM logic judge): timeouts, connection errors, 429 and 5xx are retried with
  exponential backoff and full jitter (honouring Retry-After); 401/403/404 stop
  the run (a wrong key, model or URL fails every pair); retries are counted per
  pair and in stats.json. A reasoning model that returns its reasoning in
  `reasoning_content` gets it wrapped in <think></think>.
- `hf`: a local Hugging Face VLM through `egt.model.generation.judge`, batched,
  attempts in rounds over chunks of `hf_chunk_pairs` pairs.
- `oracle`: the synthetic benchmark's rule-based teacher; with probability
  `oracle_wrong_rate` an attempt is unfaithful, so the filter has work to do.

Outcome of one attempt: `faithful` (verdict == label), `unfaithful`
(verdict != label), `unparsable` (no verdict, or no <think> block: there is no
reasoning to distill), `error` (the request failed after `max_retries`
retries). A dropped pair's `drop_reason` is `teacher_error` when every attempt
errored, `unparsable` when every attempt was unparsable or errored, else
`unfaithful`.

Decision (format): with `canonicalize: true` (default) a kept reply that
parses but is not exactly formatted is stored as
`format_judgement(think.strip(), verdict)`, so SFT teaches exactly the format
the format reward checks; `teacher_format_ok` records whether the reply was
already canonical.

Resume: each finished pair is appended to `<output>/journal.jsonl` (an
egt.core.files.Journal: flushed and fsynced); a rerun skips the ids already there and a
torn last line (kill -9 while writing) is cut off. The final files are rebuilt from the journal:
`traces.parquet` (pair + trace + attempts), `dropped.parquet` (pair +
drop_reason + attempt_outcomes), `stats.json`.

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

import base64
import io
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field

from egt.core import prompts
from egt.core.config import StageConfig, save_config
from egt.core.errors import ConfigError
from egt.core.files import Journal, check_unique_ids, write_json
from egt.core.records import PreferencePair, read_pairs, write_rows
from egt.model.loading import MAX_PIXELS_HELP, MIN_PIXELS_HELP

JOURNAL = "journal.jsonl"


class Config(StageConfig):
    pairs: Path = Field(description="pairs file (Parquet or JSONL) to distill")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside "
                                                      "(default: the pairs file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    output: Path = Field(description="run folder: traces.parquet, dropped.parquet, stats.json, journal.jsonl")
    backend: Literal["openai", "hf", "oracle"] = "oracle"
    max_attempts: int = Field(3, ge=1, description="attempts per pair before it is dropped")
    reveal_label: bool = Field(False, description="tell the teacher the better response (LEAKS the label)")
    canonicalize: bool = Field(True, description="store kept traces as format_judgement(think, verdict)")
    limit: int | None = Field(None, ge=1, description="distill only the first N pairs")
    orders: Literal["one", "both"] = Field(
        "one", description="both: swap augmentation -- each pair is also distilled with its responses swapped "
                           "(`<id>::swap`, label flipped), each order with its own attempts and filter")
    seed: int = 0
    progress: bool = True
    # openai backend
    base_url: str | None = Field(None, description="e.g. http://localhost:8000/v1")
    model: str | None = Field(None, description="model name served at base_url (openai) or path (hf)")
    api_key_env: str = Field("OPENAI_API_KEY", description="NAME of the env var holding the key")
    concurrency: int = Field(8, ge=1, description="requests in flight")
    request_timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0, description="retries per attempt on timeout, connection error, 429, 5xx")
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, description="teacher completion budget (max_new_tokens for hf)")
    system_prompt: str | None = None
    # hf backend
    device: str = "auto"
    processor_max_pixels: int | None = Field(None, ge=1, description="hf: " + MAX_PIXELS_HELP)
    processor_min_pixels: int | None = Field(None, ge=1, description="hf: " + MIN_PIXELS_HELP)
    batch_size: int = Field(16, ge=1)
    hf_chunk_pairs: int = Field(256, ge=1, description="pairs per journal flush (hf, oracle)")
    # oracle backend
    oracle_wrong_rate: float = Field(0.1, ge=0, le=1, description="probability an oracle attempt is unfaithful")


# ------------------------------------------------------------------ attempts

@dataclass
class Attempt:
    outcome: str                 # faithful | unfaithful | unparsable | error
    reply: str = ""
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class PairResult:
    id: str
    attempts: list[Attempt] = field(default_factory=list)
    trace: str | None = None
    format_ok: bool = False
    retries: int = 0

    def record(self) -> dict:
        outcomes = [a.outcome for a in self.attempts]
        rec = {"id": self.id, "status": "kept" if self.trace is not None else "dropped",
               "attempts": len(self.attempts), "outcomes": outcomes, "retries": self.retries,
               "prompt_tokens": sum(a.prompt_tokens for a in self.attempts),
               "completion_tokens": sum(a.completion_tokens for a in self.attempts)}
        if self.trace is not None:
            rec.update(trace=self.trace, teacher_format_ok=self.format_ok)
        else:
            rec["drop_reason"] = drop_reason(outcomes)
            rec["last_error"] = next((a.error for a in reversed(self.attempts) if a.error), "")
        return rec


def drop_reason(outcomes: list[str]) -> str:
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


# ------------------------------------------------------------------ openai backend

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def image_data_url(ref) -> str:
    """Base64 data URL of an image: original bytes when the format is web-safe, else PNG."""
    from PIL import Image

    data = ref.read_bytes()  # checks the image root (egt.core.records.resolve_image_path)
    try:
        fmt = Image.open(io.BytesIO(data)).format
    except Exception:
        fmt = None
    if fmt not in _MIME:
        buffer = io.BytesIO()
        ref.open().save(buffer, format="PNG")
        data, fmt = buffer.getvalue(), "PNG"
    return f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"


class OpenAITeacher:
    """The teacher behind an OpenAI-compatible endpoint, with egt.core.endpoint's fault policy."""

    def __init__(self, cfg: Config):
        from egt.core.endpoint import Endpoint, RetryPolicy

        if not cfg.base_url or not cfg.model:
            raise ConfigError("backend=openai needs base_url (e.g. http://localhost:8000/v1) and model")
        self.cfg = cfg
        self.endpoint = Endpoint(cfg.base_url, cfg.model, cfg.api_key_env, cfg.request_timeout_s,
                                 RetryPolicy(cfg.max_retries, cfg.backoff_base_s, cfg.backoff_max_s),
                                 what="backend=openai: teacher endpoint")

    def messages(self, pair: PreferencePair) -> list[dict]:
        content = [{"type": "image_url", "image_url": {"url": image_data_url(ref)}} for ref in pair.images]
        content.append({"type": "text", "text": teacher_prompt(pair, self.cfg.reveal_label)})
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        return messages + [{"role": "user", "content": content}]

    def distill(self, pair: PreferencePair) -> PairResult:
        cfg = self.cfg
        messages = self.messages(pair)
        rng = random.Random(f"{cfg.seed}:{pair.id}:backoff")
        retries = 0

        def ask(attempt_index: int) -> Attempt:
            nonlocal retries
            result = self.endpoint.chat(messages, rng, temperature=cfg.temperature, top_p=cfg.top_p,
                                        max_tokens=cfg.max_tokens)
            retries += result.retries
            if result.response is None:
                return Attempt("error", error=result.error)
            try:
                return self._attempt(result.response)
            except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
                return Attempt("error", error=f"bad reply ({type(exc).__name__})")

        result = run_attempts(pair, cfg, ask)
        result.retries = retries
        return result

    @staticmethod
    def _attempt(resp) -> Attempt:
        message = resp.choices[0].message
        reply = message.content or ""
        reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
        if isinstance(reasoning, str) and reasoning.strip() and "<think>" not in reply:
            reply = f"<think>{reasoning.strip()}</think>{reply}"
        usage = resp.usage
        return Attempt("", reply=reply, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                       completion_tokens=getattr(usage, "completion_tokens", 0) or 0)


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
            judgements = judge(self.model, self.processor, requests, temperature=cfg.temperature,
                               top_p=cfg.top_p, max_new_tokens=cfg.max_tokens, batch_size=cfg.batch_size,
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


# ------------------------------------------------------------------ run

def _progress(cfg: Config, total: int, initial: int, kept: int):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc="distill", unit="pair", disable=not cfg.progress,
               dynamic_ncols=True)
    state = {"kept": kept, "done": initial}

    def update(records: list[dict]) -> None:
        state["done"] += len(records)
        state["kept"] += sum(r["status"] == "kept" for r in records)
        bar.set_postfix(kept=f"{100 * state['kept'] / max(state['done'], 1):.1f}%", refresh=False)
        bar.update(len(records))
    return bar, update


def run(cfg: Config) -> Path:
    from egt.core.runfolder import open_run_folder

    with open_run_folder(cfg.output, "distill"):  # one writer; removes temp files a killed run left
        return _run(cfg)


def _run(cfg: Config) -> Path:
    t0 = time.perf_counter()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_pairs(cfg.pairs, cfg.image_root, cfg.allow_absolute_paths)
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    check_unique_ids([p.id for p in pairs], cfg.pairs)
    if cfg.orders == "both":
        pairs = [q for p in pairs for q in (p, p.swapped())]
        check_unique_ids([p.id for p in pairs], cfg.pairs)  # an input id may already end in ::swap
    save_config(cfg, out / "distill_config.yaml")  # holds the env var NAME only, never the key

    journal = Journal(out / JOURNAL, key="id")
    done = journal.load()
    todo = [p for p in pairs if p.id not in done]
    bar, update = _progress(cfg, len(pairs), len(pairs) - len(todo),
                            sum(done[p.id]["status"] == "kept" for p in pairs if p.id in done))

    def finish(results: list[PairResult]) -> None:
        records = [r.record() for r in results]
        journal.append(records)
        update(records)

    try:
        if cfg.backend == "openai" and todo:
            teacher = OpenAITeacher(cfg)
            with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
                futures = [pool.submit(teacher.distill, p) for p in todo]
                try:
                    for future in as_completed(futures):
                        finish([future.result()])
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        elif cfg.backend in ("hf", "oracle") and todo:
            teacher = HFTeacher(cfg) if cfg.backend == "hf" else None
            for start in range(0, len(todo), cfg.hf_chunk_pairs):
                chunk = todo[start:start + cfg.hf_chunk_pairs]
                finish(teacher.results(chunk) if teacher else _oracle_results(chunk, cfg))
    finally:
        bar.close()
    return _write_outputs(cfg, out, pairs, journal.load(), time.perf_counter() - t0)


def _write_outputs(cfg: Config, out: Path, pairs: list[PreferencePair], done: dict[str, dict],
                   wall_s: float) -> Path:
    kept_rows, dropped_rows = [], []
    attempts_hist: Counter = Counter()
    reasons: Counter = Counter()
    tokens = Counter()
    for pair in pairs:
        rec = done[pair.id]
        row = pair.to_row()
        tokens["prompt"] += rec.get("prompt_tokens", 0)
        tokens["completion"] += rec.get("completion_tokens", 0)
        tokens["retries"] += rec.get("retries", 0)
        if rec["status"] == "kept":
            row.update(trace=rec["trace"], attempts=rec["attempts"],
                       teacher_format_ok=bool(rec.get("teacher_format_ok")))
            kept_rows.append(row)
            attempts_hist[rec["attempts"]] += 1
        else:
            row.update(drop_reason=rec["drop_reason"], attempts=rec["attempts"],
                       attempt_outcomes=rec["outcomes"], last_error=rec.get("last_error", ""))
            dropped_rows.append(row)
            reasons[rec["drop_reason"]] += 1
    write_rows(kept_rows, out / "traces.parquet")
    write_rows(dropped_rows, out / "dropped.parquet")
    n = len(pairs)
    stats = {
        "backend": cfg.backend, "model": cfg.model, "pairs": n, "kept": len(kept_rows),
        "dropped": len(dropped_rows), "kept_pct": round(100 * len(kept_rows) / n, 3) if n else 0.0,
        "attempts_histogram": {str(k): attempts_hist[k] for k in sorted(attempts_hist)},
        "drop_reasons": dict(reasons), "max_attempts": cfg.max_attempts, "reveal_label": cfg.reveal_label,
        "orders": cfg.orders,
        "prompt_tokens": tokens["prompt"], "completion_tokens": tokens["completion"],
        "retries": tokens["retries"], "wall_time_s": round(wall_s, 3),
    }
    write_json(stats, out / "stats.json")
    return out
