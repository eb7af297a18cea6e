"""Stage 1 training: supervised fine-tuning of the judge on the distilled traces.

TRL's `SFTTrainer` with the image + judge prompt (`prompts.judge_messages`,
rendered by the model's chat template) as the user turn and the trace (+ the
end-of-turn token) as the assistant turn; the loss is on the assistant tokens
only. Full fine-tuning or LoRA (PEFT), vision tower frozen by default.

    egt sft traces=runs/distill/traces.parquet model=runs/tiny output=runs/sft \
        learning_rate=2e-3 per_device_train_batch_size=8 num_train_epochs=1 adam_beta2=0.98 freeze_vision_tower=false
    accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml -m egt.cli sft \
        --config configs/qwen2.5-vl-7b/sft_full_zero3.yaml

Outputs: `<output>/model` (model + processor, loadable by
AutoModelForImageTextToText / AutoProcessor and `egt.model.loading.load_judge`; LoRA
runs are merged when `merge_lora`, the adapter kept in `<output>/adapter`),
checkpoints under `<output>/checkpoints`, `<output>/train_summary.json` (log
history, losses, steps/s, samples/s; written last, after model/ is renamed into
place: it marks the run finished, and a rerun of a finished run does nothing).
A rerun with `resume: auto` continues from the last complete checkpoint (model,
optimizer, scheduler, RNG and data position); from a checkpoint at the last step
(a kill while model/ was written) it trains no further and only saves the model.
LoRA targets, vision freezing, precision, resume and saving are egt.model.training's,
shared with `egt rl`.

Why a custom collator instead of TRL's `DataCollatorForVisionLanguageModeling`:
the batch is built by `egt.model.encoding.judge_batch_inputs` — the same function the
scorer and the evaluator use — so training and inference see byte-identical
prompts, and the family's token types (`mm_token_type_ids` for Qwen,
`token_type_ids` for Gemma 3) and the completion mask come with it; any family of
egt.model.families is cut into examples and collated by egt.model.encoding. With
`cache_features: true` every example is
tokenised and its image preprocessed once, before training, and a batch is
only padding; the Dataset handed to SFTTrainer then holds example indices and
lengths (for `group_by_length`). Use `cache_features: false` at real scale,
where pixel values of the whole set do not fit in memory; the collator then
processes each batch on the fly (`dataloader_num_workers` in parallel).

Length limit (`max_length`, tokens of prompt + image tokens + trace + end of turn). Every example's length is
known before training: from the cached features, or, with `cache_features: false`, from a length pass that
preprocesses each example once and keeps nothing. `too_long` says what happens to longer examples: `error`
(the default) refuses to start, naming how many there are and the longest; `truncate` cuts the trace at the
limit (the prompt and its image tokens stay whole; an example whose prompt alone reaches the limit has no
trace left and is dropped); `drop` leaves them out. The counts go to train_summary.json (`max_length`).

Image-size caps (`processor_max_pixels`, `processor_min_pixels`: egt.model.loading) are applied to the processor
and saved with it into `<output>/model`, so scoring, RL and vLLM see the same image sizes. `sft_extra` passes
any other TRL SFTConfig key (checked against SFTConfig's fields: an unknown key is an error naming it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from egt.core import runfolder
from egt.core.config import StageConfig, save_config
from egt.core.errors import ConfigError, DataError
from egt.core.files import Journal
from egt.core.images import ImageOptions, image_settings
from egt.core.records import PreferencePair, read_pairs
from egt.core.runfolder import open_run_folder
from egt.model.encoding import collate_examples
from egt.model.families import IMAGE_KEYS, check_dependencies
from egt.model.loading import (
    MAX_PIXELS_HELP,
    MIN_PIXELS_HELP,
    check_attention,
    check_model_folder,
    load_model_and_processor,
)
from egt.model.training import (
    LANGUAGE_LORA_TARGETS,
    STAGING_FOLDERS,
    TRAIN_SUMMARY,
    ResumeMixin,
    Precision,
    check_deepspeed,
    check_deepspeed_launch,
    freeze_vision,
    has_training_results,
    lora_config,
    resolve_precision,
    resolve_resume,
    run_finished,
    save_final_model,
    share_from_main,
    torch_dtype,
    truncate_consumed,
    write_train_summary,
)

# What `egt sft` writes in its folder (removed by overwrite, or when a failed run is replaced).
OWNED = ("checkpoints", "model", "adapter", TRAIN_SUMMARY, "sft_config.yaml", "consumed.jsonl",
         *STAGING_FOLDERS)
# The batch key the collator puts the examples' indices under; the trainer takes it out before the forward.
EXAMPLE_INDEX = "egt_example_index"
# Config keys that do not change the trained weights (left out of the fingerprint).
NOT_FINGERPRINTED = ("traces", "model", "output", "resume", "progress", "logging_steps", "save_steps",
                     "save_total_limit", "report_to", "dataloader_num_workers", "torch_threads", "cache_features",
                     "overwrite", "max_image_pixels", "downscale_images")   # images: image_settings


class Config(StageConfig, ImageOptions):
    traces: Path = Field(description="traces file from `egt distill` (pairs + trace column)")
    model: str = Field(description="base model folder or hub id (a family of egt.model.families)")
    output: Path = Field(description="run folder: model/, checkpoints/, train_summary.json")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside "
                                                      "(default: the traces file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    overwrite: bool = Field(False, description="discard a run of other inputs or settings in output")
    trace_column: str = "trace"
    limit: int | None = Field(None, ge=1, description="train on the first N traces only")
    # method
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = 32
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: list(LANGUAGE_LORA_TARGETS),
                                           description="module names; never a vision module")
    merge_lora: bool = Field(True, description="save the merged model (else the adapter)")
    freeze_vision_tower: bool = Field(True, description="false where the vision tower must still learn (the tiny judge)")
    freeze_merger: bool = Field(False, description="also freeze the vision-language projector")
    # optimisation
    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="0.98 lets the tiny judge learn its checks sooner")
    warmup_steps: float = Field(0.03, ge=0, description="int = steps, float in [0, 1) = fraction of all steps")
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="optimizer steps; -1 = num_train_epochs passes")
    per_device_train_batch_size: int = Field(4, ge=1, description="per device")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_grad_norm: float = 1.0
    max_length: int | None = Field(None, ge=1, description="longest example in tokens (prompt, image tokens, trace); "
                                                            "longer ones: too_long")
    too_long: Literal["error", "truncate", "drop"] = Field(
        "error", description="examples above max_length: error (refuse to start), truncate (cut the trace), drop")
    processor_max_pixels: int | None = Field(None, ge=1, description=MAX_PIXELS_HELP)
    processor_min_pixels: int | None = Field(None, ge=1, description=MIN_PIXELS_HELP)
    seed: int = 0
    # hardware / speed
    precision: Precision = Field("auto", description="auto: bf16 where supported")
    attn_implementation: str | None = Field(None, description="sdpa, flash_attention_2, eager (None: default)")
    gradient_checkpointing: bool = False
    cache_features: bool = Field(True, description="preprocess every example once (small data)")
    group_by_length: bool = Field(False, description="batch similar lengths (needs cache_features)")
    dataloader_num_workers: int = Field(0, ge=0)
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads on CPU")
    # bookkeeping
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = 2
    resume: str = Field("auto", description="auto (last checkpoint if any), never, or a checkpoint folder")
    report_to: str = "none"
    progress: bool = True
    sft_extra: dict[str, Any] = Field(default_factory=dict,
                                      description="any other TRL SFTConfig keys, passed through (e.g. deepspeed, "
                                                  "optim, lr_scheduler_kwargs)")


# SFTConfig keys egt sets itself and that sft_extra must not change: the batches are egt's (collator, dataset of
# indices), and the length limit is egt's max_length (TRL's would cut the image tokens).
SFT_EXTRA_REFUSED = ("output_dir", "max_length", "remove_unused_columns", "dataset_kwargs", "dataset_text_field",
                     "packing", "completion_only_loss", "assistant_only_loss")


def sft_args(cfg: Config, checkpoints: Path, precision: str):
    """TRL's SFTConfig for `cfg`, with `sft_extra` on top (ConfigError naming an unknown or refused key)."""
    import difflib

    import torch
    from trl import SFTConfig

    # transformers >= 5.2x renamed gradient_checkpointing (the old name only warns)
    ckpt = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ \
        else "gradient_checkpointing"
    args = dict(
        output_dir=str(checkpoints), per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed, data_seed=cfg.seed, bf16=precision == "bf16", fp16=precision == "fp16",
        **{ckpt: cfg.gradient_checkpointing,
           f"{ckpt}_kwargs": {"use_reentrant": False} if cfg.gradient_checkpointing else None},
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, report_to=cfg.report_to, disable_tqdm=not cfg.progress,
        remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None,
        dataloader_num_workers=cfg.dataloader_num_workers, dataloader_pin_memory=torch.cuda.is_available(),
        # Without CUDA the Trainer sets up no process group unless told it runs on the CPU: under a launcher
        # every process would then train alone (gloo on CPU: egt.core.processes).
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
    )
    fields = SFTConfig.__dataclass_fields__
    for key in cfg.sft_extra:
        if key in SFT_EXTRA_REFUSED:
            raise ConfigError(f"sft_extra.{key}: egt sets it itself (use egt's own keys: max_length, too_long, ...)")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"sft_extra: unknown SFTConfig key '{key}'{hint}")
    args.update(cfg.sft_extra)
    if args.get("deepspeed"):
        check_deepspeed("sft_extra.deepspeed")
    try:
        return SFTConfig(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid SFT settings: {exc}") from None


# ------------------------------------------------------------------ data

def read_traces(cfg: Config) -> tuple[list[PreferencePair], list[str]]:
    pairs = read_pairs(cfg.traces, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    traces = []
    for i, pair in enumerate(pairs):
        trace = pair.extra.get(cfg.trace_column)
        if not isinstance(trace, str) or not trace.strip():
            raise DataError(str(cfg.traces), i, cfg.trace_column,
                            "missing or empty trace (expected the traces file written by `egt distill`)")
        traces.append(trace)
        pair.check_images(sizes=True)   # inside the root and within the pixel cap, before any model loads
    if not pairs:
        raise DataError(str(cfg.traces), None, None, "no traces to train on")
    return pairs, traces


def encode_examples(processor, pairs: list[PreferencePair], traces: list[str],
                    chunk_size: int = 256, progress: bool = False) -> list[dict]:
    """One dict of unpadded tensors per example (egt.model.encoding.split_examples): input_ids, completion_mask
    (1 on the trace and the end-of-turn token), the family's token types and the example's image tensors."""
    from tqdm.auto import tqdm

    from egt.model.encoding import judge_batch_inputs, split_examples

    examples = []
    for start in tqdm(range(0, len(pairs), chunk_size), desc="sft: preprocess", disable=not progress):
        chunk, chunk_traces = pairs[start:start + chunk_size], traces[start:start + chunk_size]
        batch = judge_batch_inputs(processor, chunk, chunk_traces, padding_side="right", append_eos=True)
        examples += split_examples(processor, batch, [len(pair.images) for pair in chunk])
    return examples


def example_lengths(processor, pairs, traces, chunk_size: int = 64, progress: bool = False) -> list[tuple[int, int]]:
    """(tokens, prompt tokens) of every example: the length pass of `cache_features: false` (nothing is kept)."""
    return [(len(ex["input_ids"]), prompt_length(ex))
            for start in range(0, len(pairs), chunk_size)
            for ex in encode_examples(processor, pairs[start:start + chunk_size], traces[start:start + chunk_size],
                                      progress=progress and start == 0)]


def prompt_length(example: dict) -> int:
    """Tokens before the trace (the completion mask's first 1)."""
    mask = example["completion_mask"]
    return int(mask.nonzero()[0].item()) if bool(mask.any()) else len(mask)


def truncate_example(example: dict, max_length: int) -> dict:
    """The example cut to `max_length` tokens: only its trace is cut (the caller checks the prompt fits)."""
    length = len(example["input_ids"])
    return {key: value[:max_length] if (hasattr(value, "dim") and value.dim() == 1 and len(value) == length
                                        and key not in IMAGE_KEYS) else value
            for key, value in example.items()}


def apply_length_limit(lengths: list[tuple[int, int]], max_length: int | None, policy: str) -> tuple[list[int], dict]:
    """(indices to train on, the counts for train_summary.json) under `max_length` and `too_long` (module doc)."""
    if max_length is None:
        return list(range(len(lengths))), {}
    over = [i for i, (n, _) in enumerate(lengths) if n > max_length]
    counts = {"limit": max_length, "policy": policy, "examples": len(lengths), "too_long": len(over),
              "longest_tokens": max((n for n, _ in lengths), default=0), "truncated": 0, "dropped": 0}
    if over and policy == "error":
        raise ConfigError(f"max_length={max_length}: {len(over)} of {len(lengths)} examples are longer (the longest "
                          f"has {counts['longest_tokens']} tokens); raise max_length, or set too_long: truncate "
                          f"(cut the trace) or too_long: drop")
    dropped = set(over) if policy == "drop" else {i for i in over if lengths[i][1] >= max_length}
    counts["dropped"], counts["truncated"] = len(dropped), len(over) - len(dropped)
    keep = [i for i in range(len(lengths)) if i not in dropped]
    if not keep:
        raise ConfigError(f"max_length={max_length} leaves no example to train on ({len(dropped)} dropped)")
    return keep, counts


class JudgeCollator:
    """Index batch -> model inputs with labels; cached (pad only) or on the fly (full preprocessing); examples
    longer than `max_length` are cut to it (the kept ones, after apply_length_limit)."""

    def __init__(self, processor, pairs, traces, examples: list[dict] | None, max_length: int | None = None):
        self.processor, self.pairs, self.traces, self.examples = processor, pairs, traces, examples
        self.pad_token_id = processor.tokenizer.pad_token_id
        self.max_length = max_length

    def _cut(self, examples: list[dict]) -> list[dict]:
        if self.max_length is None:
            return examples
        return [truncate_example(ex, self.max_length) if len(ex["input_ids"]) > self.max_length else ex
                for ex in examples]

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        idx = [row["idx"] for row in rows]
        if self.examples is not None:
            batch = collate_examples(self._cut([self.examples[i] for i in idx]), self.pad_token_id)
        else:
            encoded = encode_examples(self.processor, [self.pairs[i] for i in idx], [self.traces[i] for i in idx])
            batch = collate_examples(self._cut(encoded), self.pad_token_id)
        batch[EXAMPLE_INDEX] = torch.tensor(idx, dtype=torch.long)   # what this batch holds: consumed.jsonl
        return batch


# ------------------------------------------------------------------ model

def _trainer_class():
    from accelerate.utils import gather_object
    from trl import SFTTrainer

    class _JudgeSFTTrainer(ResumeMixin, SFTTrainer):
        """SFTTrainer whose resume reloads full-model weights and trains no further from the last step
        (egt.model.training.ResumeMixin), and that logs the examples of every batch to consumed.jsonl
        (a hook TRL lacks: the Trainer never sees which examples a batch holds)."""

        def __init__(self, *args, example_ids: list[str], consumed_path: Path, **kwargs):
            super().__init__(*args, **kwargs)
            self.example_ids, self.consumed = example_ids, Journal(consumed_path)

        def training_step(self, model, inputs, num_items_in_batch=None):
            index = inputs.pop(EXAMPLE_INDEX, None)
            if index is not None:
                mine = [self.example_ids[i] for i in index.tolist()]
                # One list per process, in rank order: every rank calls this in step (one gather per batch).
                per_rank = gather_object([mine]) if self.accelerator.num_processes > 1 else [mine]
                if self.accelerator.is_main_process:
                    self.consumed.append([{"global_step": self.state.global_step + 1,
                                           "epoch": math.floor(self.state.epoch or 0), "ids_per_process": per_rank}])
            return super().training_step(model, inputs, num_items_in_batch)

    return _JudgeSFTTrainer


# ------------------------------------------------------------------ run

def fingerprint(cfg: Config) -> dict:
    """What the trained weights depend on (egt.core.runfolder): traces and base model files, settings."""
    settings = {**cfg.model_dump(mode="json", exclude=set(NOT_FINGERPRINTED)), **image_settings(cfg.image_limits)}
    return runfolder.fingerprint(inputs={"traces": cfg.traces}, models={"model": cfg.model}, settings=settings)


def run(cfg: Config) -> Path:
    import torch

    if cfg.group_by_length and not cfg.cache_features:
        raise ConfigError("group_by_length needs cache_features: true (lengths are known after preprocessing)")
    check_attention(cfg.attn_implementation)   # flash-attn missing or no GPU: one line, before any work
    check_deepspeed_launch()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    pairs, traces = read_traces(cfg)  # bad input fails before any model is loaded
    check_model_folder(cfg.model)     # so does a missing or truncated model, before anything is written
    out = Path(cfg.output)
    checkpoints = out / "checkpoints"
    precision = resolve_precision(cfg.precision)
    # The trainer arguments come first: under `accelerate launch` with DeepSpeed ZeRO-3 they switch
    # on zero.Init, so that from_pretrained below loads the weights already partitioned.
    args = sft_args(cfg, checkpoints, precision)
    model_kwargs = {"dtype": torch_dtype(precision)}
    if cfg.attn_implementation:
        model_kwargs["attn_implementation"] = cfg.attn_implementation
    check_dependencies(cfg.model)
    with open_run_folder(out, "sft", fingerprint=lambda: fingerprint(cfg), owned=OWNED,
                         has_results=lambda: has_training_results(out), overwrite=cfg.overwrite,
                         main=args.process_index == 0, share=share_from_main(args)):
        return _train(cfg, args, model_kwargs, pairs, traces, out, checkpoints)


def _train(cfg: Config, args, model_kwargs: dict, pairs, traces, out: Path, checkpoints: Path) -> Path:
    import datasets

    if run_finished(out):   # the same fingerprint, and model/ + train_summary.json are there: nothing to do
        import logging

        logging.getLogger(__name__).warning("%s: this run finished already (train_summary.json); nothing to train "
                                            "(overwrite=true trains it again)", out)
        return out

    model, processor = load_model_and_processor(cfg.model, cfg.processor_max_pixels, cfg.processor_min_pixels,
                                                **model_kwargs)
    if cfg.freeze_vision_tower or cfg.freeze_merger:
        freeze_vision(model, tower=cfg.freeze_vision_tower, merger=cfg.freeze_merger)

    examples = encode_examples(processor, pairs, traces, progress=cfg.progress) if cfg.cache_features else None
    lengths = None
    if examples is not None:
        lengths = [(len(ex["input_ids"]), prompt_length(ex)) for ex in examples]
    elif cfg.max_length is not None:   # the length pass: each example preprocessed once, nothing kept
        lengths = example_lengths(processor, pairs, traces, progress=cfg.progress)
    keep, length_counts = apply_length_limit(lengths or [(0, 0)] * len(pairs), cfg.max_length, cfg.too_long)
    columns = {"idx": keep}
    if examples is not None:
        columns["length"] = [min(lengths[i][0], cfg.max_length or lengths[i][0]) for i in keep]
    train_dataset = datasets.Dataset.from_dict(columns)

    peft_config = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules) \
        if cfg.lora else None
    consumed_path = out / "consumed.jsonl"
    collator = JudgeCollator(processor, pairs, traces, examples, cfg.max_length)
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset, processing_class=processor,
                               data_collator=collator, peft_config=peft_config,
                               example_ids=[pair.id for pair in pairs], consumed_path=consumed_path)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not trainer.is_fsdp_enabled \
            and trainer.is_world_process_zero():
        # accelerate turns FSDP on only for GPU-like worlds: CPU processes silently train as DDP.
        logging.getLogger(__name__).warning("the accelerate config asks for FSDP, but accelerate does not shard "
                                            "CPU processes: this run trains with DDP (full weights per process)")
    resume_from = resolve_resume(cfg.resume, checkpoints, clean=trainer.is_world_process_zero())
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "sft_config.yaml")
        if resume_from is None:
            consumed_path.unlink(missing_ok=True)
        else:   # the lines after the checkpoint's step are replayed by the resumed run
            truncate_consumed(consumed_path, json.loads((resume_from / "trainer_state.json").read_text())["global_step"])
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall_s = time.perf_counter() - t0
    save_final_model(trainer, out, cfg.model, processor, lora=cfg.lora, merge=cfg.merge_lora)
    if trainer.is_world_process_zero():
        _write_summary(out, trainer, result, wall_s, len(keep), len(pairs), resume_from, length_counts)
    return out


def _write_summary(out: Path, trainer, result, wall_s: float, n_train: int, n_pairs: int,
                   resumed_from: Path | None, length_counts: dict) -> None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    write_train_summary(
        out, trainer, resumed_from, wall_s, examples=n_train, dropped_too_long=n_pairs - n_train,
        max_length=length_counts or None,
        train_loss=result.training_loss, first_logged_loss=losses[0] if losses else None,
        last_logged_loss=losses[-1] if losses else None,
        train_steps_per_s=result.metrics.get("train_steps_per_second"),
        train_samples_per_s=result.metrics.get("train_samples_per_second"))
    if not math.isfinite(result.training_loss):
        raise DataError(str(out), None, None, "training loss is not finite")
