"""`egt judge`: a trained judge's verdicts on a pairs file, with confidence and abstention by entropy.

    egt judge --model runs/sft/model --pairs pairs.jsonl --output runs/verdicts
    egt judge --model runs/sft/model --pairs pairs.jsonl --output runs/verdicts --coverage 0.8
    egt judge --model http://localhost:8000/v1 --api_key_env JUDGE_KEY --pairs pairs.parquet \\
              --output runs/verdicts --abstain_above 0.4 --abstain_metric max
    torchrun --nproc_per_node 8 -m egt.cli judge --model runs/sft/model ...   # 8 processes, rank 0 writes
    egt judge ... --shard 2/8                                              # independent job 2 of 8

Input: an egt pairs file (`id`, `images`, `question`, `response_1`, `response_2`; `label` is
optional: where every row has one, the summary reports accuracy). Each pair is compared by
egt.judge.api.Judge (both orders by default, `samples` judgements per order; see there for the vote
share, `orders_agree` and the entropies).

Abstention. `--abstain_above X` abstains where the pair's `abstain_metric` entropy (nats) is
above X; `--coverage C` keeps the share C of pairs with the lowest entropy (pairs with equal
entropy are kept together, so slightly more can be kept; egt.core.selective.abstain_mask). An undefined
entropy counts as the highest. With an endpoint the entropies are upper bounds (egt.judge.api). An
endpoint that returns no log-probs leaves only `abstain_metric=vote` (the vote entropy of the
choices: order disagreement, and sampled disagreement with samples > 1).

Output folder (a run folder, egt.core.runfolder: one writer at a time, `.egt.lock`, or one per shard slice):
- fingerprint.json  what the comparisons depend on: the SHA-256 of the pairs file and of every file of
  the model folder -- for an endpoint, its URL and served model name, as the weights behind a URL
  cannot be hashed -- and the judging settings (samples, orders, decoding, seed, dtype, image root). A
  rerun with any of them changed is refused, naming what changed, while the folder holds judgements
  (`overwrite=true` discards them); abstention settings, `limit` and the batch size can change freely.
- judgements.jsonl  append-only (egt.core.files.Journal), one comparison per pair with its traces, by
  id, written after every chunk; a rerun skips the chunks it holds whole and judges a chunk a kill left
  partly written again whole (egt.core.files.batches_to_run), so its entropies equal an uninterrupted
  run's to the bit. Split runs (below) write `shards/judgements.<slot>-of-<count>.jsonl` instead, folded
  into judgements.jsonl in input order by the process that writes the outputs.
- verdicts.jsonl    one row per pair, input order: `id`, `verdict` (1, 2 or null), `decision` (the
  verdict, "abstain", or null without a verdict), `confidence` (the winner's vote share),
  `vote_share`, `orders_agree`, `entropies` (nats), `entropy_kind`, `entropies_lower` (endpoint),
  `uncertainty` (the abstention metric's value), and `label`, `correct` when the input has labels.
- summary.json      counts, abstention threshold and coverage reached, accuracy on all and on
  the kept pairs when labelled.

Several processes: the pairs are cut into chunks of about batch_size judgements, in input order;
rank r of a launched world judges chunks b % w == r, an independent job (`shard=i/n`, `slurm`,
`env`; egt.core.shards) chunks b % n == i, each into its own `shards/judgements.<slot>-of-<count>.jsonl`;
rank 0 (of shard jobs: the last to finish) folds them into judgements.jsonl and writes the outputs,
equal to one process's (summary.json but its wall time).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from egt.core import runfolder, selective
from egt.core.errors import DataError, EgtError
from egt.core.files import Journal, check_unique_ids, write_json
from egt.core.images import DEFAULT_LIMITS, ImageLimits, image_settings
from egt.core.records import PreferencePair, image_root_of, read_rows, write_rows
from egt.core.shards import ALL, SHARD_HELP, Shard, blocks, fold_journals, load_all, parse_shard, slot_journal
from egt.core.shards import slot_journals, wants_process_group
from egt.judge.api import Judge, JudgeOptions, build_backend, is_endpoint, orders_for

LOG_NAME = "judgements.jsonl"
# What `egt judge` writes in its folder (judge_settings.json: what egt wrote before run folders had fingerprints).
OWNED = (LOG_NAME, "verdicts.jsonl", "summary.json", "judge_settings.json", "shards")
AbstainMetric = Literal["answer", "sentence", "mean", "max", "vote"]


class Config(JudgeOptions):
    pairs: Path = Field(..., description="pairs file (.parquet or .jsonl); `label` optional")
    output: Path = Field(..., description="output folder")
    abstain_metric: AbstainMetric = Field("max", description="entropy used to abstain")
    abstain_above: float | None = Field(None, description="abstain where the entropy (nats) is above this")
    coverage: float | None = Field(None, gt=0, le=1, description="keep this share of pairs, the least uncertain")
    limit: int | None = Field(None, ge=1, description="judge only the first N pairs")
    image_root: Path | None = Field(None, description="folder image paths resolve against and stay inside "
                                                      "(default: the pairs file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    overwrite: bool = Field(False, description="discard judgements of another pairs file, model or settings in output")
    shard: str | None = Field(None, description=SHARD_HELP)
    progress: bool = True

    @model_validator(mode="after")
    def _one_abstention_rule(self):
        if self.abstain_above is not None and self.coverage is not None:
            raise ValueError("give abstain_above or coverage, not both")
        return self


# ---------------------------------------------------------------- input

def read_judge_pairs(path: Path, image_root: Path | None = None, allow_absolute_paths: bool = False,
                     limits: ImageLimits = DEFAULT_LIMITS) -> tuple[list[PreferencePair], bool]:
    """The pairs of a file whose `label` may be absent, and whether every row has one; images are
    checked against their root as `egt.core.records.read_pairs` checks them, and carry `limits`."""
    path = Path(path)
    root, recorded = image_root_of(path, image_root)
    rows = read_rows(path)
    first_line = 1 if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else 0  # as read_pairs counts
    pairs, labelled = [], True
    for i, row in enumerate(rows):
        if row.get("label") is None:
            labelled = False
            row = {**row, "label": 1}  # a placeholder: the judge never sees it
        pairs.append(PreferencePair.from_row(row, str(path), i + first_line, base_dir=root,
                                             allow_absolute=allow_absolute_paths, recorded_root=recorded,
                                             limits=limits))
    check_unique_ids([p.id for p in pairs], path)
    return pairs, labelled and bool(pairs)


# ---------------------------------------------------------------- run folder and log

def judge_fingerprint(cfg: JudgeOptions, inputs: dict, served_model: str | None = None, **settings) -> dict:
    """What a judge's comparisons depend on (egt.core.runfolder.fingerprint), for `egt judge` and `egt rerank`:
    the `inputs` files' content, the model folder's files -- for an endpoint its URL and `served_model` (the
    name it serves; the weights behind a URL cannot be hashed) -- the judging settings, and `settings`."""
    sampled = cfg.samples > 1
    judging = {"samples": cfg.samples, "orders": cfg.orders, "max_new_tokens": cfg.max_new_tokens,
               "temperature": cfg.temperature if sampled else None, "top_p": cfg.top_p if sampled else None,
               "seed": cfg.seed if sampled else None, "sentence_agg": cfg.sentence_agg,
               **image_settings(cfg.image_limits), **settings,
               **{k: getattr(cfg, k) for k in ("processor_max_pixels", "processor_min_pixels")
                  if getattr(cfg, k, None) is not None}}   # only when set: older folders still resume
    if is_endpoint(cfg.model):
        judging.update(endpoint=cfg.model.rstrip("/"), served_model=served_model or cfg.served_model,
                       top_logprobs=cfg.top_logprobs, vocab_size=cfg.vocab_size)
        return runfolder.fingerprint(inputs=inputs, settings=judging)
    judging["dtype"] = cfg.dtype
    return runfolder.fingerprint(inputs=inputs, models={"model": cfg.model}, settings=judging)


def image_root_settings(image_root: Path | None, allow_absolute_paths: bool) -> dict:
    """Which images a relative path names: part of what a comparison depends on."""
    return {"image_root": None if image_root is None else str(Path(image_root).resolve()),
            "allow_absolute_paths": allow_absolute_paths}


def open_judge_early(cfg: JudgeOptions) -> Judge | None:
    """An endpoint's Judge (it is asked for its model name now: part of the fingerprint); None for a local
    checkpoint, whose folder is only checked here and loaded when something is left to judge."""
    if is_endpoint(cfg.model):
        return Judge(build_backend(cfg), cfg)
    from egt.model.loading import check_model_folder

    check_model_folder(cfg.model)
    return None


def has_journal_records(path: Path) -> bool:
    return path.exists() and bool(Journal(path).read())


def _has_judgements(out: Path) -> bool:
    """The folder holds judgements: its journal, or a split run's journals under shards/."""
    return has_journal_records(out / LOG_NAME) or any(has_journal_records(p) for p in slot_journals(out, LOG_NAME))


