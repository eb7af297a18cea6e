"""egt sft on the tiny Qwen2-VL judge: real TRL SFTTrainer runs, saving, reloading, resuming after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import child_pids, folder_state

from egt.core import prompts
from egt.core.config import load_config
from egt.core.records import read_pairs
from egt.model.encoding import judge_batch_inputs
from egt.model.loading import load_judge
from egt.model.training import TRAIN_SUMMARY, last_checkpoint, read_consumed
from egt.stages import distill
from egt.stages.sft import Config, JudgeCollator, collate_examples, encode_examples, read_traces, run

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.fixture(scope="module")
def traces_path(synth_pairs_path, tmp_path_factory) -> Path:
    pairs = synth_pairs_path("train", n=48, seed=1)
    out = tmp_path_factory.mktemp("distill")
    distill.run(distill.Config(pairs=pairs, output=out, backend="oracle", oracle_wrong_rate=0.0, progress=False))
    return out / "traces.parquet"


def sft_cfg(traces_path, model_dir, output, **kw) -> Config:
    base = dict(traces=traces_path, model=str(model_dir), output=output, learning_rate=3e-3,
                per_device_train_batch_size=8, max_steps=8, logging_steps=1, save_steps=4, warmup_steps=0.0, lr_scheduler_type="constant",
                progress=False, torch_threads=1)
    return Config(**{**base, **kw})


def test_labels_cover_exactly_the_trace_and_end_of_turn(traces_path, tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    cfg = sft_cfg(traces_path, tiny_model_dir, "unused", limit=5)
    pairs, traces = read_traces(cfg)
    examples = encode_examples(processor, pairs, traces, chunk_size=2)
    batch = collate_examples(examples[:3], processor.tokenizer.pad_token_id)
    tok = processor.tokenizer
    for i in range(3):
        labelled = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert tok.decode(labelled) == traces[i] + tok.eos_token
        n = int(batch["attention_mask"][i].sum())
        prompt = tok.decode(batch["input_ids"][i][:n - len(labelled)].tolist())
        assert prompt.endswith("<|im_start|>assistant\n") and pairs[i].question in prompt
        assert prompts.parse_verdict(traces[i]).verdict == pairs[i].label
    # pixel rows split back per pair: each example holds exactly its own image's patches
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())
    for i in (0, 3):
        single = judge_batch_inputs(processor, [pairs[i]], [traces[i]], padding_side="right", append_eos=True)
        assert torch.equal(single["pixel_values"], examples[i]["pixel_values"])
        assert torch.equal(single["input_ids"][0], examples[i]["input_ids"])
    # the cached path and the on-the-fly path build the same batch
    rows = [{"idx": 3}, {"idx": 0}, {"idx": 4}]
    cached = JudgeCollator(processor, pairs, traces, examples)(rows)
    lazy = JudgeCollator(processor, pairs, traces, None)(rows)
    assert cached.keys() == lazy.keys()
    for key in cached:
        assert torch.equal(cached[key], lazy[key]), key


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.slow
def test_full_sft_learns_freezes_vision_and_saves_a_loadable_judge(traces_path, tiny_model_dir, tmp_path):
    before = _params(load_judge(tiny_model_dir)[0])
    out = run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "sft", max_steps=10, adam_beta2=0.95))
    metrics = json.loads((out / TRAIN_SUMMARY).read_text())
    optimizer = torch.load(last_checkpoint(out / "checkpoints") / "optimizer.pt", weights_only=True)
    assert {tuple(g["betas"]) for g in optimizer["param_groups"]} == {(0.9, 0.95)}
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert len(losses) == 10 and metrics["global_step"] == 10
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    assert metrics["train_steps_per_s"] > 0

    model, processor = load_judge(out / "model")
    after = _params(model)
    assert after.keys() == before.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    vision_tower = {n for n in before if ".visual." in f".{n}" and ".merger." not in n}
    assert vision_tower and not (changed & vision_tower)  # frozen by default
    assert any(".merger." in n for n in changed)  # the projector trains
    assert any("language_model" in n or "embed_tokens" in n for n in changed)
    # the reloaded judge generates
    pairs = read_pairs(traces_path)[:2]
    batch = judge_batch_inputs(processor, pairs)
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] > batch["input_ids"].shape[1]
    assert (out / "model" / "processor_config.json").exists() or (out / "model" / "preprocessor_config.json").exists()


@pytest.mark.slow
def test_lora_merged_checkpoint_loads_without_peft(traces_path, tiny_model_dir, tmp_path):
    before = _params(load_judge(tiny_model_dir)[0])
    out = run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "lora", lora=True, lora_r=4, max_steps=3,
                      learning_rate=1e-2, save_steps=100, gradient_checkpointing=True))
    assert not (out / "model" / "adapter_config.json").exists()
    after = _params(load_judge(out / "model")[0])
    assert after.keys() == before.keys()  # merged: plain model weights, no lora_ tensors
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                       "gate_proj.weight", "up_proj.weight", "down_proj.weight")) for n in changed)
    assert not any(".visual." in f".{n}" for n in changed)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(traces_path, tiny_model_dir, tmp_path):
    common = dict(max_steps=24, per_device_train_batch_size=4, save_steps=3, logging_steps=3, save_total_limit=None)
    ref = run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "ref", **common))

    out = tmp_path / "killed"
    args = [f"{k}={'null' if v is None else v}" for k, v in common.items()]
    cmd = [sys.executable, "-m", "egt.cli", "sft", f"traces={traces_path}", f"model={tiny_model_dir}",
           f"output={out}", "learning_rate=3e-3", "warmup_steps=0.0", "lr_scheduler_type=constant",
           "progress=false", "torch_threads=1", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last_checkpoint(out / "checkpoints") is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    start = last_checkpoint(out / "checkpoints")
    start_step = json.loads((start / "trainer_state.json").read_text())["global_step"]
    assert 3 <= start_step < 24

    run(sft_cfg(traces_path, tiny_model_dir, out, **common))
    metrics = json.loads((out / TRAIN_SUMMARY).read_text())
    assert metrics["resumed_from"] == str(start) and metrics["global_step"] == 24
    final_state = json.loads((last_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())
    assert final_state["global_step"] == 24
    # the resumed run continues the same trajectory: same losses at each logged step, same final weights
    ref_losses = {h["step"]: h["loss"] for h in json.loads((ref / TRAIN_SUMMARY).read_text())["log_history"]
                  if "loss" in h}
    got_losses = {h["step"]: h["loss"] for h in metrics["log_history"] if "loss" in h}
    assert got_losses.keys() == ref_losses.keys()
    assert got_losses == pytest.approx(ref_losses, rel=1e-4)
    ref_params, got_params = _params(load_judge(ref / "model")[0]), _params(load_judge(out / "model")[0])
    for name in ref_params:
        torch.testing.assert_close(got_params[name], ref_params[name], rtol=1e-4, atol=1e-5)
    # and the same batches: the lines after the checkpoint were dropped and replayed
    assert read_consumed(out / "consumed.jsonl") == read_consumed(ref / "consumed.jsonl")


def test_shipped_sft_configs_parse():
    full = load_config(Config, CONFIGS / "qwen2.5-vl-7b" / "sft_full_zero3.yaml")
    lora = load_config(Config, CONFIGS / "qwen2.5-vl-7b" / "sft_lora_1gpu.yaml")
    assert not full.lora and full.freeze_vision_tower and not full.cache_features
    assert lora.lora and lora.merge_lora
    for name in ("sft_full_zero3.yaml", "sft_lora_1gpu.yaml"):
        assert (CONFIGS / "qwen2.5-vl-7b" / name).read_text().startswith("# egt: sft")
    import yaml

    accel = yaml.safe_load((CONFIGS / "accelerate" / "zero3_8gpu.yaml").read_text())
    assert accel["compute_environment"] == "LOCAL_MACHINE" and accel["num_processes"] == 8
    ds_file = CONFIGS.parent / accel["deepspeed_config"]["deepspeed_config_file"]
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.slow
def test_finished_run_with_other_settings_is_refused_until_overwrite(traces_path, tiny_model_dir, tmp_path):
    from egt.core.runfolder import StaleRunError

    out = tmp_path / "sft"
    run(sft_cfg(traces_path, tiny_model_dir, out, max_steps=2, save_steps=2))
    weights = (out / "model" / "model.safetensors").read_bytes()
    saved_config = (out / "sft_config.yaml").read_text()
    with pytest.raises(StaleRunError, match=r"setting learning_rate: 0\.003 -> 0\.005.*--overwrite"):
        run(sft_cfg(traces_path, tiny_model_dir, out, max_steps=2, save_steps=2, learning_rate=5e-3))
    # nothing was "resumed": the old weights and the old settings stay together
    assert (out / "model" / "model.safetensors").read_bytes() == weights
    assert (out / "sft_config.yaml").read_text() == saved_config
    run(sft_cfg(traces_path, tiny_model_dir, out, max_steps=2, save_steps=2, learning_rate=5e-3, overwrite=True))
    assert (out / "model" / "model.safetensors").read_bytes() != weights
    assert "learning_rate: 0.005" in (out / "sft_config.yaml").read_text()


def test_missing_or_truncated_base_model_is_one_error_naming_it(traces_path, tiny_model_dir, tmp_path):
    import shutil

    from egt.core.errors import EgtError

    with pytest.raises(EgtError, match=r"nowhere: model folder not found"):
        run(sft_cfg(traces_path, tmp_path / "nowhere", tmp_path / "a"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(EgtError, match=r"model\.safetensors: not a readable safetensors file .*truncated or corrupt"):
        run(sft_cfg(traces_path, broken, tmp_path / "b"))
    assert not (tmp_path / "b").exists()


# Two CPU processes against one at the same global batch: DDP sums the ranks' gradients in another order than
# one process sums its batch (float addition is not associative) and Adam carries those last bits on. Measured
# on the tiny judge (16 traces, 8 steps at lr 2e-3, weights moved up to 8.0e-3; machine C, one run each):
# 2.1e-7 max abs with 2 processes (torchrun and accelerate alike), the same as one process with gradient
# accumulation 2; the tolerance leaves room for other CPUs' kernels.
TWO_PROCESS_TOLERANCE = 1e-5



@pytest.mark.heavy
def test_two_processes_train_like_one_at_the_same_global_batch(traces_path, tiny_model_dir, tmp_path):
    """torchrun, 2 CPU processes x per_device 2 against one process x per_device 4 (global batch 4, 16 traces,
    2 epochs): each epoch the two ranks together consume every example exactly once, each global step the
    examples the one process used; the final weights agree within TWO_PROCESS_TOLERANCE. Then one rank killed
    with SIGKILL after a checkpoint (the launcher stops the other): the rerun resumes and ends with the
    uninterrupted 2-process run's batches and weights, its model saved by save_final_model."""
    import os

    from safetensors.torch import load_file

    common = dict(limit=16, num_train_epochs=2, max_steps=-1, learning_rate=2e-3, adam_beta2=0.98,
                  freeze_vision_tower=False, save_steps=100, warmup_steps=0.0, lr_scheduler_type="constant",
                  torch_threads=1)
    one = run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "one", per_device_train_batch_size=4, **common))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    logs = []

    def torchrun(out, **kw):
        args = {**common, "traces": traces_path, "model": tiny_model_dir, "output": out, "logging_steps": 1,
                "per_device_train_batch_size": 2, "progress": "false", **kw}
        logs.append(tmp_path / f"torchrun{len(logs)}.log")
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", "-m", "egt.cli", "sft", *[f"{k}={v}" for k, v in args.items()]], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(logs[-1], "w"))

    def tail() -> str:
        return logs[-1].read_text()[-3000:]

    two = tmp_path / "two"
    proc = torchrun(two)
    assert proc.wait(timeout=600) == 0, tail()
    lines, reference = read_consumed(two / "consumed.jsonl"), read_consumed(one / "consumed.jsonl")
    ids = [pair.id for pair in read_pairs(traces_path)[:16]]
    assert [len(line["ids_per_process"]) for line in lines] == [2] * 8
    for epoch in (0, 1):
        seen = [i for line in lines if line["epoch"] == epoch for rank in line["ids_per_process"] for i in rank]
        assert sorted(seen) == sorted(ids)                       # every example exactly once per epoch
    assert [sorted(i for rank in line["ids_per_process"] for i in rank) for line in lines] == \
        [sorted(line["ids_per_process"][0]) for line in reference]   # the one process's batch, step by step
    assert json.loads((two / TRAIN_SUMMARY).read_text())["processes"] == 2
    base, ref, got = (load_file(str(d / "model.safetensors")) for d in (tiny_model_dir, one / "model", two / "model"))
    assert max((ref[k] - base[k]).abs().max().item() for k in ref) > 1e-3          # it trained
    assert max((ref[k] - got[k]).abs().max().item() for k in ref) <= TWO_PROCESS_TOLERANCE

    killed = tmp_path / "killed"
    launcher = torchrun(killed, save_steps=2)
    deadline = time.time() + 300
    while last_checkpoint(killed / "checkpoints") is None:
        assert launcher.poll() is None, tail()
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    ranks = child_pids(launcher.pid)
    assert len(ranks) == 2
    os.kill(ranks[-1], signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0
    assert not (killed / "model").exists()
    proc = torchrun(killed, save_steps=2)
    assert proc.wait(timeout=600) == 0, tail()
    summary = json.loads((killed / TRAIN_SUMMARY).read_text())
    assert summary["resumed_from"] and summary["global_step"] == 8
    assert read_consumed(killed / "consumed.jsonl") == lines
    resumed = load_file(str(killed / "model" / "model.safetensors"))
    for name in got:
        torch.testing.assert_close(resumed[name], got[name], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- max_length, sft_extra, image caps

def test_length_limit_refuses_truncates_or_drops_and_counts():
    from egt.core.errors import ConfigError
    from egt.stages.sft import apply_length_limit

    lengths = [(90, 40), (120, 50), (150, 110), (100, 30)]   # (tokens, prompt tokens); limit 100
    assert apply_length_limit(lengths, None, "error") == ([0, 1, 2, 3], {})
    with pytest.raises(ConfigError, match=r"max_length=100: 2 of 4 examples are longer \(the longest has 150 tokens\)"):
        apply_length_limit(lengths, 100, "error")
    keep, counts = apply_length_limit(lengths, 100, "truncate")
    assert keep == [0, 1, 3]   # example 2's prompt alone is over the limit: nothing of its trace would be left
    assert counts == {"limit": 100, "policy": "truncate", "examples": 4, "too_long": 2, "longest_tokens": 150,
                      "truncated": 1, "dropped": 1}
    keep, counts = apply_length_limit(lengths, 100, "drop")
    assert keep == [0, 3] and (counts["truncated"], counts["dropped"]) == (0, 2)
    with pytest.raises(ConfigError, match="leaves no example"):
        apply_length_limit(lengths, 10, "drop")


def test_truncation_cuts_only_the_trace(traces_path, tiny_model_dir):
    from transformers import AutoProcessor

    from egt.stages.sft import prompt_length, truncate_example

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    pairs, traces = read_traces(sft_cfg(traces_path, tiny_model_dir, "unused", limit=2))
    example = encode_examples(processor, pairs, traces)[0]
    start, length = prompt_length(example), len(example["input_ids"])
    cut = truncate_example(example, start + 3)
    assert len(cut["input_ids"]) == len(cut["completion_mask"]) == start + 3 < length
    assert int(cut["completion_mask"].sum()) == 3
    assert torch.equal(cut["pixel_values"], example["pixel_values"])   # the image stays whole
    assert torch.equal(cut["input_ids"], example["input_ids"][:start + 3])


def test_sft_extra_is_checked_against_sftconfig(traces_path, tiny_model_dir, tmp_path):
    from egt.core.errors import ConfigError
    from egt.stages.sft import sft_args

    cfg = sft_cfg(traces_path, tiny_model_dir, tmp_path / "x", sft_extra={"optim": "adafactor", "adam_epsilon": 1e-6})
    args = sft_args(cfg, tmp_path / "x" / "checkpoints", "fp32")
    assert args.optim == "adafactor" and args.adam_epsilon == 1e-6
    with pytest.raises(ConfigError, match=r"sft_extra: unknown SFTConfig key 'adam_epsylon' \(did you mean adam_epsilon"):
        run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "y", sft_extra={"adam_epsylon": 1e-6}))
    with pytest.raises(ConfigError, match="sft_extra.max_length: egt sets it itself"):
        run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "z", sft_extra={"max_length": 10}))
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()   # refused before anything is written


