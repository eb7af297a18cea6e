"""`egt score` — stage 2: K sampled judgements per pair and their entropies.

    egt score --model runs/sft/model --pairs runs/pool.parquet --output runs/score --samples 8
    accelerate launch --multi_gpu --num_processes 8 -m egt.cli score --config configs/score.yaml  # N processes
    egt score --config configs/score.yaml --shard 2/8      # independent job 2 of 8 on the same folder
    egt score --config configs/score.yaml shard=slurm      # a SLURM array task (docs/examples/score_array.sbatch)
    egt score --output runs/score --merge                  # only merge finished shards

For each pair the judge writes K judgements (temperature T, top-p 1 and no top-k by
default, so the entropy is the model's own); `egt.model.generation.judge` records the entropy of
every generated token from the raw logits of its step (before top-p and sampling noise).
`egt.model.entropy` turns them into the per-response and per-pair values of docs/definitions.md. Output:

    <output>/scores.parquet    one row per pair: the pair's columns + egt.core.score_columns.SCORE_COLUMNS
    <output>/summary.json      pairs, parse failures, mean entropies, tokens, wall time
    <output>/tokens.parquet    with dump_tokens: one row per judgement (id, sample, token ids, texts, entropies)
    <output>/shards/           shard-00000.parquet + shard-00000.done (completion marker), ...
    <output>/fingerprint.json  what this folder scores (config, input hash, model files)

Determinism. Judgement k of pair `id` samples from its own random stream, seeded with
`judgement_seed(seed, id, k)`; shard i is pairs[i*S:(i+1)*S] of the input (S = shard_size)
and batches are formed inside a shard only, so a shard's output does not depend on how many
processes ran, which ran it, or whether the run was interrupted: reruns are bit-identical.

Resume. A shard is written atomically, then its marker; a rerun skips shards with a marker,
so after `kill -9` at any point the resumed run's merged file equals an uninterrupted run's.
The folder's fingerprint (egt.core.runfolder: the input's and every model file's SHA-256 and the
settings in FINGERPRINT_KEYS) is checked first: a rerun with any of them changed is refused,
naming what changed, while the folder holds finished shards (`overwrite=true` discards them); a
run that failed before finishing a shard leaves nothing that blocks its corrected rerun. One
run writes a folder at a time (`<output>/.egt.lock`; a second run is refused), except shard jobs.
Images stay inside `image_root` (default: the pairs file's folder; egt.core.records.resolve_image_path).

Distributed. Under `accelerate launch` process r scores shards i with i % world == r and
writes them itself; rank 0 waits at a gloo barrier (egt.core.processes: its own group, with a long
timeout, so uneven shards never time out, on CPU and GPU alike) and merges. The folder must be
shared. CPU-only machines: `accelerate launch --multi_gpu --num_processes N -m egt.cli score ...`
(or `torchrun --nproc_per_node N -m egt.cli score ...`); accelerate 1.x's `--cpu` starts ONE
process unless mpirun is configured. Without CUDA, egt score sets up gloo CPU processes.

Independent jobs (`shard=i/n`, `slurm` or `env`; egt.core.shards): job i owns the shards j with
j % n == i (split over its ranks when the job is itself a launched world), holds only its slice's
lock, and the last job to finish merges; the fingerprint claim refuses a job of other inputs or
settings. `--merge` is only needed when the last job could not merge (it died after its shards).

Teacher-forced mode (`mode=teacher_forced`): score the given completions in
`response_column` (a string or a list of strings per pair, e.g. the distilled `trace`) with
one forward pass each; no generation, K = the number of given completions.

vLLM backend (`backend=vllm`, extra `vllm`; egt.model.vllm_support): vLLM generates (same
per-judgement seeds, but vLLM's own random streams), then the entropies are exact from a Hugging
Face teacher-forced pass over the generated token ids (`vllm_entropy=exact`, needs room for both
models: lower `vllm_gpu_memory_utilization`), or bounded from vLLM's top-k log-probs
(`vllm_entropy=topk`, T must be 1): the score columns then hold the UPPER bounds and
`<metric>_lower_nats` columns the lower bounds (tokens.parquet: `token_entropies_lower_nats`);
the renormalised top-k entropy is never used. Under a launcher each process's engine runs on its
own GPU (`cuda:<local rank>`, vLLM's device_ids). On vLLM's CPU build (`make vllm-env`) chunked
prefill is off (seeded requests fail with it there) and VLLM_CPU_KVCACHE_SPACE sizes the KV cache:

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m egt.cli score backend=vllm model=... pairs=... output=...

Deviations from the paper: the paper scores with answer-token entropy; every metric of
docs/definitions.md is written and the choice is made later (curate / analyze).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from egt.core import runfolder
from egt.core.config import StageConfig
from egt.core.errors import ConfigError, DataError, EgtError
from egt.core.files import write_json
from egt.core.images import ImageOptions, image_settings
from egt.core.records import read_pairs, read_rows, write_rows
from egt.core.processes import Processes
from egt.core.runfolder import merge_lock, open_run_folder
from egt.core.shards import ALL, SHARD_HELP, parse_shard, wants_process_group
from egt.core.score_columns import ENTROPY_COLUMNS, LOWER_BOUND_COLUMNS
from egt.model.loading import MAX_PIXELS_HELP, MIN_PIXELS_HELP, TorchDtype, check_model_folder, processor_size_kwargs

# What `egt score` writes in its folder (removed by overwrite, or when a failed run is replaced).
OWNED = ("shards", "scores.parquet", "summary.json", "tokens.parquet")
# Config keys that change the scores: a folder scored with other values cannot be resumed.
FINGERPRINT_KEYS = ("samples", "temperature", "top_p", "max_new_tokens", "batch_size", "shard_size", "seed", "mode",
                    "response_column", "sentence_agg", "dump_tokens", "dtype", "backend", "vllm_entropy",
                    "vllm_logprobs")
# Keys that change the scores only when set (left out of the fingerprint at their default, so folders scored
# before they existed still resume).
FINGERPRINT_IF_SET = ("processor_max_pixels", "processor_min_pixels")


class Config(StageConfig, ImageOptions):
    model: str | None = Field(None, description="judge checkpoint folder (required unless merge)")
    pairs: Path | None = Field(None, description="input pairs file, .parquet or .jsonl (required unless merge)")
    output: Path = Field(..., description="output folder")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside "
                                                      "(default: the pairs file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    overwrite: bool = Field(False, description="discard results of other inputs or settings in output")
    samples: int = Field(8, ge=1, description="K judgements per pair (generate mode)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature; entropies are taken at it")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; entropies stay full-vocabulary")
    max_new_tokens: int = Field(512, ge=1)
    batch_size: int = Field(16, ge=1, description="sequences per generate / forward call")
    shard_size: int = Field(64, ge=1, description="pairs per shard: the unit of resume and of work per process")
    seed: int = 0
    mode: Literal["generate", "teacher_forced"] = "generate"
    response_column: str = Field("trace", description="teacher_forced: column with the completion(s) to score")
    sentence_agg: Literal["mean", "max"] = Field("mean", description="sentence entropy: mean or max over sentences")
    dump_tokens: bool = Field(False, description="also write tokens.parquet (per-token entropies)")
    merge: bool = Field(False, description="only merge the finished shards of output into scores.parquet")
    shard: str | None = Field(None, description=SHARD_HELP)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (auto under accelerate: the process's device)")
    dtype: TorchDtype = Field("auto", description="auto | float32 | bfloat16 | float16 (or fp32, bf16, fp16)")
    backend: Literal["hf", "vllm"] = "hf"
    processor_max_pixels: int | None = Field(None, ge=1, description=MAX_PIXELS_HELP)
    processor_min_pixels: int | None = Field(None, ge=1, description=MIN_PIXELS_HELP)
    vllm_entropy: Literal["exact", "topk"] = Field("exact", description="vllm: HF teacher-forced pass or top-k bounds")
    vllm_logprobs: int = Field(20, ge=1, description="vllm topk: log-probs per token")
    vllm_gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    vllm_tensor_parallel_size: int = Field(1, ge=1)
    vllm_chunked_prefill: bool | None = Field(None, description="vLLM chunked prefill; None = off on vLLM's CPU build "
                                                                "(seeded sampling fails there with it), else vLLM's")
    vllm_max_model_len: int | None = Field(None, ge=1, description="vLLM context length (None: the model's)")
    vllm_extra: dict[str, Any] = Field(default_factory=dict, description="any other vllm.LLM keyword arguments, "
                                       "passed through (e.g. enforce_eager, max_num_seqs)")
    progress: bool = True


# ---------------------------------------------------------------- per-pair scoring (no I/O)

def _response_scores(judgement, tokenizer, sentence_agg: str, entropies=None):
    from egt.model.entropy import judgement_entropies

    return judgement_entropies(judgement, tokenizer, sentence_agg, entropies)


def score_row(pair, judgements, tokenizer, sentence_agg: str = "mean", lower_entropies=None) -> tuple[dict, list[dict]]:
    """The score-file row of one pair from its judgements, and its per-token dump rows.

    `lower_entropies` (top-k mode): per judgement, the lower-bound token entropies; the
    judgements then carry the upper bounds.
    """
    from egt.model.entropy import pair_entropies

    responses, token_rows = [], []
    for k, judgement in enumerate(judgements):
        response, spans = _response_scores(judgement, tokenizer, sentence_agg)
        responses.append(response)
        token_rows.append({"id": pair.id, "sample": k, "token_ids": list(judgement.token_ids),
                           "tokens": [judgement.text[s:e] for s, e in spans],
                           "token_entropies_nats": list(judgement.token_entropies_nats)})
        if lower_entropies is not None:
            token_rows[-1]["token_entropies_lower_nats"] = list(lower_entropies[k])
    scores = pair_entropies(responses, pair.label)
    row = pair.to_row()
    row["completions"] = [j.text for j in judgements]
    row.update(scores)
    row["format_ok_rate"] = float(np.mean([j.verdict.format_ok for j in judgements])) if judgements else math.nan
    row["truncated"] = int(sum(j.truncated for j in judgements))
    if lower_entropies is not None:
        lower = pair_entropies([_response_scores(j, tokenizer, sentence_agg, lo)[0]
                                for j, lo in zip(judgements, lower_entropies)], pair.label)
        for name, lower_name in LOWER_BOUND_COLUMNS.items():
            row[lower_name] = lower[name]
    return row, token_rows


def _completions_of(pair, column: str, file: str, line: int) -> list[str]:
    value = pair.extra.get(column)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise DataError(file, line, column, "teacher_forced mode needs a non-empty completion string "
                                            "(or a list of them) in this column")
    return list(value)


def score_pairs(model, processor, pairs, cfg: Config, on_batch=None) -> tuple[list[dict], list[dict]]:
    """Score rows and per-token rows for `pairs`, in order (HF backend; batches stay inside `pairs`)."""
    from egt.model.generation import JudgeRequest, judge, judgement_seed, score_completions

    if cfg.mode == "generate":
        requests = [JudgeRequest(p, judgement_seed(cfg.seed, p.id, k)) for p in pairs for k in range(cfg.samples)]
        flat = judge(model, processor, requests, temperature=cfg.temperature, top_p=cfg.top_p,
                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, with_entropy=True,
                     progress=False, on_batch=on_batch)
        sizes = [cfg.samples] * len(pairs)
    else:
        given = [_completions_of(p, cfg.response_column, str(cfg.pairs), i) for i, p in enumerate(pairs)]
        flat = score_completions(model, processor, [p for p, cs in zip(pairs, given) for _ in cs],
                                 [c for cs in given for c in cs], temperature=cfg.temperature,
                                 batch_size=cfg.batch_size, progress=False, on_batch=on_batch)
        sizes = [len(cs) for cs in given]
    return _rows_from_groups(pairs, flat, sizes, processor.tokenizer, cfg.sentence_agg)


def _rows_from_groups(pairs, flat, sizes, tokenizer, sentence_agg, lower=None):
    rows, token_rows, start = [], [], 0
    for pair, size in zip(pairs, sizes):
        group_lower = lower[start:start + size] if lower is not None else None
        row, tokens = score_row(pair, flat[start:start + size], tokenizer, sentence_agg, group_lower)
        rows.append(row)
        token_rows.extend(tokens)
        start += size
    return rows, token_rows


# ---------------------------------------------------------------- backends

class _HFScorer:
    def __init__(self, cfg: Config, device):
        from egt.model.loading import load_judge

        self.cfg = cfg
        self.model, self.processor = load_judge(cfg.model, device=str(device), dtype=cfg.dtype,
                                                max_pixels=cfg.processor_max_pixels,
                                                min_pixels=cfg.processor_min_pixels)

    def __call__(self, pairs, on_batch):
        return score_pairs(self.model, self.processor, pairs, self.cfg, on_batch)


def check_vllm_settings(cfg: Config, world: int = 1) -> None:
    """ConfigError for backend=vllm settings that cannot work, before any model is loaded."""
    if cfg.mode != "generate":
        raise ConfigError("backend=vllm only generates; score given completions with backend=hf")
    if cfg.vllm_entropy == "topk" and cfg.temperature != 1.0:
        raise ConfigError("vllm_entropy=topk needs temperature=1 (vLLM returns log-probs of the raw logits)")
    if world > 1 and cfg.vllm_tensor_parallel_size > 1:
        raise ConfigError(f"vllm_tensor_parallel_size={cfg.vllm_tensor_parallel_size} under a launcher of {world} "
                          "processes: each process starts its own engine on its own GPU, so use one process per GPU "
                          "with vllm_tensor_parallel_size=1, or one process (no launcher) per tensor-parallel group "
                          "(independent jobs, CUDA_VISIBLE_DEVICES)")


class _VLLMScorer:
    """vLLM generates; entropies from an HF teacher-forced pass (exact) or vLLM top-k log-probs (bounds)."""

    def __init__(self, cfg: Config, device, max_images: int):
        from transformers import AutoConfig, AutoProcessor

        from egt.model.vllm_support import engine_kwargs, import_vllm

        check_vllm_settings(cfg)
        vllm = import_vllm("egt score backend=vllm")
        self.cfg, self.vllm = cfg, vllm
        caps = (cfg.processor_max_pixels, cfg.processor_min_pixels)
        self.processor = AutoProcessor.from_pretrained(cfg.model, **processor_size_kwargs(cfg.model, *caps))
        vllm_caps = processor_size_kwargs(cfg.model, *caps, for_vllm=True)
        kwargs = dict(model=cfg.model, dtype=cfg.dtype, seed=cfg.seed,
                      tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                      gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                      limit_mm_per_prompt={"image": max(1, max_images)},
                      **({"mm_processor_kwargs": vllm_caps} if vllm_caps else {}),
                      **engine_kwargs(device, cfg.vllm_tensor_parallel_size, cfg.vllm_chunked_prefill,
                                      cfg.vllm_max_model_len))
        kwargs.update(cfg.vllm_extra)
        try:
            self.llm = vllm.LLM(**kwargs)
        except TypeError as exc:   # an unknown vllm_extra key
            raise ConfigError(f"vllm_extra: {exc}") from None
        # The model's vocabulary (the logits' width, which the bounds need) can exceed the tokenizer's.
        self.vocab_size = AutoConfig.from_pretrained(cfg.model).get_text_config().vocab_size
        self.hf_model = None
        if cfg.vllm_entropy == "exact":
            from egt.model.loading import load_judge

            self.hf_model, _ = load_judge(cfg.model, device=str(device), dtype=cfg.dtype,
                                          max_pixels=cfg.processor_max_pixels, min_pixels=cfg.processor_min_pixels)

    def __call__(self, pairs, on_batch):
        import torch

        from egt.core.prompts import parse_verdict
        from egt.model.encoding import judge_prompts
        from egt.model.entropy import topk_entropy_bounds
        from egt.model.generation import Judgement, eos_token_ids, judgement_seed, score_completions

        cfg, tokenizer = self.cfg, self.processor.tokenizer
        texts = judge_prompts(self.processor, pairs)
        prompts, params = [], []
        for pair, text in zip(pairs, texts):
            images = pair.open_images()
            for k in range(cfg.samples):
                prompts.append({"prompt": text, "multi_modal_data": {"image": images}} if images else {"prompt": text})
                params.append(self.vllm.SamplingParams(
                    temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens,
                    seed=judgement_seed(cfg.seed, pair.id, k),
                    logprobs=cfg.vllm_logprobs if cfg.vllm_entropy == "topk" else None))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        stops = set(eos_token_ids(self.hf_model, tokenizer) if self.hf_model is not None else [tokenizer.eos_token_id])
        token_ids, lower, upper = [], [], []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            while ids and ids[-1] in stops:
                ids.pop()
            token_ids.append(ids)
            if cfg.vllm_entropy == "topk":
                top = [sorted(step.values(), key=lambda lp: -lp.logprob)[:cfg.vllm_logprobs]
                       for step in completion.logprobs[:len(ids)]]
                logprobs = torch.tensor([[lp.logprob for lp in step] for step in top], dtype=torch.float64)
                lo, up = topk_entropy_bounds(logprobs.reshape(len(ids), -1), self.vocab_size)
                lower.append(lo.tolist())
                upper.append(up.tolist())
        flat_pairs = [p for p in pairs for _ in range(cfg.samples)]
        if cfg.vllm_entropy == "exact":
            flat = score_completions(self.hf_model, self.processor, flat_pairs, token_ids,
                                     temperature=cfg.temperature, batch_size=cfg.batch_size, progress=False)
        else:
            flat = []
            for ids, up in zip(token_ids, upper):
                text = tokenizer.decode(ids, skip_special_tokens=False)
                flat.append(Judgement(text, ids, up, parse_verdict(text), len(ids) >= cfg.max_new_tokens))
        if on_batch is not None:
            on_batch(len(flat))
        return _rows_from_groups(pairs, flat, [cfg.samples] * len(pairs), tokenizer, cfg.sentence_agg,
                                 lower if cfg.vllm_entropy == "topk" else None)


# ---------------------------------------------------------------- shards, fingerprint, merge

def _shard_path(out: Path, index: int, kind: str = "parquet") -> Path:
    return out / "shards" / f"shard-{index:05d}.{kind}"


def _shard_done(out: Path, index: int) -> bool:
    return _shard_path(out, index, "done").exists() and _shard_path(out, index).exists()


def fingerprint(cfg: Config, n_pairs: int, device_type: str) -> dict:
    """What the scores depend on (egt.core.runfolder.fingerprint): input and model file hashes, settings."""
    settings = {k: getattr(cfg, k) for k in FINGERPRINT_KEYS}
    settings.update({k: getattr(cfg, k) for k in FINGERPRINT_IF_SET if getattr(cfg, k) is not None})
    if cfg.backend == "vllm" and cfg.vllm_extra:   # engine arguments can change the completions (e.g. quantization)
        settings["vllm_extra"] = cfg.vllm_extra
    settings.update(pairs=n_pairs, n_shards=math.ceil(n_pairs / cfg.shard_size), device_type=device_type,
                    image_root=None if cfg.image_root is None else str(Path(cfg.image_root).resolve()),
                    allow_absolute_paths=cfg.allow_absolute_paths, **image_settings(cfg.image_limits))
    return runfolder.fingerprint(inputs={"pairs": cfg.pairs}, models={"model": cfg.model}, settings=settings)


def _has_results(out: Path) -> bool:
    shards = out / "shards"
    return (out / "scores.parquet").exists() or (shards.is_dir() and any(shards.glob("*.done")))


def _write_shard(out: Path, index: int, rows: list[dict], token_rows: list[dict] | None, marker: dict) -> None:
    write_rows(rows, _shard_path(out, index))
    if token_rows is not None:
        write_rows(token_rows, _shard_path(out, index, "tokens.parquet"))
    write_json(marker, _shard_path(out, index, "done"), indent=None, sort_keys=True)


def summarize(rows: list[dict], markers: list[dict], wall_s: float | None) -> dict:
    judgements = sum(len(r["completions"]) for r in rows)
    scoring_s = sum(m.get("wall_s", 0.0) for m in markers)
    tokens = sum(m.get("generated_tokens", 0) for m in markers)

    def mean(name):
        values = np.array([r[name] for r in rows if r.get(name) is not None], dtype=np.float64)
        return float(np.nanmean(values)) if len(values) and not np.isnan(values).all() else None

    return {
        "pairs": len(rows), "judgements": judgements,
        "parse_failures": int(sum(r["parse_failures"] for r in rows)),
        "format_ok_rate": mean("format_ok_rate"), "k_accuracy": mean("k_accuracy"),
        "answer_entropy_missing": int(sum(r["answer_entropy_missing"] for r in rows)),
        "mean_entropies_nats": {name: mean(name) for name in ENTROPY_COLUMNS},
        "truncated": int(sum(r.get("truncated", 0) for r in rows)),
        "generated_tokens": tokens, "shards": len(markers),
        "scoring_s": round(scoring_s, 3), "wall_s": None if wall_s is None else round(wall_s, 3),
        "pairs_per_s": round(len(rows) / scoring_s, 3) if scoring_s else None,
        "tokens_per_s": round(tokens / scoring_s, 1) if scoring_s else None,
    }


def merge_shards(out: Path, wall_s: float | None = None) -> Path:
    """Concatenate the finished shards of `out` (in shard order) into scores.parquet; write summary.json."""
    out = Path(out)
    stored = runfolder.read_fingerprint(out)
    if stored is None:
        raise EgtError(f"{out}: no fingerprint.json, so no `egt score` run to merge here")
    if stored.get("format") != runfolder.FORMAT or "n_shards" not in stored.get("settings", {}):
        raise EgtError(f"{out}: fingerprint.json was written by another egt version (score again, with --overwrite)")
    n_shards = stored["settings"]["n_shards"]
    missing = [i for i in range(n_shards) if not _shard_done(out, i)]
    if missing:
        raise EgtError(f"{out}: {len(missing)} of {n_shards} shards are not finished (first: {missing[:5]}); "
                       f"rerun `egt score` with the same config to finish them")
    rows = [row for i in range(n_shards) for row in read_rows(_shard_path(out, i))]
    write_rows(rows, out / "scores.parquet")
    if stored["settings"].get("dump_tokens"):
        tokens = [row for i in range(n_shards) for row in read_rows(_shard_path(out, i, "tokens.parquet"))]
        write_rows(tokens, out / "tokens.parquet")
    markers = [json.loads(_shard_path(out, i, "done").read_text()) for i in range(n_shards)]
    summary = summarize(rows, markers, wall_s)
    write_json(summary, out / "summary.json")
    entropies = ", ".join(f"{k.replace('_entropy_nats', '')} {v:.4f}" for k, v in summary["mean_entropies_nats"].items()
                          if v is not None)
    print(f"egt score: {summary['pairs']} pairs, {summary['judgements']} judgements, "
          f"{summary['parse_failures']} without a verdict, {summary['truncated']} truncated; "
          f"mean entropies (nats): {entropies}; wall {summary['wall_s']} s -> {out / 'scores.parquet'}")
    return out


# ---------------------------------------------------------------- the stage

def run(cfg: Config) -> Path:
    """Score every shard this process owns, then (rank 0) merge; returns the output folder."""
    started = time.perf_counter()
    out = Path(cfg.output)
    if cfg.merge:
        with open_run_folder(out, "score"):
            return merge_shards(out)
    if cfg.model is None or cfg.pairs is None:
        raise ConfigError("egt score needs --model and --pairs (or --merge to only merge finished shards)")
    job = parse_shard(cfg.shard)   # an independent job's slice (egt.core.shards), or None
    if cfg.backend == "hf":
        check_model_folder(cfg.model)
    procs = Processes(cfg.device, group=wants_process_group(cfg.shard))
    if cfg.backend == "vllm":
        check_vllm_settings(cfg, procs.world)
    device = procs.device(cfg.device)
    pairs = read_pairs(cfg.pairs, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    if not pairs:
        raise DataError(str(cfg.pairs), None, None, "no pairs to score")
    for pair in pairs:
        pair.check_images(sizes=True)   # every image inside its root and within the pixel cap, before any work
    if cfg.mode == "teacher_forced":
        first_line = 1 if Path(cfg.pairs).suffix.lower() in (".jsonl", ".json", ".ndjson") else 0  # as read_pairs counts
        for i, pair in enumerate(pairs):
            _completions_of(pair, cfg.response_column, str(cfg.pairs), i + first_line)
    # Rank 0 holds the folder's lock (a shard job: its slice's lock) and checks its fingerprint; the
    # other ranks follow its verdict.
    with open_run_folder(out, "score", fingerprint=lambda: fingerprint(cfg, len(pairs), device.type), owned=OWNED,
                         has_results=lambda: _has_results(out), overwrite=cfg.overwrite, main=procs.is_main,
                         share=procs.from_main, shard=job):
        n_shards = math.ceil(len(pairs) / cfg.shard_size)
        slot = (job or ALL).within(procs.rank, procs.world)
        mine = [i for i in range(n_shards) if slot.owns(i) and not _shard_done(out, i)]
        if mine:
            _score_shards(cfg, pairs, mine, out, procs, device)
        procs.barrier()
        if procs.is_main:
            if job is None:
                merge_shards(out, wall_s=time.perf_counter() - started)
            else:
                _merge_if_last(out, n_shards, job, started)
    return out


def _merge_if_last(out: Path, n_shards: int, job, started: float) -> None:
    """A shard job's end: merge when every shard of the folder is finished (egt.core.shards: the last
    job to finish merges; two finishing together merge one after the other, to the same file)."""
    left = sum(not _shard_done(out, i) for i in range(n_shards))
    if left:
        print(f"egt score: shard job {job.label} finished its shards; {left} of {n_shards} shards of {out} are "
              f"left to other jobs (the last to finish merges them)")
        return
    with merge_lock(out, "score"):
        merge_shards(out, wall_s=time.perf_counter() - started)


def _score_shards(cfg: Config, pairs, shard_ids: list[int], out: Path, procs: Processes, device) -> None:
    from tqdm.auto import tqdm

    S = cfg.shard_size
    if cfg.backend == "vllm":
        scorer = _VLLMScorer(cfg, device, max(len(p.images) for p in pairs))
    else:
        scorer = _HFScorer(cfg, device)
    total = sum(len(pairs[i * S:(i + 1) * S]) for i in shard_ids)
    with tqdm(total=total, unit="pair", desc=f"score[{procs.rank}]" if procs.world > 1 else "score",
              disable=not (cfg.progress and procs.is_main), dynamic_ncols=True) as bar:
        for index in shard_ids:
            shard = pairs[index * S:(index + 1) * S]
            n_judgements = len(shard) * cfg.samples if cfg.mode == "generate" else None
            began, shown = time.perf_counter(), bar.n
            # Judgements -> fractional pairs, so pairs/s and the ETA move inside a shard.
            on_batch = (lambda n: bar.update(n * len(shard) / n_judgements)) if n_judgements else None
            rows, token_rows = scorer(shard, on_batch)
            bar.update(shown + len(shard) - bar.n)
            marker = {"shard": index, "pairs": len(rows), "rank": procs.rank, "wall_s": time.perf_counter() - began,
                      "generated_tokens": int(sum(r["n_tokens_mean"] * len(r["completions"]) for r in rows
                                                  if not math.isnan(r["n_tokens_mean"])))}
            _write_shard(out, index, rows, token_rows if cfg.dump_tokens else None, marker)
