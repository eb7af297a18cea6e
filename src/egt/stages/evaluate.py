"""`egt eval`: a judge on the reward benchmarks, in both orders, with voting.

    egt eval --benchmark vlrewardbench --data vl_rewardbench.jsonl --image-root images/ \\
             --model runs/x/rl/model --output runs/x/eval/vlrb          # both orders, greedy
    egt eval ... --orders chosen-first                                   # the public scripts' protocol
    egt eval ... --samples 5 --temperature 1.0                           # voting@5
    egt eval ... --model http://localhost:8000/v1 --served_model judge   # a served judge (vllm serve)
    torchrun --nproc_per_node 8 -m egt.cli eval ...                      # 8 processes, rank 0 writes
    egt eval ... --shard 2/8                                             # independent job 2 of 8, one folder
    egt compare runs/a/eval/vlrb runs/b/eval/vlrb                        # side-by-side table (egt.stages.compare)

Benchmarks: vlrewardbench, mmrb (Multimodal RewardBench), mmrlhf
(MM-RLHF-RewardBench), read by `egt.data.readers.load_benchmark`; synthetic and
pairs read an egt pairs file. Each pair is judged with the judge prompt
(`egt.core.prompts`), with the chosen response shown first, second (`--orders
both`, the default), or in one order per pair picked by a seeded hash
(`random`). `--samples K` draws K sampled judgements per order (K = 1 is
greedy) and takes the plurality vote; the vote and metric rules are in
`egt.stages.metrics`.

Output folder:
- judgements.jsonl  append-only log, one line per judged (pair, order), written
  after every batch; a rerun skips the batches it holds whole and judges a batch
  a kill left partly written (a torn line) again whole: batches are fixed
  positions of the list of (pair, order) units (egt.core.files.batches_to_run), so
  a resumed run's judgements equal an uninterrupted run's to the bit.
- fingerprint.json  what the judgements depend on (egt.core.runfolder): the data's and
  every model file's SHA-256, image root, samples, decoding settings, dtype. A
  rerun with any of them changed is refused, naming what changed, while the
  log holds judgements (`overwrite=true` discards them); the orders and the
  batch size are not in it, so another `--orders` reuses the judged units. One
  process writes a folder at a time (`.egt.lock`).
- predictions.jsonl one row per benchmark row, readable by the public accuracy
  scripts: `rewards` = [score of chosen, score of rejected] (vote shares) from
  the chosen-first judgement (the random one with `--orders random`), the ids
  and category fields each script reads (VL-RewardBench `id`; Multimodal
  RewardBench `ID`, `Category`, `Meta.Category`, `Label`, `output` "[[A]]" or
  "[[B]]"; MM-RLHF `id` = the shared original id and `image`/`video` path), and
  egt's own fields (per order: verdicts, choices, texts, token counts).
- metrics.json, metrics.md   official metrics per view (chosen-first,
  chosen-second, both orders, random), order metrics, format failures, tokens,
  and abstention by entropy (`abstention`: AURC and accuracy at 100/90/80/50%
  coverage per view and entropy metric, egt.stages.abstention).
- risk_coverage.json, risk_coverage_<view>.png   the risk-coverage curves.

Several processes. The units (pair, order) are cut into blocks of batch_size / samples, in the
order one process judges them; one process generates each block as one batch. Under a launcher
(accelerate launch, torchrun) rank r of w judges blocks b % w == r; an independent job
(`shard=i/n`, `slurm`, `env`: egt.core.shards) blocks b % n == i (over its ranks when it is a
world). Each writes its own journal `shards/judgements.<slot>-of-<count>.jsonl`; rank 0 (of a
shard job: the last job to finish) folds them into judgements.jsonl in the one-process order and
writes the outputs, so they equal a one-process run's byte for byte (tested on CPU: torchrun with
2 processes, 3 shard jobs).

A served judge (`model=http(s)://...`, egt.judge.endpoint, as `egt judge`): one request per
judgement; the stored entropies are UPPER bounds from the server's top `top_logprobs` log-probs
(`vocab_size` sets the bound), what abstention then ranks by.

Every judgement's entropies (answer, sentence, mean, max; egt.model.entropy) are
computed from the raw logits while it is generated (greedy too) and stored in
judgements.jsonl (`entropies_nats`); a log written before egt stored them has
those judgements redone on the next run (with a message).

Departures from the public scripts: a judgement with no readable verdict is
wrong (rewards [0, 0]); R1-Reward's scripts instead read the last digit of the
text and count anything but "1" as picking response 2. Other departures are
listed in `egt.stages.metrics`.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field, field_validator, model_validator

from egt.core import runfolder
from egt.core.config import StageConfig, save_config
from egt.core.errors import DataError, EgtError
from egt.core.files import Journal, check_unique_ids, write_json, write_text
from egt.core.images import ImageOptions, image_settings
from egt.core.records import PreferencePair, read_pairs, write_rows
from egt.core.runfolder import merge_lock, open_run_folder
from egt.core.shards import ALL, SHARD_HELP, Shard, blocks, fold_journals, load_all, parse_shard, slot_journal
from egt.core.shards import slot_journals, wants_process_group
from egt.judge.api import is_endpoint
from egt.model.loading import MAX_PIXELS_HELP, MIN_PIXELS_HELP, TorchDtype, check_model_folder
from egt.reporting.tables import markdown_table
from egt.stages import metrics as M
from egt.stages.abstention import abstention_markdown, abstention_summary, write_risk_coverage

# Where the chosen response is shown in each of eval's orders (PreferencePair.chosen_at; the verdict is a position).
CHOSEN_POSITION = {"chosen_first": 1, "chosen_second": 2}
VIEW_TITLES = {"chosen_first": "chosen first", "chosen_second": "chosen second",
               "both_orders": "both orders", "random": "random order"}
LOG_NAME = "judgements.jsonl"
# What `egt eval` writes in its folder (eval_settings.json: written by egt before the fingerprint).
OWNED = (LOG_NAME, "predictions.jsonl", "metrics.json", "metrics.md", "config.yaml", "eval_settings.json")


class Config(StageConfig, ImageOptions):
    benchmark: Literal["vlrewardbench", "mmrb", "mmrlhf", "synthetic", "pairs"] | None = Field(
        None, description="benchmark format of --data")
    data: Path | None = Field(None, description="benchmark file (or egt pairs file for synthetic/pairs)")
    image_root: Path | None = Field(None, description="folder relative image paths start from and every image "
                                                      "stays inside (default: the data file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    overwrite: bool = Field(False, description="discard judgements of other inputs or settings in output")
    model: str | None = Field(None, description="judge checkpoint folder (HF format), or the http(s) URL of an "
                                                "OpenAI-compatible server (e.g. http://localhost:8000/v1)")
    orders: Literal["chosen-first", "both", "random"] = Field(
        "both", description="chosen-first: public-script protocol; both: each pair twice; random: seeded per pair")
    samples: int = Field(1, ge=1, description="judgements per order; K > 1 samples and takes the majority vote")
    temperature: float = Field(1.0, gt=0, description="sampling temperature when samples > 1")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling when samples > 1")
    max_new_tokens: int = Field(4096, ge=1,
                                description="as the public R1-Reward scripts; a cut-off judgement has no verdict")
    batch_size: int = Field(16, ge=1, description="judgements generated per batch")
    seed: int = Field(0, description="seeds the sampled judgements and the random orders")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:1, ...")
    dtype: TorchDtype = Field("auto", description="model dtype: auto, bfloat16, float16, float32 (or bf16, fp16, fp32)")
    processor_max_pixels: int | None = Field(None, ge=1, description=MAX_PIXELS_HELP)
    processor_min_pixels: int | None = Field(None, ge=1, description=MIN_PIXELS_HELP)
    limit: int | None = Field(None, ge=1, description="judge only the first N pairs")
    on_error: Literal["fail", "skip"] = Field("fail", description="bad benchmark rows (and images that are missing, "
                                                                  "not images or above max_image_pixels): stop, or "
                                                                  "skip and count")
    progress: bool = True
    output: Path | None = Field(None, description="run folder")
    shard: str | None = Field(None, description=SHARD_HELP)
    # a served judge (model = http(s) URL; egt.judge.endpoint)
    served_model: str | None = Field(None, description="endpoint: the model name; None = the one the server lists")
    api_key_env: str | None = Field(None, description="endpoint: environment variable holding the API key")
    top_logprobs: int = Field(20, ge=0, le=20, description="endpoint: log-probs per token for entropy bounds")
    vocab_size: int = Field(152064, ge=2, description="endpoint: the judge's vocabulary size, for the upper bound")
    concurrency: int = Field(8, ge=1, description="endpoint: requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="endpoint: per-request timeout")
    max_retries: int = Field(2, ge=0, description="endpoint: retries of a failed request")

    @field_validator("model", mode="before")
    @classmethod
    def _path_as_text(cls, value):
        return str(value) if isinstance(value, Path) else value   # a folder given as a Path, as before URLs

    @model_validator(mode="after")
    def _needs_inputs(self):
        missing = [k for k in ("benchmark", "data", "model", "output") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"missing {', '.join('--' + k for k in missing)}")
        return self


# ------------------------------------------------------------------ pairs and units

def load_pairs(cfg: Config) -> tuple[list[PreferencePair], list[dict]]:
    """The benchmark rows as pairs, and the rows skipped as bad (on_error=skip)."""
    if cfg.benchmark in ("synthetic", "pairs"):
        pairs, skipped = read_pairs(cfg.data, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits), []
    else:
        from egt.data.readers import load_benchmark

        result = load_benchmark(cfg.benchmark, cfg.data, cfg.image_root, on_error=cfg.on_error,
                                allow_absolute_paths=cfg.allow_absolute_paths, limits=cfg.image_limits)
        for warning in result.warnings[:20]:
            print(f"warning: {warning}", file=sys.stderr)
        if len(result.warnings) > 20:
            print(f"warning: ... and {len(result.warnings) - 20} more", file=sys.stderr)
        pairs, skipped = result.pairs, result.skipped
    check_unique_ids([p.id for p in pairs], cfg.data)
    pairs = pairs[:cfg.limit] if cfg.limit else pairs
    # Every image inside its root and within the pixel cap (from its header), before any work: a bad one
    # stops the run naming its row, or with on_error=skip is skipped and counted like any bad row.
    kept = []
    for pair in pairs:
        try:
            pair.check_images(sizes=True)
        except DataError as exc:
            if cfg.on_error != "skip":
                raise
            skipped.append(exc.as_dict())
            continue
        kept.append(pair)
    if len(kept) < len(pairs):
        print(f"warning: {len(pairs) - len(kept)} pair(s) skipped for their images (first: "
              f"{DataError(**skipped[-(len(pairs) - len(kept))])})", file=sys.stderr)
    return kept, skipped


def _hash_int(*parts) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def random_order(pair_id: str, seed: int) -> str:
    """The one order of a pair under --orders random (stable across runs and machines)."""
    return "chosen_first" if _hash_int("order", seed, pair_id) % 2 == 0 else "chosen_second"


def orders_of(pair_id: str, orders: str, seed: int) -> list[str]:
    if orders == "both":
        return ["chosen_first", "chosen_second"]
    if orders == "chosen-first":
        return ["chosen_first"]
    return [random_order(pair_id, seed)]


def unit_key(pair_id: str, order: str) -> str:
    return f"{pair_id}\t{order}"


# ------------------------------------------------------------------ resumable log

def judgement_log(path: Path) -> Journal:
    """The append-only judgement log (egt.core.files.Journal): one record per judged (pair, order), by `key`."""
    return Journal(path, key="key")


def fingerprint(cfg: Config) -> dict:
    """What decides a judgement's text (egt.core.runfolder): a rerun in the same folder must match it."""
    sampled = cfg.samples > 1
    settings = {"benchmark": cfg.benchmark, "samples": cfg.samples, "max_new_tokens": cfg.max_new_tokens,
                "temperature": cfg.temperature if sampled else None, "top_p": cfg.top_p if sampled else None,
                "seed": cfg.seed if sampled else None, "dtype": cfg.dtype,
                "image_root": None if cfg.image_root is None else str(Path(cfg.image_root).resolve()),
                "allow_absolute_paths": cfg.allow_absolute_paths, **image_settings(cfg.image_limits),
                # which pairs are judged as one batch and which shard job owns them (egt.core.shards): a rerun or a
                # job cutting them otherwise would judge other batches and, as a shard job, overlap another's slice
                "batch_size": cfg.batch_size}
    settings.update({k: getattr(cfg, k) for k in ("processor_max_pixels", "processor_min_pixels")
                     if getattr(cfg, k) is not None})   # only when set: older folders still resume
    if is_endpoint(cfg.model):
        # What a served judge's judgements and entropy bounds depend on; its URL and served model name stand for
        # its weights, which cannot be hashed (as egt judge's egt.judge.verdicts.judge_fingerprint).
        settings.update(endpoint=cfg.model.rstrip("/"), served_model=cfg.served_model, top_logprobs=cfg.top_logprobs,
                        vocab_size=cfg.vocab_size)
        return runfolder.fingerprint(inputs={"data": cfg.data}, settings=settings)
    return runfolder.fingerprint(inputs={"data": cfg.data}, models={"model": cfg.model}, settings=settings)