def test_flash_attention_config_fails_at_start_naming_the_extra(traces_path, tiny_model_dir, tmp_path):
    import importlib.util

    from egt.core.errors import EgtError

    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        pytest.skip("flash-attn and a GPU are here")
    with pytest.raises(EgtError, match=r"egt\[flash\]|needs a CUDA GPU"):
        run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "fa", attn_implementation="flash_attention_2"))
    assert not (tmp_path / "fa").exists()


@pytest.mark.slow
def test_on_the_fly_features_truncate_at_max_length_and_the_caps_travel_with_the_model(traces_path, tiny_model_dir,
                                                                                      tmp_path):
    from transformers import AutoProcessor

    from egt.model.loading import load_processor

    caps = {"processor_max_pixels": 32 * 32, "processor_min_pixels": 16 * 16}
    processor = load_processor(tiny_model_dir, 32 * 32, 16 * 16)   # the lengths the run sees
    pairs, traces = read_traces(sft_cfg(traces_path, tiny_model_dir, "unused", limit=16))
    lengths = sorted(len(ex["input_ids"]) for ex in encode_examples(processor, pairs, traces))
    limit = lengths[len(lengths) // 2]   # about half of the examples are longer
    with pytest.raises(Exception, match=f"max_length={limit}: "):
        run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "refused", limit=16, max_length=limit,
                    cache_features=False, **caps))
    out = run(sft_cfg(traces_path, tiny_model_dir, tmp_path / "sft", limit=16, max_steps=2, max_length=limit,
                      too_long="truncate", cache_features=False, **caps))
    counts = json.loads((out / TRAIN_SUMMARY).read_text())["max_length"]
    over = sum(n > limit for n in lengths)
    assert counts["too_long"] == over > 0 and counts["truncated"] + counts["dropped"] == over
    assert counts["longest_tokens"] == lengths[-1] and counts["policy"] == "truncate"
    saved = AutoProcessor.from_pretrained(out / "model").image_processor.size
    assert (saved["shortest_edge"], saved["longest_edge"]) == (16 * 16, 32 * 32)


