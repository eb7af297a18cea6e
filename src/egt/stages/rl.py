"""Stage 3: GRPO on the curated pairs, consumed exactly in curriculum order.

    egt rl --config configs/demo/rl.yaml model=runs/sft/model train=runs/curate/selected.parquet
    accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml -m egt.cli rl \\
        --config configs/qwen2.5-vl-7b/rl_zero3_vllm.yaml

The judge (the SFT checkpoint) is trained with TRL's GRPOTrainer on the judge
prompt + image(s) of each pair, with the composite reward of egt.stages.rewards
(format, accuracy, logic; each logged as `rewards/<name>_reward/mean`).

Curriculum. Rows are sorted by the `order` column that `egt curate` writes
(file order when the column is absent) and the dataset is never shuffled. With
shuffle off, TRL's RepeatSampler walks the rows 0, 1, 2, ... in chunks of
`generation_batch_size / num_generations` pairs (one chunk per generation,
generation_batch_size = per_device_train_batch_size * processes *
steps_per_generation); each pair is repeated num_generations times in a row
(its group) and each chunk is repeated num_iterations * steps_per_generation
times so the buffered generation can be reused; accelerate hands process r the
r-th contiguous slice of each chunk. So the pairs are consumed in `order`, one
chunk per generation, each group together. Inside a chunk TRL shuffles the
completions before splitting them over the steps_per_generation micro-steps,
so the order is exact at the granularity of a generation, not of a micro-step.
A last chunk with fewer pairs is dropped (warned); with more steps than one
pass the curriculum restarts from the first pair (warned).

`<output>/consumed.jsonl` records each generation: `{"global_step": optimizer
step (1-based) whose update first uses these pairs, "generation": chunk index,
"ids": pair ids in order, "group_sizes": completions per id}`. Under several
processes the ids are gathered to the main process, which alone writes the file.

Resume (`resume=auto`: the latest complete `<output>/checkpoints/checkpoint-N`;
one a kill left half-written is removed): the Trainer skips the N *
gradient_accumulation_steps batches already used and restores the RNG states;
`CurriculumGRPOTrainer` also realigns TRL's micro-step counter with step N
(TRL restarts it at 0, which shifts the generation schedule when a checkpoint
falls inside a generation) and drops consumed.jsonl lines written after step
N, which are replayed. A checkpoint that falls inside a generation also holds
TRL's buffer of that generation's completions, advantages and old log-probs
(`egt_generation_buffer-<rank>-of-<processes>.pt`), which the resumed run
reuses instead of generating again: after `kill -9` the resumed run's final
weights equal an uninterrupted run's bit for bit on CPU (tests/stages/test_rl.py).
Without the buffer (a checkpoint written by an older egt, or another number of
processes) the chunk is regenerated from the restored RNG state, with the
checkpoint's weights: the curriculum stays exact, the weights differ slightly.

Run folder: `<output>/fingerprint.json` (egt.core.runfolder: the SFT model's and the
curated file's SHA-256 and the settings that change the weights) refuses a
rerun with any of them changed, naming what changed, once the folder holds a
checkpoint or a model (`overwrite=true` starts over); one process writes a
folder at a time (`.egt.lock`). With an LLM logic judge, its requests, retries
and failures (scored 0) are counted in train_summary.json (`logic_judge`).

The final model goes to `<output>/model` (LoRA merged into the base), loadable
by egt.model.loading.load_judge; `<output>/train_summary.json` holds the log history.
`model/` is written in a staging folder and renamed into place, and train_summary.json
is written after it: a run whose summary is there is finished, and its rerun (same
fingerprint) does nothing -- no step N + 1, no checkpoint, no consumed.jsonl line. A
run killed while model/ was written resumes from its last checkpoint (at the last step:
no training, egt.model.training.ResumeMixin) and ends with the uninterrupted run's weights.
LoRA targets, vision freezing, precision, resume and saving are egt.model.training's,
shared with `egt sft`; consumed.jsonl is an egt.core.files.Journal (each line fsynced).

Departures from the paper: GRPO from TRL (loss_type default `dapo`, TRL's
default) rather than R1-Reward's StableReinforce; KL off by default (beta=0).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from egt.core import runfolder
from egt.core.config import StageConfig, save_config
from egt.core.errors import ConfigError, DataError
from egt.core.files import Journal
from egt.core.images import DEFAULT_LIMITS, ImageLimits, ImageOptions, image_settings
from egt.core.prompts import judge_messages
from egt.core.records import PreferencePair, read_pairs
from egt.core.runfolder import open_run_folder
from egt.model.families import check_dependencies
from egt.model.loading import MAX_PIXELS_HELP, MIN_PIXELS_HELP, check_model_folder, load_processor, model_load_error
from egt.model.training import (
    LANGUAGE_LORA_TARGETS,
    STAGING_FOLDERS,
    TRAIN_SUMMARY,
    ResumeMixin,
    check_deepspeed,
    check_deepspeed_launch,
    freeze_vision,
    has_training_results,
    lora_config,
    read_consumed,
    resolve_precision,
    resolve_resume,
    run_finished,
    save_final_model,
    share_from_main,
    truncate_consumed,
    write_train_summary,
)
from egt.stages.curriculum import sequence_by_order
from egt.stages.rewards import LogicJudgeConfig, build_logic, reward_functions

log = logging.getLogger(__name__)

# What `egt rl` writes in its folder (removed by overwrite, or when a failed run is replaced).
OWNED = ("checkpoints", "model", "adapter", "consumed.jsonl", TRAIN_SUMMARY, "config.yaml", *STAGING_FOLDERS)
# Config keys that do not change the trained weights (left out of the fingerprint).
NOT_FINGERPRINTED = ("model", "train", "output", "resume", "logging_steps", "report_to", "log_completions",
                     "save_steps", "save_total_limit", "overwrite",
                     "max_image_pixels", "downscale_images")   # images: egt.core.images.image_settings
BUFFER_FILE = "egt_generation_buffer-{rank}-of-{world}.pt"  # one slice per process


class Config(StageConfig, ImageOptions):
    model: Path = Field(..., description="SFT checkpoint folder (HF format)")
    train: Path = Field(..., description="curated pairs (selected.parquet) with an `order` column; else file order")
    output: Path = Field(..., description="run folder: model/, checkpoints/, consumed.jsonl")
    image_root: Path | None = Field(None, description="folder images resolve against and stay inside "
                                                      "(default: the train file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    overwrite: bool = Field(False, description="discard a run of other inputs or settings in output")
    max_steps: int = Field(-1, description="optimizer steps; -1 = num_train_epochs passes over the curriculum")
    num_train_epochs: float = 1.0
    num_generations: int = Field(8, ge=2, description="group size G (completions per pair)")
    per_device_train_batch_size: int = Field(8, description="completions per process per micro-step")
    gradient_accumulation_steps: int = 1
    steps_per_generation: int | None = Field(None, description="micro-steps per generation; None = TRL default (GA)")
    num_iterations: int = Field(1, description="GRPO updates per generation (mu)")
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    warmup_steps: float = Field(0, description="int = steps, float in [0, 1) = fraction of all steps")
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = Field(0.0, description="KL coefficient; 0 loads no reference model")
    loss_type: str = Field("dapo", description="TRL loss: grpo, dr_grpo, dapo, bnpo, cispo, ...")
    scale_rewards: str = Field("group", description="TRL: group, batch or none")
    epsilon: float = 0.2
    epsilon_high: float | None = None
    max_completion_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = Field(default_factory=lambda: list(LANGUAGE_LORA_TARGETS),
                                                 description="module names or a regex; never a vision module")
    freeze_vision: bool = Field(True, description="keep the vision tower and merger frozen")
    gradient_checkpointing: bool = False
    bf16: bool | None = Field(None, description="None = auto (on a CUDA GPU with bf16 support)")
    w_format: float = Field(0.5, description="weight of the format reward")
    w_logic: float = Field(0.5, description="weight of accuracy*logic")
    w_accuracy: float = Field(1.0, description="weight of accuracy (1 in the paper's composite)")
    logic_judge: LogicJudgeConfig | None = Field(None, description="LLM logic judge; None = rule-based")
    processor_max_pixels: int | None = Field(None, ge=1, description=MAX_PIXELS_HELP)
    processor_min_pixels: int | None = Field(None, ge=1, description=MIN_PIXELS_HELP)
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1
    save_steps: int = 100
    save_total_limit: int | None = None
    resume: str = Field("auto", description="auto (latest checkpoint in output/checkpoints), never, or a path")
    both_orders: bool = Field(True, description="swap augmentation: each pair also shown with its responses "
                              "swapped (label flipped), right after it in the curriculum, so both orders share a "
                              "generation and their position pushes cancel (false: each pair as given)")
    seed: int = 0
    logging_steps: int = 1
    report_to: str = "none"
    log_completions: bool = False
    grpo_extra: dict[str, Any] = Field(default_factory=dict,
                                       description="any other GRPOConfig keys, passed through (e.g. deepspeed)")


# ---------------------------------------------------------------- data


def curriculum_pairs(path: Path, both_orders: bool = False, image_root: Path | None = None,
                     allow_absolute_paths: bool = False, limits: ImageLimits = DEFAULT_LIMITS) -> list[PreferencePair]:
    """Pairs sorted by their `order` column (file order if no row has one); with `both_orders` each
    pair is followed by its swapped copy (`PreferencePair.swapped`, id `<id>::swap`)."""
    pairs = read_pairs(path, image_root, allow_absolute_paths, limits)
    if not pairs:
        raise DataError(str(path), None, None, "no pairs to train on")
    sequence = sequence_by_order([p.extra.get("order") for p in pairs], str(path))
    if sequence is None:
        log.warning("%s has no `order` column: pairs are consumed in file order", path)
    else:
        pairs = [pairs[i] for i in sequence]
    return [q for p in pairs for q in (p, p.swapped())] if both_orders else pairs


def build_dataset(pairs: list[PreferencePair]):
    """HF dataset with `prompt` (conversational judge prompt), `images` (decoded lazily), `label`, `id`.

    The dataset's Image feature decodes with PIL itself, so every image is checked here first, through
    egt.core.images (inside its root, a regular file, an image, within its pixel cap: a DataError naming
    the row); one above the cap with downscale on goes in as the bytes of its shrunk PNG."""
    from datasets import Dataset, Image, List

    rows = []
    for pair in pairs:
        images = []
        for ref in pair.images:
            width, height = ref.size()
            if width * height > ref.limits.max_pixels:   # downscale is on, else size() refused it
                images.append({"path": None, "bytes": ref.encoded()[0]})
            else:
                images.append({"path": ref.path, "bytes": ref.data})
        rows.append({
            "prompt": judge_messages(pair.question, pair.response_1, pair.response_2, n_images=len(pair.images)),
            "images": images, "label": int(pair.label), "id": pair.id})
    dataset = Dataset.from_list(rows)
    return dataset.cast_column("images", List(Image()))


# ---------------------------------------------------------------- consumption log


def run_lengths(ids: list[str]) -> tuple[list[str], list[int]]:
    """['a','a','b','b'] -> (['a','b'], [2, 2])."""
    heads, sizes = [], []
    for pair_id in ids:
        if heads and heads[-1] == pair_id:
            sizes[-1] += 1
        else:
            heads.append(pair_id)
            sizes.append(1)
    return heads, sizes


def unexpanded_prompt_ids(processing_class, prompts: list, chat_template=None, tools=None,
                          chat_template_kwargs: dict | None = None) -> list[list[int]]:
    """Token ids of conversational `prompts` with ONE placeholder token per image, the form vLLM expands itself.

    TRL 1.16's colocate generation hands vLLM the processor's prompt ids, in which every image is already a run
    of N image tokens (GRPOTrainer._tokenize_prompts), together with the images; vLLM always applies its own
    prompt update (vllm/multimodal/processing/processor.py, _maybe_apply_prompt_updates) and expands the first
    token of the run again, so the rollouts are generated from a corrupted prompt (huggingface/trl#6294; the
    fix, trl#6718, renders the prompts like this).
    """
    from trl.data_utils import prepare_multimodal_messages

    prompts = [prepare_multimodal_messages(prompt) for prompt in prompts]
    texts = processing_class.apply_chat_template(conversation=prompts, chat_template=chat_template, tools=tools,
                                                 add_generation_prompt=True, tokenize=False,
                                                 **(chat_template_kwargs or {}))
    return processing_class.tokenizer(texts, add_special_tokens=False)["input_ids"]


def _make_trainer_class():
    from accelerate.utils import gather_object
    from trl import GRPOTrainer

    class CurriculumGRPOTrainer(ResumeMixin, GRPOTrainer):
        """GRPOTrainer that logs the pairs of each generation and keeps its schedule across a resume
        (and reloads the checkpoint's weights on resume, training no further from the last step:
        egt.model.training.ResumeMixin).

        With vLLM colocated it also fills two gaps of TRL 1.16: vLLM gets the prompts with one placeholder per
        image (`unexpanded_prompt_ids`; training keeps TRL's expanded ids and pixel values), and on vLLM's
        CPU build the weight sync goes through vLLM's reload (egt.model.vllm_support).
        """

        def __init__(self, *args, consumed_path: Path, **kwargs):
            super().__init__(*args, **kwargs)
            self.consumed = Journal(consumed_path)
            self._egt_resume: str | None = None
            self._egt_started = False
            self._egt_vllm_prompt_ids: list[list[int]] | None = None
            self._egt_colocated = bool(self.use_vllm and self.args.vllm_mode == "colocate")
            if self._egt_colocated:
                self._route_vllm_prompts()

        def _route_vllm_prompts(self) -> None:
            from egt.model.vllm_support import use_reload_for_colocate_sync

            generate = self.vllm_generation.generate

            def generate_from_unexpanded(prompts, images, *args, **kwargs):
                # TRL discards the prompt ids vLLM returns (GRPOTrainer._generate_single_turn), so only the
                # completions depend on what is sent here.
                ids = self._egt_vllm_prompt_ids
                if images is not None and ids is not None and len(ids) == len(prompts):
                    prompts = ids
                return generate(prompts, images, *args, **kwargs)

            self.vllm_generation.generate = generate_from_unexpanded
            if use_reload_for_colocate_sync(self.vllm_generation):
                log.info("vLLM CPU colocate: weights are synced through vLLM's in-place reload")

        def _tokenize_prompts(self, prompts: list):
            prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
            self._egt_vllm_prompt_ids = None
            if self._egt_colocated and images is not None:
                self._egt_vllm_prompt_ids = unexpanded_prompt_ids(
                    self.processing_class, prompts, self.chat_template, self.tools or None, self.chat_template_kwargs)
            return prompt_ids, images, multimodal_fields

        def train(self, resume_from_checkpoint=None, **kwargs):
            self._egt_resume = resume_from_checkpoint
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

        def _generate_every(self) -> int:
            return self.args.steps_per_generation * self.num_iterations

        def _prepare_inputs(self, generation_batch):
            if self.model.training and not self._egt_started:
                # Fresh start or resume: TRL counts micro-steps from 0; step N starts at N * GA.
                self._egt_started = True
                self._step = self.state.global_step * self.args.gradient_accumulation_steps
                if self._egt_resume and self._step % self._generate_every():
                    self._buffered_inputs = self._load_buffer(Path(self._egt_resume))
            return super()._prepare_inputs(generation_batch)

        def _save_checkpoint(self, model, trial):
            # Written before the Trainer's files: its trainer_state.json (last) marks the checkpoint complete.
            if self._buffered_inputs is not None and self._step % self._generate_every():
                import torch

                folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                folder.mkdir(parents=True, exist_ok=True)
                torch.save(self._buffered_inputs, folder / self._buffer_name())
            super()._save_checkpoint(model, trial)

        def _buffer_name(self) -> str:
            return BUFFER_FILE.format(rank=self.args.process_index, world=self.args.world_size)

        def _load_buffer(self, checkpoint: Path):
            """The generation buffer saved with a checkpoint inside a generation, or None (regenerate)."""
            import torch

            path = checkpoint / self._buffer_name()
            if not path.exists():
                log.warning("%s has no generation buffer (an older egt, or another number of processes): the "
                            "current generation is sampled again, so the weights will differ slightly from an "
                            "uninterrupted run", checkpoint)
                return None
            device = self.accelerator.device
            # CPU processes of a launch run on device "cpu:0", and their tensors are saved tagged so: torch.load
            # restores the tag "cpu" only (given "cpu:0" it failed, and every resumed 2-process run sampled its
            # generation again, on other weights than the uninterrupted run's).
            location = "cpu" if device.type == "cpu" else str(device)
            try:
                return torch.load(path, map_location=location, weights_only=True)
            except Exception as exc:  # a file we cannot trust: regenerate instead
                log.warning("%s: generation buffer unreadable (%s): sampling the generation again", path, exc)
                return None

        def _generate(self, prompts):
            # TRL (1.16) marks a text-only prompt's images as None. When the same batch holds prompts with
            # images, its processor call for the forward pass gets [[img, ...], None] and refuses it
            # (transformers' fetch_images: "only a single or a list of entries"); an empty list is what the
            # processor takes for a prompt without images. `_generate` returns (..., images, tool_images).
            out = super()._generate(prompts)
            images = out[-2]
            if images is not None and any(entry is None for entry in images):
                out = (*out[:-2], [entry if entry is not None else [] for entry in images], out[-1])
            return out

        def _generate_and_score_completions(self, inputs):
            if self.model.training:
                generate_every = self.args.steps_per_generation * self.num_iterations
                ids = gather_object([str(x["id"]) for x in inputs])
                # A generation inside a chunk only happens after a resume: the chunk is already logged.
                if self._step % generate_every == 0 and self.accelerator.is_main_process:
                    heads, sizes = run_lengths(ids)
                    self.consumed.append([{"global_step": self.state.global_step + 1,
                                           "generation": self._step // generate_every, "ids": heads,
                                           "group_sizes": sizes}])
            return super()._generate_and_score_completions(inputs)

    return CurriculumGRPOTrainer


# ---------------------------------------------------------------- run


def _grpo_args(cfg: Config, checkpoints: Path, bf16: bool, reward_weights: list[float]):
    import torch
    from trl import GRPOConfig

    args = dict(
        output_dir=str(checkpoints), max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        num_generations=cfg.num_generations, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, steps_per_generation=cfg.steps_per_generation,
        num_iterations=cfg.num_iterations, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        beta=cfg.beta, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards, epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, top_p=cfg.top_p, gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16, use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=cfg.vllm_tensor_parallel_size,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        seed=cfg.seed, logging_steps=cfg.logging_steps, report_to=cfg.report_to,
        log_completions=cfg.log_completions, shuffle_dataset=False, remove_unused_columns=False,
        model_init_kwargs={"dtype": "bfloat16" if bf16 else "float32"}, reward_weights=reward_weights,
    )
    # Without CUDA the Trainer sets up no process group unless told it runs on the CPU (as egt sft).
    args["use_cpu"] = not torch.cuda.is_available()
    unknown = [key for key in cfg.grpo_extra if key not in GRPOConfig.__dataclass_fields__]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(GRPOConfig.__dataclass_fields__), n=3)
        raise ConfigError(f"grpo_extra: unknown GRPOConfig key '{unknown[0]}'"
                          + (f" (did you mean {', '.join(close)}?)" if close else ""))
    args.update(cfg.grpo_extra)
    if args["shuffle_dataset"]:
        raise ConfigError("grpo_extra.shuffle_dataset=true would break the curriculum order")
    if args.get("deepspeed"):
        check_deepspeed("grpo_extra.deepspeed")
    try:
        return GRPOConfig(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid GRPO settings: {exc}") from None


def _check_schedule(n_pairs: int, args, both_orders: bool = False) -> None:
    pairs_per_generation = args.generation_batch_size // args.num_generations
    if both_orders and pairs_per_generation % 2:
        log.warning("both_orders: a generation takes %d pairs (odd), so some pairs and their swapped copies "
                    "fall into different generations", pairs_per_generation)
    if n_pairs < pairs_per_generation:
        raise ConfigError(f"{n_pairs} pairs but one generation needs {pairs_per_generation} "
                          "(generation_batch_size / num_generations): lower the batch size or add pairs")
    if n_pairs % pairs_per_generation:
        log.warning("the last %d pairs of the curriculum are never used (generations take %d pairs each)",
                    n_pairs % pairs_per_generation, pairs_per_generation)
    micro_steps_per_pass = (n_pairs // pairs_per_generation) * args.steps_per_generation * args.num_iterations
    steps_per_pass = math.ceil(micro_steps_per_pass / args.gradient_accumulation_steps)
    if micro_steps_per_pass % args.gradient_accumulation_steps:
        log.warning("a pass (%d micro-steps) is not a multiple of gradient_accumulation_steps: resuming "
                    "after the first pass may shift the generation schedule", micro_steps_per_pass)
    if args.max_steps > steps_per_pass:
        log.warning("max_steps=%d exceeds one pass over the curriculum (%d steps): it restarts from the first pair",
                    args.max_steps, steps_per_pass)


def capped_processor(cfg: Config):
    """The processor with the image-size caps (None without caps: TRL loads the checkpoint's own).

    vLLM colocated reads the caps from the checkpoint's preprocessor_config.json, not from here: caps that
    differ from the checkpoint's would give the rollouts other image sizes than training, so they are refused.
    """
    if cfg.processor_max_pixels is None and cfg.processor_min_pixels is None:
        return None
    # as TRL loads it when given none (GRPOTrainer.__init__): prompts padded and truncated on the left
    processor = load_processor(cfg.model, cfg.processor_max_pixels, cfg.processor_min_pixels,
                               truncation_side="left", padding_side="left")
    if cfg.use_vllm and processor.image_processor.to_dict() != load_processor(cfg.model).image_processor.to_dict():
        raise ConfigError(f"processor_max_pixels / processor_min_pixels with use_vllm: vLLM reads the image sizes from "
                          f"{cfg.model}/preprocessor_config.json, which has other ones; give the caps to `egt sft` "
                          f"(it saves them with the model) or leave them unset here")
    return processor


def fingerprint(cfg: Config) -> dict:
    """What the trained weights depend on (egt.core.runfolder): SFT model and curated file hashes, settings."""
    settings = {**cfg.model_dump(mode="json", exclude=set(NOT_FINGERPRINTED)), **image_settings(cfg.image_limits)}
    return runfolder.fingerprint(inputs={"train": cfg.train}, models={"model": cfg.model}, settings=settings)


def run(cfg: Config, callbacks: list | None = None) -> Path:
    """Train; return the output folder (model/, checkpoints/, consumed.jsonl). `callbacks`: extra TrainerCallbacks."""
    out = Path(cfg.output)
    check_model_folder(cfg.model)
    check_dependencies(cfg.model)
    check_deepspeed_launch()
    if cfg.use_vllm:   # a one-line error when it is missing, a warning for an untested version
        from egt.model.vllm_support import import_vllm

        import_vllm("egt rl use_vllm=true")
    pairs = curriculum_pairs(Path(cfg.train), cfg.both_orders, cfg.image_root, cfg.allow_absolute_paths,
                             cfg.image_limits)
    precision = "auto" if cfg.bf16 is None else ("bf16" if cfg.bf16 else "fp32")
    bf16 = resolve_precision(precision, use_cpu=bool(cfg.grpo_extra.get("use_cpu", False))) == "bf16"
    logic = build_logic(cfg.logic_judge)
    funcs, weights = reward_functions(cfg.w_format, cfg.w_logic, cfg.w_accuracy, logic=logic)
    args = _grpo_args(cfg, out / "checkpoints", bf16, weights)
    _check_schedule(len(pairs), args, cfg.both_orders)
    dataset = build_dataset(pairs)
    with open_run_folder(out, "rl", fingerprint=lambda: fingerprint(cfg), owned=OWNED,
                         has_results=lambda: has_training_results(out), overwrite=cfg.overwrite,
                         main=args.process_index == 0, share=share_from_main(args)):
        return _train(cfg, args, funcs, logic, dataset, len(pairs), bf16, callbacks)


def _train(cfg: Config, args, funcs, logic, dataset, n_pairs: int, bf16: bool, callbacks) -> Path:
    out = Path(cfg.output)
    if run_finished(out):   # the same fingerprint, and model/ + train_summary.json are there: nothing to do
        log.warning("%s: this run finished already (train_summary.json); nothing to train (overwrite=true trains "
                    "it again)", out)
        return out
    checkpoints = out / "checkpoints"
    consumed_path = out / "consumed.jsonl"
    resume = resolve_resume(cfg.resume, checkpoints, clean=args.process_index == 0)
    if args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if resume is None:
            consumed_path.unlink(missing_ok=True)
        else:
            step = json.loads((resume / "trainer_state.json").read_text())["global_step"]
            dropped = truncate_consumed(consumed_path, step)
            log.warning("resuming from %s (step %d); %d consumed.jsonl line(s) after it will be replayed",
                        resume, step, dropped)

    peft_config = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules) \
        if cfg.lora else None
    trainer_cls = _make_trainer_class()
    processor = capped_processor(cfg)
    try:
        trainer = trainer_cls(model=str(cfg.model), reward_funcs=funcs, args=args, train_dataset=dataset,
                              processing_class=processor, peft_config=peft_config, callbacks=callbacks,
                              consumed_path=consumed_path)
    except ValueError as exc:  # TRL validates batch/group sizes here
        raise ConfigError(f"GRPO setup: {exc}") from None
    except (OSError, RuntimeError) as exc:  # the model's files cannot be loaded (corrupt)
        raise model_load_error(cfg.model, exc) from exc
    if cfg.freeze_vision and not cfg.lora:  # with LoRA only the adapters train anyway
        frozen = freeze_vision(trainer.model, tower=True, merger=True)
        log.info("froze %d vision parameters", frozen)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall_s = time.perf_counter() - started
    model_dir = save_final_model(trainer, out, cfg.model, processor, lora=cfg.lora, merge=True)
    if trainer.accelerator.is_main_process:
        extra = {"logic_judge": logic.stats()} if hasattr(logic, "stats") else {}
        write_train_summary(out, trainer, resume, wall_s, model=str(model_dir), bf16=bf16, pairs=n_pairs, **extra)
    return out

