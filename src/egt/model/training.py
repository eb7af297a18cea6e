"""Training setup shared by `egt sft` and `egt rl`: one definition of each choice both stages make.

- LoRA: `LANGUAGE_LORA_TARGETS` (the language model's attention and MLP projections) and
  `lora_config`, whose target regex never matches a module under any family's vision tower
  or projector (egt.model.families: `visual`, `vision_tower`, `vision_model`, `multi_modal_projector`,
  ...) -- Qwen2.5-VL's vision MLP also has gate/up/down_proj, SigLIP and InternViT have
  q/k/v_proj, and LoRA there would train the vision tower.
- `freeze_vision`: freezes the family's vision tower and, optionally, its projector (Qwen's
  merger; egt.model.families names both per family); returns how many parameters (elements) it froze.
- `resolve_precision`: `auto` is bf16 on a CUDA GPU that supports it, else fp32.
- `resolve_resume`: `never`, a checkpoint folder, or `auto` = the highest-numbered COMPLETE
  checkpoint under `<output>/checkpoints`. The Trainer writes trainer_state.json last, so a
  checkpoint is complete when that file parses and names the folder's step; one a kill left
  half-written is removed (`remove_incomplete_checkpoints`, with a warning), never fatal.
- `ResumeMixin`: a Trainer whose resume reloads full-model weights through from_pretrained, and
  which trains no further when resumed from a checkpoint at its last step (see its docstring for
  the two transformers problems it works around).
- `save_final_model`: `<output>/model` is a plain Hugging Face judge with its processor;
  LoRA runs save the adapter to `<output>/adapter` and merge it into the base weights. Both are
  written into a hidden staging folder (`.model.partial`, `.adapter.partial`) and renamed into
  place when complete, so `model/` is never half-written.
- `write_train_summary`: both stages write `<output>/train_summary.json` (global step,
  epochs, wall time, resume point, device, log history, plus stage-specific numbers) LAST,
  atomically, after `model/` is in place: it marks the run finished (`run_finished`), and a
  rerun of a finished run with the same fingerprint does nothing (`overwrite=true` trains again).
  A run killed anywhere before it -- while `model/` was written included -- resumes from its
  last complete checkpoint and ends with the uninterrupted run's weights.
- `read_consumed` / `truncate_consumed`: `<output>/consumed.jsonl`, the examples each optimizer step
  used (an egt.core.files.Journal: SFT and RL write one line per batch / generation, main process
  only); a resume drops the lines after its checkpoint's step, which are replayed.
- `share_from_main`: the run folder's verdict (egt.core.runfolder.open_run_folder) from rank 0 to
  every rank of the Trainer's world; `has_training_results`: what counts as results to overwrite.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Literal

from egt.core.errors import ConfigError
from egt.core.files import Journal, write_json
from egt.model.families import family_of, vision_module_names, vision_part

log = logging.getLogger(__name__)

LANGUAGE_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRAIN_SUMMARY = "train_summary.json"
Precision = Literal["auto", "bf16", "fp16", "fp32"]


# ---------------------------------------------------------------- LoRA and freezing

def lora_target_regex(targets: list[str] | str) -> str:
    """A PEFT target regex for module names (a list) or a regex, never matching a vision module of any family."""
    vision = "|".join(re.escape(name) for name in vision_module_names())
    never = rf"(?!(?:.*\.)?(?:{vision})(?:\.|$))"
    if isinstance(targets, str):
        return rf"^{never}(?:{targets})$"
    return rf"^{never}.*\.({'|'.join(re.escape(t) for t in targets)})$"


def lora_config(r: int, alpha: int, dropout: float, targets: list[str] | str):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_regex(targets),
                      task_type="CAUSAL_LM")


def freeze_vision(model, tower: bool = True, merger: bool = False) -> int:
    """Freeze the family's vision tower (and its projector when `merger`); return the number of frozen parameters.

    The modules come from egt.model.families (by config.model_type); an unknown family is an EgtError."""
    family = family_of(model)
    frozen = 0
    for name, param in model.named_parameters():
        part = vision_part(family, name)
        if (part == "projector" and merger) or (part == "tower" and tower):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


# ---------------------------------------------------------------- precision

def resolve_precision(precision: str, use_cpu: bool = False) -> str:
    """`auto` -> bf16 on a bf16-capable CUDA GPU (unless `use_cpu`), else fp32; others unchanged."""
    import torch

    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if precision != "auto":
        return precision
    on_gpu = torch.cuda.is_available() and not use_cpu
    return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


# ---------------------------------------------------------------- resume

def _step(path: Path) -> int | None:
    suffix = path.name.rsplit("-", 1)[-1]
    return int(suffix) if path.name.startswith("checkpoint-") and suffix.isdigit() else None


def checkpoint_complete(path: str | Path) -> bool:
    """True when `checkpoint-N` was written to the end: its trainer_state.json (the Trainer's last
    file) parses and says global_step N."""
    path = Path(path)
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == _step(path)


def _checkpoint_dirs(checkpoints: Path) -> list[Path]:
    if not checkpoints.is_dir():
        return []
    return [p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and _step(p) is not None]


def last_checkpoint(checkpoints: str | Path) -> Path | None:
    """The highest-numbered complete `checkpoint-N` folder (`checkpoint_complete`), or None."""
    found = [p for p in _checkpoint_dirs(Path(checkpoints)) if checkpoint_complete(p)]
    return max(found, key=_step) if found else None


def remove_incomplete_checkpoints(checkpoints: str | Path) -> list[Path]:
    """Delete the checkpoint folders a kill left half-written (call it on the main process only)."""
    removed = []
    for path in _checkpoint_dirs(Path(checkpoints)):
        if not checkpoint_complete(path):
            log.warning("removing %s: an incomplete checkpoint (the run was stopped while writing it)", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def resolve_resume(resume: str, checkpoints: str | Path, clean: bool = True) -> Path | None:
    """`never` -> None; `auto` -> last_checkpoint(checkpoints), after removing incomplete ones when
    `clean` (the main process); else that folder (must be a complete checkpoint)."""
    if resume == "never":
        return None
    if resume == "auto":
        if clean:
            remove_incomplete_checkpoints(checkpoints)
        return last_checkpoint(checkpoints)
    path = Path(resume)
    if not (path / "trainer_state.json").exists():
        raise ConfigError(f"resume: {path} is not a Trainer checkpoint (no trainer_state.json)")
    if not checkpoint_complete(path):
        raise ConfigError(f"resume: {path} is an incomplete checkpoint (its trainer_state.json is cut off "
                          f"or names another step)")
    return path


class ResumeMixin:
    """Put before a transformers Trainer class: two fixes to resuming from a checkpoint.

    1. Resume reloads full-model weights via from_pretrained. transformers 5 saves Qwen2-VL
       checkpoints under the original hub key names (`visual.*`, `model.layers.*`) but
       Trainer._load_from_checkpoint loads the raw state dict non-strictly, so every weight is
       silently skipped and the resumed run would continue from the *base* weights.
       from_pretrained applies the key conversion; a strict load then proves every tensor arrived.
       PEFT, FSDP and DeepSpeed checkpoints keep the stock path.
    2. A run resumed from a checkpoint at its last step trains no further. The Trainer's loop
       checks `max_steps` only after a step, so resuming at step == max_steps (a run killed while
       its final model was saved) trained step max_steps + 1 -- other weights than the
       uninterrupted run's, and a rerun that is not a no-op. `_run_epoch` is skipped instead: the
       checkpoint's weights (loaded before it) are the run's final weights.
    """

    def _run_epoch(self, *args, **kwargs):
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = model if model is not None else self.model
        ckpt = Path(resume_from_checkpoint)
        full = (ckpt / "config.json").exists() and not (ckpt / "adapter_config.json").exists()
        if not full or self.is_fsdp_enabled or self.is_deepspeed_enabled or hasattr(model, "peft_config"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from transformers import AutoModelForImageTextToText

        dtype = next(model.parameters()).dtype
        loaded = AutoModelForImageTextToText.from_pretrained(str(ckpt), dtype=dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)


def read_consumed(path: Path) -> list[dict]:
    """Lines of consumed.jsonl; a torn last line (a kill while writing) is cut off."""
    return Journal(path).read()


def truncate_consumed(path: Path, last_step: int) -> int:
    """Keep the lines whose examples entered training by `last_step`; return how many were dropped."""
    journal = Journal(path)
    lines = journal.read()
    kept = [line for line in lines if line["global_step"] <= last_step]
    if len(kept) != len(lines):
        journal.rewrite(kept)
    return len(lines) - len(kept)


# ---------------------------------------------------------------- saving

STAGING = ".{}.partial"   # where `<out>/<name>` is written before it is renamed into place


def _publish(staging: Path, target: Path) -> None:
    """Move a completely written folder into place (a stale `target` from an older run is removed first)."""
    import os

    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)   # the rename itself reaches the disk before the summary marks the run finished
    finally:
        os.close(fd)


def save_final_model(trainer, out: str | Path, base_model: str | Path, processor=None,
                     lora: bool = False, merge: bool = True) -> Path:
    """Save `<out>/model` with its processor (call it on every process); returns the model folder.

    The folder is written as `<out>/.model.partial` and renamed to `model` when complete (a kill
    leaves no half-written `model/`; the next save clears the staging folder). LoRA with `merge`:
    the adapter goes to `<out>/adapter` the same way (trainer.save_model gathers ZeRO-3 shards),
    then the main process loads the base in the trained dtype, merges the adapter into it and saves
    a plain checkpoint -- merging the in-memory model would see only this process's shard under
    ZeRO-3. LoRA without `merge`: `<out>/model` holds the adapter. `processor` defaults to the one
    trainer.save_model writes (its processing_class), or the base model's when merging.
    """
    out = Path(out)
    model_dir, staging = out / "model", out / STAGING.format("model")
    main = trainer.accelerator.is_main_process
    if main:
        shutil.rmtree(staging, ignore_errors=True)  # what a save killed before this one left
    trainer.accelerator.wait_for_everyone()
    if lora and merge:
        adapter_dir, adapter_staging = out / "adapter", out / STAGING.format("adapter")
        if main:
            shutil.rmtree(adapter_staging, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(adapter_staging))
        trainer.accelerator.wait_for_everyone()
        if main:
            from peft import PeftModel
            from transformers import AutoModelForImageTextToText, AutoProcessor

            _publish(adapter_staging, adapter_dir)
            dtype = next(trainer.accelerator.unwrap_model(trainer.model).parameters()).dtype
            base = AutoModelForImageTextToText.from_pretrained(str(base_model), dtype=dtype)
            PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().save_pretrained(str(staging))
            processor = processor if processor is not None else AutoProcessor.from_pretrained(str(base_model))
    else:
        trainer.save_model(str(staging))  # gathers ZeRO-3 shards (stage3_gather_16bit_weights_on_model_save)
    if main:
        if processor is not None:
            processor.save_pretrained(str(staging))
        _publish(staging, model_dir)
    trainer.accelerator.wait_for_everyone()
    return model_dir


def write_train_summary(out: str | Path, trainer, resumed_from: Path | None, wall_s: float, **extra) -> Path:
    """`<out>/train_summary.json` (main process): the numbers both stages report, then `extra`. Write it
    last, after `save_final_model`: it marks the run finished (`run_finished`)."""
    state = trainer.state
    summary = {
        "global_step": state.global_step, "epochs": state.epoch, "train_wall_s": round(wall_s, 3),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "device": str(trainer.accelerator.device), "processes": trainer.accelerator.num_processes,
        **extra, "log_history": state.log_history,
    }
    return write_json(summary, Path(out) / TRAIN_SUMMARY)


def check_deepspeed(purpose: str) -> None:
    """MissingDependency naming the extra `deepspeed` when DeepSpeed is asked for and not installed."""
    from egt.core.errors import require

    require("deepspeed", "deepspeed", purpose)


def check_deepspeed_launch() -> None:
    """Under `accelerate launch` with a DeepSpeed config (accelerate sets ACCELERATE_USE_DEEPSPEED in every
    process): DeepSpeed must be importable, else one line naming the extra instead of a trace from the Trainer."""
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        check_deepspeed("accelerate launch with a DeepSpeed config (configs/accelerate/zero3_8gpu.yaml)")


# ---------------------------------------------------------------- run folder (egt.core.runfolder)

def share_from_main(args):
    """`open_run_folder`'s `share` for a Trainer's world: rank 0's message on every rank (None alone)."""
    if args.world_size <= 1:
        return None

    def share(message: str | None) -> str | None:
        from accelerate.utils import broadcast_object_list

        box = [message]
        broadcast_object_list(box, from_process=0)
        return box[0]

    return share


def has_training_results(out: str | Path) -> bool:
    """A training run folder holds results: a complete checkpoint, a saved model or a summary."""
    out = Path(out)
    return (out / "model").exists() or (out / TRAIN_SUMMARY).exists() or last_checkpoint(out / "checkpoints") is not None


def run_finished(out: str | Path) -> bool:
    """The run in `out` finished: its summary, written last (after `model/` was renamed into place), is there.
    A rerun with the same fingerprint then does nothing."""
    out = Path(out)
    return (out / TRAIN_SUMMARY).is_file() and (out / "model").is_dir()


# The staging folders save_final_model writes (a stage lists them among the files it owns).
STAGING_FOLDERS = (STAGING.format("model"), STAGING.format("adapter"))