def chunk_size(cfg: JudgeOptions) -> int:
    """Pairs per chunk: about batch_size judgements."""
    return max(1, cfg.batch_size // (cfg.samples * len(orders_for(cfg.orders))))


def pair_blocks(pairs: list[PreferencePair], cfg: Config) -> list[range]:
    """The pairs' chunks (egt.core.shards.blocks): one process judges chunk b in one compare_many call, and
    chunk b belongs to slot b % count of a split run, so a split run judges the same batches."""
    return blocks(len(pairs), chunk_size(cfg))


def judge_pending(pairs: list[PreferencePair], judge: Judge | None, cfg: Config, log: Journal,
                  slot: Shard = ALL, done: dict[str, dict] | None = None) -> dict[str, dict]:
    """Judge `slot`'s chunks that `done` (default: `log`'s records) does not hold whole, appending each chunk
    to `log`; returns `done` with them. Chunks are fixed (`pair_blocks`): one a kill left partly written is
    judged again whole (as egt.core.files.batches_to_run), so its entropies equal an uninterrupted run's to
    the bit. `judge`: None until first needed."""
    from tqdm.auto import tqdm

    done = log.load() if done is None else done
    mine = [block for b, block in enumerate(pair_blocks(pairs, cfg)) if slot.owns(b)]
    chunks = [[pairs[i] for i in block] for block in mine if not all(pairs[i].id in done for i in block)]
    total, todo = sum(len(block) for block in mine), sum(len(chunk) for chunk in chunks)
    with tqdm(total=total, initial=total - todo, desc="judge", unit="pair",
              disable=not cfg.progress, dynamic_ncols=True) as bar:
        per_pair = cfg.samples * len(orders_for(cfg.orders))
        for chunk in chunks:
            judge = judge or Judge(build_backend(cfg), cfg)
            shown = bar.n
            results = judge.compare_many(chunk, on_batch=lambda n: bar.update(n / per_pair))
            records = [{"key": p.id, "id": p.id, **c.to_dict()} for p, c in zip(chunk, results)]
            log.append(records)
            done.update((r["key"], r) for r in records)
            bar.update(shown + len(chunk) - bar.n)
    return done


# ---------------------------------------------------------------- verdicts

def uncertainty_values(records: list[dict], metric: str) -> list[float | None]:
    values = [r["entropies"].get(metric) for r in records]
    if metric != "vote" and all(v is None for v in values) and any(r["entropy_kind"] is None for r in records):
        raise EgtError(f"abstention by {metric} entropy is unavailable: the judge returned no log-probabilities "
                       "(serve it with log-probs, e.g. vLLM's --max-logprobs 20, or use abstain_metric=vote, "
                       "which needs only verdicts)")
    return values


def verdict_rows(pairs: list[PreferencePair], log: dict[str, dict], cfg: Config, labelled: bool) -> tuple[list, dict]:
    records = [log[p.id] for p in pairs]
    values = uncertainty_values(records, cfg.abstain_metric)
    if cfg.abstain_above is not None or cfg.coverage is not None:
        abstain = selective.abstain_mask(values, threshold=cfg.abstain_above, coverage=cfg.coverage)
    else:
        abstain = [False] * len(records)
    rows = []
    for pair, record, value, out in zip(pairs, records, values, abstain):
        row = {"id": pair.id, "verdict": record["verdict"],
               "decision": "abstain" if out else record["verdict"], "confidence": record["confidence"],
               "vote_share": record["vote_share"], "orders_agree": record["orders_agree"],
               "entropies": record["entropies"], "entropy_kind": record["entropy_kind"],
               "uncertainty": value}
        if record.get("entropies_lower") is not None:
            row["entropies_lower"] = record["entropies_lower"]
        if labelled:
            row["label"] = pair.label
            row["correct"] = record["verdict"] == pair.label
        rows.append(row)
    return rows, summarize(rows, cfg, values, labelled)


def summarize(rows: list[dict], cfg: Config, values: list, labelled: bool) -> dict:
    n = len(rows)
    kept = [r for r in rows if r["decision"] != "abstain"]
    agree = [r["orders_agree"] for r in rows if r["orders_agree"] is not None]
    threshold = cfg.abstain_above
    if cfg.coverage is not None:
        threshold = selective.coverage_threshold(values, cfg.coverage)
    summary = {
        "pairs": n, "verdict_1": sum(r["verdict"] == 1 for r in rows), "verdict_2": sum(r["verdict"] == 2 for r in rows),
        "no_verdict": sum(r["verdict"] is None for r in rows),
        "orders_agree_rate": selective.accuracy(agree) if agree else None,
        "entropy_kind": rows[0]["entropy_kind"] if rows else None,
        "abstain_metric": cfg.abstain_metric, "abstain_above": cfg.abstain_above, "coverage_asked": cfg.coverage,
        "threshold_nats": threshold, "abstained": n - len(kept), "coverage": len(kept) / n if n else None,
    }
    if labelled:
        summary["accuracy"] = selective.accuracy([r["correct"] for r in rows])
        summary["accuracy_kept"] = selective.accuracy([r["correct"] for r in kept])
        summary["aurc"] = selective.aurc(values, [r["correct"] for r in rows])
    return summary


# ---------------------------------------------------------------- the command

def run(cfg: Config) -> Path:
    """Judge the pairs this process owns (all of them, one process), then (rank 0) write the outputs."""
    from egt.core.processes import Processes
    from egt.core.runfolder import merge_lock, open_run_folder

    started = time.perf_counter()
    out = Path(cfg.output)
    job = parse_shard(cfg.shard)   # an independent job's slice (egt.core.shards), or None
    pairs, labelled = read_judge_pairs(cfg.pairs, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    if not pairs:
        raise DataError(str(cfg.pairs), None, None, "no pairs to judge")
    pairs = pairs[:cfg.limit] if cfg.limit else pairs
    for pair in pairs:
        pair.check_images(sizes=True)   # inside the root and within the pixel cap, before any work
    judge = open_judge_early(cfg)
    procs = Processes(cfg.device, group=wants_process_group(cfg.shard))
    if judge is None:   # a local checkpoint, loaded when something is left: on this rank's device
        cfg = cfg.model_copy(update={"device": str(procs.device(cfg.device))})

    def fingerprint() -> dict:
        # chunk_pairs: which pairs are judged as one batch and which job owns them (egt.core.shards); a job or
        # rerun cutting them otherwise would judge other batches and, as a shard job, overlap another's slice
        return judge_fingerprint(cfg, {"pairs": cfg.pairs}, judge.backend.model if judge else None,
                                 chunk_pairs=chunk_size(cfg),
                                 **image_root_settings(cfg.image_root, cfg.allow_absolute_paths))

    with open_run_folder(out, "judge", fingerprint=fingerprint, owned=OWNED, overwrite=cfg.overwrite,
                         has_results=lambda: _has_judgements(out), main=procs.is_main, share=procs.from_main,
                         shard=job):
        split = job is not None or procs.world > 1
        slot = (job or ALL).within(procs.rank, procs.world)
        log = Journal(slot_journal(out, LOG_NAME, slot) if split else out / LOG_NAME, key="key")
        judge_pending(pairs, judge, cfg, log, slot, load_all(out, LOG_NAME, "key", own=log.path))
        procs.barrier()
        if not procs.is_main:
            return out
        done = load_all(out, LOG_NAME, "key", own=None if job is None else log.path)
        if job is not None:
            left = sum(p.id not in done for p in pairs)
            if left:
                print(f"egt judge: shard job {job.label} finished its pairs; {left} of {len(pairs)} are left to "
                      f"other jobs (the last to finish writes the outputs)")
                return out
            with merge_lock(out, "judge"):
                return write_outputs(pairs, load_all(out, LOG_NAME, "key", own=log.path), cfg, labelled, started)
        return write_outputs(pairs, done, cfg, labelled, started)


def write_outputs(pairs: list[PreferencePair], done: dict[str, dict], cfg: Config, labelled: bool,
                  started: float) -> Path:
    """Fold the split runs' journals into judgements.jsonl (if any); write verdicts.jsonl and summary.json."""
    out = Path(cfg.output)
    fold_journals(out, LOG_NAME, "key", [p.id for p in pairs])
    rows, summary = verdict_rows(pairs, done, cfg, labelled)
    write_rows(rows, out / "verdicts.jsonl")
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    write_json(summary, out / "summary.json")
    kept = f", {summary['abstained']} abstained (coverage {summary['coverage']:.3f})" if summary["abstained"] else ""
    accuracy = (f"; accuracy {summary['accuracy']:.4f}, on the kept pairs {summary['accuracy_kept']:.4f}"
                if labelled else "")
    print(f"egt judge: {summary['pairs']} pairs, {summary['no_verdict']} without a verdict{kept}{accuracy}")
    return out