def _has_judgements(out: Path) -> bool:
    return any(path.exists() and path.stat().st_size > 0 for path in [out / LOG_NAME, *slot_journals(out, LOG_NAME)])


def open_eval_folder(cfg: Config, main: bool = True, share=None, shard: Shard | None = None):
    """The eval folder, locked and claimed (egt.core.runfolder.open_run_folder): a folder holding
    judgements of other inputs or settings is refused (see the module docstring). `main`, `share`: the
    ranks of a launched world; `shard`: an independent job's slice (egt.core.shards)."""
    out = Path(cfg.output)
    return open_run_folder(out, "eval", fingerprint=lambda: fingerprint(cfg), owned=(*OWNED, "shards"),
                           overwrite=cfg.overwrite, has_results=lambda: _has_judgements(out), main=main, share=share,
                           shard=shard)


# ------------------------------------------------------------------ judging

# list[generation.JudgeRequest] -> list[entropy.ScoredJudgement] (or generation.Judgement: no entropies)
JudgeFn = Callable[[list], list]


def endpoint_backend(cfg: Config):
    """The served judge's backend (egt.judge.endpoint); without `served_model` it asks the server for its one
    model's name."""
    from egt.judge.endpoint import EndpointBackend

    return EndpointBackend(cfg.model, served_model=cfg.served_model, api_key_env=cfg.api_key_env,
                           top_logprobs=cfg.top_logprobs, vocab_size=cfg.vocab_size, concurrency=cfg.concurrency,
                           timeout_s=cfg.timeout_s, max_retries=cfg.max_retries)