# Runs `egt sft` and kills itself (SIGKILL) half-way through saving the final model (not a checkpoint).
FINAL_SAVE_KILL_DRIVER = """
import os, signal, sys
from pathlib import Path
from transformers import PreTrainedModel
from egt.stages import sft
from egt.core.config import load_config

cfg = load_config(sft.Config, None, sys.argv[1:])
save_pretrained = PreTrainedModel.save_pretrained
def save_then_die(self, save_directory, *args, **kwargs):
    save_pretrained(self, save_directory, *args, **kwargs)
    if "checkpoint-" not in str(save_directory):
        weights = Path(save_directory) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        os.kill(os.getpid(), signal.SIGKILL)
PreTrainedModel.save_pretrained = save_then_die
sft.run(cfg)
"""


@pytest.mark.heavy   # several processes: `make test-heavy`
def test_finished_run_is_not_trained_again_and_a_kill_during_the_final_save_ends_the_same(traces_path, tiny_model_dir,
                                                                                         tmp_path):
    """A rerun of a finished run changes nothing (it trained one step more before: transformers resumed at
    max_steps); killed while writing model/, the rerun trains no further and saves the uninterrupted run's weights."""
    import os

    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def args(out):
        return [f"traces={traces_path}", f"model={tiny_model_dir}", f"output={out}", "learning_rate=3e-3",
                "warmup_steps=0.0", "lr_scheduler_type=constant", "progress=false", "torch_threads=1",
                "per_device_train_batch_size=8", "max_steps=2", "save_steps=2", "logging_steps=1"]

    def egt_sft(out, driver=None):
        cmd = [sys.executable, "-c", driver] if driver else [sys.executable, "-m", "egt.cli", "sft"]
        proc = subprocess.run(cmd + args(out), env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == (-signal.SIGKILL if driver else 0), proc.stderr[-3000:]
        return proc

    ref = tmp_path / "ref"
    egt_sft(ref)
    finished = folder_state(ref)
    assert "finished already" in egt_sft(ref).stderr
    assert folder_state(ref) == finished and not (ref / "checkpoints" / "checkpoint-3").exists()

    out = tmp_path / "killed"
    egt_sft(out, driver=FINAL_SAVE_KILL_DRIVER)
    assert not (out / TRAIN_SUMMARY).exists() and not (out / "model").exists()
    egt_sft(out)
    assert json.loads((out / TRAIN_SUMMARY).read_text())["global_step"] == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    ref_weights, got = (load_file(str(d / "model" / "model.safetensors")) for d in (ref, out))
    assert ref_weights.keys() == got.keys() and all(torch.equal(ref_weights[k], got[k]) for k in ref_weights)