def model_judge_fn(cfg: Config, device=None) -> JudgeFn:
    """generation.judge on the loaded checkpoint, with this run's decoding settings and per-judgement
    entropies (egt.judge.api.LocalBackend: one generation path for eval and the judge API); for an
    http(s) URL, the served judge (egt.judge.endpoint: entropies are the upper bounds from its top-k
    log-probs). `device`: this process's device (a rank of a launched world), else cfg.device."""
    if is_endpoint(cfg.model):
        backend = endpoint_backend(cfg)
    else:
        from egt.judge.api import LocalBackend

        backend = LocalBackend(cfg.model, device=str(device) if device is not None else cfg.device, dtype=cfg.dtype,
                               batch_size=cfg.batch_size, max_pixels=cfg.processor_max_pixels,
                               min_pixels=cfg.processor_min_pixels)

    def judge_fn(requests):
        return backend.run(requests, temperature=cfg.temperature, top_p=cfg.top_p,
                           max_new_tokens=cfg.max_new_tokens)
    return judge_fn


def entropy_record(group) -> dict | None:
    """Per-metric lists (one value per judgement, None where undefined); None if a judgement has no entropies."""
    from egt.judge.api import ENTROPY_METRICS, response_values

    values = [response_values(g.entropy) for g in group]
    if not values or any(v is None for v in values):
        return None
    return {m: [v[m] for v in values] for m in ENTROPY_METRICS}


def _needs_judging(record: dict | None) -> bool:
    """Not judged yet, or judged before egt stored per-judgement entropies (redone)."""
    return record is None or "entropies_nats" not in record


def eval_units(pairs: list[PreferencePair], cfg: Config) -> list[tuple[PreferencePair, str]]:
    """Every judged (pair, order), in the order one process judges them."""
    return [(pair, order) for pair in pairs for order in orders_of(pair.id, cfg.orders, cfg.seed)]


def unit_blocks(units: list, cfg: Config) -> list[range]:
    """The units' batches (egt.core.shards.blocks): one process judges block b as one batch, and block b
    belongs to slot b % count of a split run, so a split run generates the same batches."""
    return blocks(len(units), max(1, cfg.batch_size // cfg.samples))


def judge_pending(pairs: list[PreferencePair], cfg: Config, judge_fn: JudgeFn, log_path: Path,
                  slot: Shard = ALL, journal: Path | None = None) -> dict[str, dict]:
    """Judge every (pair, order) of `slot`'s blocks not yet in the logs, appending a batch at a time to
    `journal` (default `log_path`); returns every record of the folder's logs by key."""
    from tqdm.auto import tqdm

    from egt.model.entropy import as_scored
    from egt.model.generation import JudgeRequest, judgement_seed

    journal = Path(journal or log_path)
    log = judgement_log(journal)
    done = load_all(log_path.parent, log_path.name, "key", own=journal)
    units = eval_units(pairs, cfg)
    keys = [unit_key(p.id, o) for p, o in units]
    stale = sum(key in done and _needs_judging(done[key]) for key in keys)
    if stale:
        print(f"egt eval: {stale} judgement(s) in {log_path} predate per-judgement entropies; judging them again",
              file=sys.stderr)
    k = cfg.samples
    mine = [block for b, block in enumerate(unit_blocks(units, cfg)) if slot.owns(b)]
    # Fixed batches (unit_blocks): a batch a kill left partly written is judged again whole, so the resumed
    # run's batches (hence padding, hence entropies to the last bit) are an uninterrupted run's
    # (as egt.core.files.batches_to_run, over this slot's blocks).
    batches = [[units[i] for i in block] for block in mine if any(_needs_judging(done.get(keys[i])) for i in block)]
    total, todo = sum(len(block) for block in mine), sum(len(batch) for batch in batches)
    bar = tqdm(total=total, initial=total - todo, desc="eval", unit="pair-order", disable=not cfg.progress)
    for batch in batches:
        requests = [JudgeRequest(p.chosen_at(CHOSEN_POSITION[o]),
                                 None if k == 1 else judgement_seed(cfg.seed, unit_key(p.id, o), i))
                    for p, o in batch for i in range(k)]
        judgements = [as_scored(j) for j in judge_fn(requests)]
        if len(judgements) != len(requests):
            raise RuntimeError(f"judge returned {len(judgements)} judgements for {len(requests)} requests")
        records = []
        for j, (pair, order) in enumerate(batch):
            group = judgements[j * k:(j + 1) * k]
            records.append({"key": unit_key(pair.id, order), "id": pair.id, "order": order,
                            "verdicts": [g.verdict.verdict or 0 for g in group],
                            "format_ok": [bool(g.verdict.format_ok) for g in group],
                            "n_tokens": [g.n_tokens for g in group],
                            "texts": [g.text for g in group], "entropies_nats": entropy_record(group)})
        log.append(records)
        done.update((r["key"], r) for r in records)
        bar.update(len(batch))
    bar.close()
    return done


# ------------------------------------------------------------------ predictions

def order_result(record: dict) -> dict:
    """Choices, vote and official correctness of one judged (pair, order)."""
    position = CHOSEN_POSITION[record["order"]]
    choices = [M.choice_of(v or None, position) for v in record["verdicts"]]
    choice, rewards = M.majority_vote(choices)
    return {"verdicts": record["verdicts"], "choices": choices, "choice": choice, "rewards": rewards,
            "correct": M.is_correct(rewards), "format_ok": record["format_ok"],
            "n_tokens": record["n_tokens"], "texts": record["texts"], "entropies_nats": record.get("entropies_nats")}


def official_fields(pair: PreferencePair, benchmark: str, order: str, correct: bool) -> dict:
    """The fields the benchmark's public accuracy script reads (besides `rewards`)."""
    meta = pair.meta or {}
    if benchmark == "mmrlhf":
        media = meta.get("media") or "image"
        path = meta.get("media_path") or ""
        if M.mmrlhf_category(path) != pair.category:  # the script reads the category from this path
            path = f"{pair.category}/{pair.id}"
        return {"id": meta.get("group_id", pair.id), media: path}
    if benchmark == "mmrb":
        raw = (meta.get("mmrb_meta") or {}).get("Category") or pair.category.split("/")[0]
        label = "A" if order == "chosen_first" else "B"
        picked = label if correct else ("B" if label == "A" else "A")
        return {"ID": meta.get("original_id", pair.id), "Category": raw, "Meta": {"Category": raw},
                "Label": label, "output": f"[[{picked}]]"}
    return {"id": meta.get("original_id", pair.id)}


def build_predictions(pairs: list[PreferencePair], log: dict[str, dict], cfg: Config) -> list[dict]:
    rows = []
    for pair in pairs:
        orders = orders_of(pair.id, cfg.orders, cfg.seed)
        results = {o: order_result(log[unit_key(pair.id, o)]) for o in orders}
        headline = orders[0]  # chosen_first, or the one random order
        row = {**official_fields(pair, cfg.benchmark, headline, results[headline]["correct"]),
               "egt_id": pair.id, "label": pair.label, "category": pair.category, "order": headline,
               "rewards": results[headline]["rewards"], "correct": results[headline]["correct"]}
        if len(orders) == 2:
            first, second = results["chosen_first"]["choice"], results["chosen_second"]["choice"]
            row["both_correct"] = first == M.CHOSEN and second == M.CHOSEN
            row["position_consistent"] = first is not None and first == second
        row["judgements"] = results
        rows.append(row)
    return rows


# ------------------------------------------------------------------ metrics

def benchmark_metrics(benchmark: str, rows: list[dict], correct: list[bool], has_verdict: list[bool]) -> dict:
    """The benchmark's official metrics for one view (one correctness per row)."""
    categories = [r["category"] for r in rows]
    if benchmark == "vlrewardbench":
        return M.vlrewardbench_metrics([r["id"] for r in rows], correct, has_verdict)
    if benchmark == "mmrb":
        return M.mmrb_metrics([r["ID"] for r in rows], categories, correct)
    if benchmark == "mmrlhf":
        return M.mmrlhf_metrics([r["id"] for r in rows], categories, correct)
    return M.category_accuracy([c or "all" for c in categories], correct)


def view_results(rows: list[dict], cfg: Config) -> dict[str, tuple[list[bool], list[bool]]]:
    """Per view (chosen_first, chosen_second, both_orders, random): correctness and has-verdict per row."""
    views: dict[str, tuple[list[bool], list[bool]]] = {}
    if cfg.orders == "random":
        views["random"] = ([r["correct"] for r in rows],
                           [r["judgements"][r["order"]]["choice"] is not None for r in rows])
    else:
        for order in ("chosen_first", "chosen_second") if cfg.orders == "both" else ("chosen_first",):
            views[order] = ([r["judgements"][order]["correct"] for r in rows],
                            [r["judgements"][order]["choice"] is not None for r in rows])
    if cfg.orders == "both":
        views["both_orders"] = ([r["both_correct"] for r in rows],
                                [all(j["choice"] is not None for j in r["judgements"].values()) for r in rows])
    return views


def compute_metrics(rows: list[dict], cfg: Config, n_skipped: int = 0) -> dict:
    views = view_results(rows, cfg)
    per_view = {name: benchmark_metrics(cfg.benchmark, rows, c, v) for name, (c, v) in views.items()}
    headline = "random" if cfg.orders == "random" else "chosen_first"
    summary = {k: v for k, v in per_view[headline].items() if k not in ("categories", "n")}
    if cfg.orders == "chosen-first":
        summary["chosen_first_accuracy"] = per_view["chosen_first"]["accuracy"]
    if cfg.orders == "both":
        summary.update(M.order_metrics([r["judgements"]["chosen_first"]["choice"] for r in rows],
                                       [r["judgements"]["chosen_second"]["choice"] for r in rows]))
    judged = [j for r in rows for j in r["judgements"].values()]
    summary.update(M.judgement_stats([ok for j in judged for ok in j["format_ok"]],
                                     [v in (1, 2) for j in judged for v in j["verdicts"]],
                                     [n for j in judged for n in j["n_tokens"]]))
    return {"benchmark": cfg.benchmark, "data": str(cfg.data), "model": str(cfg.model), "orders": cfg.orders,
            "samples": cfg.samples, "temperature": cfg.temperature if cfg.samples > 1 else None,
            "n_pairs": len(rows), "n_skipped": n_skipped, "headline_view": headline,
            "overall": summary, "views": per_view,
            "abstention": abstention_summary(rows, {name: c for name, (c, _) in views.items()}, cfg.samples)}


def metrics_markdown(result: dict) -> str:
    s = result["overall"]
    lines = [f"# egt eval: {result['benchmark']}", "",
             f"Model `{result['model']}` on `{result['data']}`: {result['n_pairs']} pairs "
             f"({result['n_skipped']} skipped), orders {result['orders']}, "
             + (f"voting@{result['samples']} (T={result['temperature']})" if result["samples"] > 1 else "greedy")
             + f". Headline view: {VIEW_TITLES[result['headline_view']]}.", ""]
    lines.append(markdown_table(["metric", "value"], [[k, v] for k, v in s.items()], digits=4))
    views = result["views"]
    names = list(views)
    cats = list(dict.fromkeys(c for v in views.values() for c in v["categories"]))
    if cats:
        acc_plus = any("acc_plus" in views[n]["categories"].get(c, {}) for n in names for c in cats)
        headers = ["category", "n"] + [VIEW_TITLES[n] for n in names] + (
            [f"acc+ {VIEW_TITLES[n]}" for n in names] if acc_plus else [])
        table = []
        for c in cats:
            first = next(views[n]["categories"][c] for n in names if c in views[n]["categories"])
            table.append([c, first["n"]] + [views[n]["categories"].get(c, {}).get("accuracy") for n in names]
                         + ([views[n]["categories"].get(c, {}).get("acc_plus") for n in names] if acc_plus else []))
        lines += ["## Accuracy per category", "", markdown_table(headers, table, digits=4)]
    lines += ["Correct = the judge picks the chosen response (`rewards[0] > rewards[1]`); no verdict is wrong.", ""]
    lines += abstention_markdown(result.get("abstention"), VIEW_TITLES)
    return "\n".join(lines)


# ------------------------------------------------------------------ entry point

def evaluate_pairs(pairs: list[PreferencePair], judge_fn: JudgeFn, cfg: Config, n_skipped: int = 0) -> Path:
    """Judge (resuming), then write predictions.jsonl, metrics.json and metrics.md, in the locked and
    claimed output folder (`open_eval_folder`); one process."""
    with open_eval_folder(cfg):
        log = judge_pending(pairs, cfg, judge_fn, Path(cfg.output) / LOG_NAME)
        return write_outputs(pairs, log, cfg, n_skipped)


def write_outputs(pairs: list[PreferencePair], log: dict[str, dict], cfg: Config, n_skipped: int) -> Path:
    """Fold the split runs' journals into judgements.jsonl (if any), then write config.yaml,
    predictions.jsonl, metrics.json, metrics.md and the risk-coverage files (holding the folder's lock)."""
    out = Path(cfg.output)
    fold_journals(out, LOG_NAME, "key", [unit_key(p.id, o) for p, o in eval_units(pairs, cfg)])
    save_config(cfg.model_copy(update={"shard": None}), out / "config.yaml")   # how the work was split is no result
    rows = build_predictions(pairs, log, cfg)
    write_rows(rows, out / "predictions.jsonl")
    result = compute_metrics(rows, cfg, n_skipped)
    write_json(result, out / "metrics.json")
    write_risk_coverage(rows, {name: c for name, (c, _) in view_results(rows, cfg).items()}, cfg.samples, out,
                        VIEW_TITLES)
    write_text(metrics_markdown(result), out / "metrics.md")
    return out


def run(cfg: Config) -> Path:
    """Judge the units this process owns (all of them, one process), then (rank 0) write the outputs."""
    job = parse_shard(cfg.shard)   # an independent job's slice (egt.core.shards), or None
    if not is_endpoint(cfg.model):
        check_model_folder(cfg.model)
    elif cfg.served_model is None:   # the name the server lists is part of the fingerprint
        cfg = cfg.model_copy(update={"served_model": endpoint_backend(cfg).model})
    pairs, skipped = load_pairs(cfg)
    if not pairs:
        raise EgtError(f"{cfg.data}: no pairs to evaluate")
    from egt.core.processes import Processes

    procs = Processes(cfg.device, group=wants_process_group(cfg.shard))
    out = Path(cfg.output)
    # a mismatched folder is refused before the model loads; rank 0 decides, the other ranks follow
    with open_eval_folder(cfg, main=procs.is_main, share=procs.from_main, shard=job):
        split = job is not None or procs.world > 1
        slot = (job or ALL).within(procs.rank, procs.world)
        journal = slot_journal(out, LOG_NAME, slot) if split else out / LOG_NAME
        units = eval_units(pairs, cfg)
        done = load_all(out, LOG_NAME, "key", own=journal)
        mine = [units[i] for b, block in enumerate(unit_blocks(units, cfg)) if slot.owns(b) for i in block]
        # Load the model only when something is left to judge (a finished run just recomputes metrics).
        left = any(_needs_judging(done.get(unit_key(p.id, o))) for p, o in mine)
        judge_fn = model_judge_fn(cfg, procs.device(cfg.device)) if left else (lambda requests: [])
        judge_pending(pairs, cfg, judge_fn, out / LOG_NAME, slot=slot, journal=journal)
        procs.barrier()
        if not procs.is_main:
            return out
        log = load_all(out, LOG_NAME, "key", own=None if job is None else journal)
        if job is None:
            return write_outputs(pairs, log, cfg, n_skipped=len(skipped))
        left = sum(_needs_judging(log.get(unit_key(p.id, o))) for p, o in units)
        if left:
            print(f"egt eval: shard job {job.label} finished its units; {left} of {len(units)} are left to other "
                  f"jobs (the last to finish writes the outputs)")
            return out
        with merge_lock(out, "eval"):
            return write_outputs(pairs, load_all(out, LOG_NAME, "key", own=journal), cfg, n_skipped=len(skipped))
