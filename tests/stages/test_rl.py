"""`egt rl` on the tiny judge: exact curriculum order, parameters change, kill + resume, LoRA merge."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from helpers import folder_state

from egt.core.config import load_config
from egt.core.errors import DataError
from egt.core.records import read_pairs, write_pairs
from egt.model.training import LANGUAGE_LORA_TARGETS
from egt.stages import rl

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- pure helpers

def test_run_lengths():
    assert rl.run_lengths(["a", "a", "b", "b", "b", "a"]) == (["a", "b", "a"], [2, 3, 1])
    assert rl.run_lengths([]) == ([], [])


def test_truncate_consumed(tmp_path):
    path = tmp_path / "consumed.jsonl"
    lines = [{"global_step": s, "ids": [str(s)]} for s in (1, 3, 5)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert rl.truncate_consumed(path, 3) == 1
    assert [line["global_step"] for line in rl.read_consumed(path)] == [1, 3]
    assert rl.truncate_consumed(path, 3) == 0
    assert rl.truncate_consumed(tmp_path / "absent.jsonl", 3) == 0
    with open(path, "a") as handle:               # a kill in the middle of a write
        handle.write('{"global_step": 5, "ids": ["x"')
    assert [line["global_step"] for line in rl.read_consumed(path)] == [1, 3]
    path.write_text('{"global_step": 1}\n{oops\n{"global_step": 3}\n')
    with pytest.raises(DataError, match="consumed.jsonl:2"):
        rl.read_consumed(path)


def test_curriculum_pairs_sorting_and_errors(synth_pairs_list, tmp_path):
    pairs = synth_pairs_list[:5]
    for p, order in zip(pairs, [3, 0, 4, 1, 2]):
        p.extra["order"] = order
    write_pairs(pairs, tmp_path / "ordered.parquet")
    assert [p.id for p in rl.curriculum_pairs(tmp_path / "ordered.parquet")] == \
        [pairs[i].id for i in (1, 3, 4, 0, 2)]
    plain = [p for p in read_pairs(tmp_path / "ordered.parquet")]
    for p in plain:
        p.extra.pop("order")
    write_pairs(plain, tmp_path / "plain.jsonl")
    assert [p.id for p in rl.curriculum_pairs(tmp_path / "plain.jsonl")] == [p.id for p in plain]
    pairs[1].extra["order"] = 3  # duplicate of pairs[0]
    write_pairs(pairs, tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="order"):
        rl.curriculum_pairs(tmp_path / "dup.parquet")


def test_both_orders_puts_each_swapped_copy_right_after_its_pair(synth_pairs_list, tmp_path):
    pairs = synth_pairs_list[:4]
    for p, order in zip(pairs, [2, 0, 3, 1]):
        p.extra["order"] = order
    write_pairs(pairs, tmp_path / "ordered.parquet")
    got = rl.curriculum_pairs(tmp_path / "ordered.parquet", both_orders=True)
    first = [pairs[i] for i in (1, 3, 0, 2)]
    assert [p.id for p in got] == [q for p in first for q in (p.id, p.id + "::swap")]
    for original, swapped in zip(got[::2], got[1::2]):
        assert (swapped.response_1, swapped.response_2) == (original.response_2, original.response_1)
        assert swapped.label == 3 - original.label and swapped.chosen == original.chosen
    # with both orders in one generation, the labels a generation trains on are balanced
    assert all(a.label + b.label == 3 for a, b in zip(got[::2], got[1::2]))


def test_shipped_rl_configs_load():
    paths = [p for p in (ROOT / "configs").rglob("*.yaml") if p.read_text().startswith("# egt: rl")]
    assert paths, "no rl config shipped"
    for path in paths:
        cfg = load_config(rl.Config, path)
        assert cfg.num_generations >= 2


# ---------------------------------------------------------------- tiny-model runs

@pytest.fixture(scope="module")
def sft_dir(coin_judge_dir) -> Path:
    """The coin judge (conftest): its sampled judgements are well formed and differ in accuracy, so GRPO gets
    non-zero advantages on any machine (a random judge scores 0 everywhere and learns nothing). Shared with
    test_judge_reward, so the suite trains it once."""
    return coin_judge_dir


@pytest.fixture(scope="module")
def curated(synth_pairs_path, tmp_path_factory) -> tuple[Path, list[str]]:
    """12 pairs whose `order` is a known permutation; returns (file, ids in curriculum order)."""
    pairs = read_pairs(synth_pairs_path("pool", 12, seed=3))
    orders = list(range(len(pairs)))
    random.Random(7).shuffle(orders)
    for pair, order in zip(pairs, orders):
        pair.extra["order"] = order
    path = write_pairs(pairs, tmp_path_factory.mktemp("curate") / "selected.parquet")
    expected = [p.id for p in sorted(pairs, key=lambda p: p.extra["order"])]
    assert expected != [p.id for p in pairs]  # the file order is not the curriculum order
    return path, expected


def _config(sft_dir, curated_file, output, **overrides) -> rl.Config:
    base = dict(model=sft_dir, train=curated_file, output=output, num_generations=2,
                per_device_train_batch_size=2, gradient_accumulation_steps=2, max_completion_length=24,
                learning_rate=1e-3, save_steps=100, logging_steps=1, seed=0,
                both_orders=False)   # the curriculum as given; test_rl_both_orders_... covers the default
    base.update(overrides)
    return rl.Config(**base)


def _state_dict(path: Path) -> dict:
    from egt.model.loading import load_judge

    model, _ = load_judge(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_rl_consumes_curriculum_in_order_and_trains(sft_dir, curated, tmp_path):
    curated_file, expected = curated
    # num_iterations=2: each generation (2 pairs x 2 completions, 2 micro-steps) feeds 2 optimizer steps.
    cfg = _config(sft_dir, curated_file, tmp_path / "run", max_steps=4, num_iterations=2)
    out = rl.run(cfg)
    lines = rl.read_consumed(out / "consumed.jsonl")
    assert [line["global_step"] for line in lines] == [1, 3]
    assert [line["generation"] for line in lines] == [0, 1]
    assert [line["ids"] for line in lines] == [expected[0:2], expected[2:4]]
    assert all(line["group_sizes"] == [2, 2] for line in lines)   # each group together, G completions

    history = json.loads((out / "train_summary.json").read_text())["log_history"]
    assert any(h.get("frac_reward_zero_std", 1) < 1 for h in history), "no reward variance: nothing to learn"
    before, after = _state_dict(sft_dir), _state_dict(out / "model")
    # bf16 on a GPU saves bf16 weights: compare in the saved dtype
    same = {k: bool((before[k].to(after[k].dtype) == after[k]).all()) for k in before}
    lm_changed = [k for k in before if "visual" not in k and not same[k]]
    vision = [k for k in before if "visual" in k]
    assert lm_changed, "no language-model parameter changed"
    assert vision and all(same[k] for k in vision), "frozen vision tower changed"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 4
    logged = [h for h in summary["log_history"] if "rewards/format_reward/mean" in h]
    assert logged and all(f"rewards/{n}/mean" in logged[0] for n in ("accuracy_reward", "logic_reward", "accuracy_x_logic_reward"))


@pytest.mark.slow
def test_rl_both_orders_trains_each_pair_and_its_swap_in_one_generation(sft_dir, curated, tmp_path):
    curated_file, expected = curated
    out = rl.run(_config(sft_dir, curated_file, tmp_path / "run", max_steps=2, both_orders=True))
    lines = rl.read_consumed(out / "consumed.jsonl")
    assert [line["ids"] for line in lines] == [[expected[0], expected[0] + "::swap"],
                                               [expected[1], expected[1] + "::swap"]]
    assert "both_orders: true" in (out / "config.yaml").read_text()


@pytest.mark.heavy
def test_rl_two_processes_consume_what_one_process_consumes(sft_dir, curated, tmp_path):
    """`egt rl` under torchrun with 2 CPU processes: per_device 1 x 2 processes x steps_per_generation 3
    = 6 completions = 3 pairs per generation, so one group straddles the two processes. consumed.jsonl is
    the one-process run's at the same generation batch (per_device 2 x 1 x 3) line for line. The weights are
    not compared: each process samples its completions from its own random stream (docs/scale.md)."""
    import os
    import subprocess
    import sys

    curated_file, expected = curated
    out = tmp_path / "mp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "egt.cli", "rl", f"model={sft_dir}", f"train={curated_file}", f"output={out}", "both_orders=false",
           "max_steps=2", "num_generations=2", "per_device_train_batch_size=1", "gradient_accumulation_steps=3",
           "max_completion_length=16", "learning_rate=1e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = rl.read_consumed(out / "consumed.jsonl")
    assert [line["ids"] for line in lines] == [expected[0:3], expected[3:6]]
    assert all(line["group_sizes"] == [2, 2, 2] for line in lines)
    assert [line["global_step"] for line in lines] == [1, 2]
    assert json.loads((out / "train_summary.json").read_text())["processes"] == 2
    one = rl.run(_config(sft_dir, curated_file, tmp_path / "one", max_steps=2, per_device_train_batch_size=2,
                         gradient_accumulation_steps=3, max_completion_length=16))
    assert rl.read_consumed(one / "consumed.jsonl") == lines


# A driver that runs `egt rl` in this process and kills itself (SIGKILL) at a chosen point:
# `step:N` after optimizer step N, `saving:N` half-way through writing checkpoint-N's trainer_state.json
# (the Trainer's last checkpoint file, after the weights, optimizer, RNG states and generation buffer).
KILL_DRIVER = """
import os, signal, sys
from transformers import TrainerCallback, TrainerState
from egt.stages import rl
from egt.core.config import load_config

where, at = sys.argv[1].split(":")
cfg = load_config(rl.Config, None, sys.argv[2:])

class KillAfterStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if where == "step" and state.global_step == int(at):
            os.kill(os.getpid(), signal.SIGKILL)

save_to_json = TrainerState.save_to_json
def save_then_die(self, path):
    if where == "saving" and path.endswith(f"checkpoint-{at}/trainer_state.json"):
        with open(path, "w") as handle:
            handle.write('{"global_step": ')
            handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    save_to_json(self, path)
TrainerState.save_to_json = save_then_die
rl.run(cfg, callbacks=[KillAfterStep()])
"""


def _rl_args(sft_dir, curated_file, out) -> list[str]:
    # steps_per_generation=4 > GA=2: one generation of 4 pairs feeds 2 optimizer steps, so checkpoint-3
    # falls inside the second generation (steps 3-4): resuming there needs the generation buffer.
    return [f"model={sft_dir}", f"train={curated_file}", f"output={out}", "max_steps=6", "num_generations=2",
            "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "steps_per_generation=4",
            "max_completion_length=24", "learning_rate=1e-3", "save_steps=3", "logging_steps=1", "seed=0",
            "both_orders=false"]


@pytest.mark.slow
def test_rl_killed_anywhere_resumes_to_the_same_weights(sft_dir, curated, tmp_path):
    """SIGKILL between checkpoints, then while a checkpoint is written: the incomplete checkpoint is removed,
    the run resumes from the last complete one (inside a generation: its buffer is restored) and ends with the
    uninterrupted run's curriculum and bit-identical weights (CPU)."""
    import os
    import signal
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    curated_file, expected = curated

    def egt_rl(out, kill=None):
        cmd = [sys.executable, "-c", KILL_DRIVER, kill] if kill else [sys.executable, "-m", "egt.cli", "rl"]
        proc = subprocess.run(cmd + _rl_args(sft_dir, curated_file, out), env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == (-signal.SIGKILL if kill else 0), proc.stderr[-3000:]
        return proc

    egt_rl(tmp_path / "ref")
    out = tmp_path / "killed"
    checkpoints = out / "checkpoints"
    egt_rl(out, kill="step:5")                       # between checkpoints, inside the third generation
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-3"]
    assert (checkpoints / "checkpoint-3" / "egt_generation_buffer-0-of-1.pt").exists()
    assert [line["global_step"] for line in rl.read_consumed(out / "consumed.jsonl")] == [1, 3, 5]
    egt_rl(out, kill="saving:6")                     # resumes at 3, dies while writing checkpoint-6
    assert (checkpoints / "checkpoint-6" / "model.safetensors").exists()
    assert (checkpoints / "checkpoint-6" / "trainer_state.json").read_text() == '{"global_step": '
    assert not (out / "model").exists()
    done = egt_rl(out)                               # removes checkpoint-6, resumes at 3 again
    assert "removing" in done.stderr and "incomplete checkpoint" in done.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 6 and summary["resumed_from"].endswith("checkpoint-3")

    lines = rl.read_consumed(out / "consumed.jsonl")
    assert lines == rl.read_consumed(tmp_path / "ref" / "consumed.jsonl")
    assert [pair_id for line in lines for pair_id in line["ids"]] == expected
    ref, got = (load_file(str(d / "model" / "model.safetensors")) for d in (tmp_path / "ref", out))
    assert ref.keys() == got.keys()
    differing = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differing, f"{len(differing)} tensors differ, max abs " \
        f"{max((ref[k].float() - got[k].float()).abs().max().item() for k in differing)}"
    start = load_file(str(sft_dir / "model.safetensors"))
    assert any(not torch.equal(start[k], v) for k, v in ref.items() if "visual" not in k)  # training moved it


@pytest.mark.slow
def test_rl_rerun_with_other_settings_is_refused(sft_dir, curated, tmp_path):
    from egt.core.runfolder import StaleRunError

    curated_file, _ = curated
    cfg = _config(sft_dir, curated_file, tmp_path / "run", max_steps=2, save_steps=1)
    rl.run(cfg)
    with pytest.raises(StaleRunError, match=r"setting learning_rate: 0\.001 -> 0\.002"):
        rl.run(_config(sft_dir, curated_file, tmp_path / "run", max_steps=2, save_steps=1, learning_rate=2e-3))
    rl.run(cfg)   # the same settings: the finished run is found complete, nothing is mixed


@pytest.mark.slow
def test_rl_lora_saves_a_merged_judge(sft_dir, curated, tmp_path):
    from egt.model.loading import load_judge

    curated_file, _ = curated
    cfg = _config(sft_dir, curated_file, tmp_path / "lora", max_steps=4, lora=True, lora_r=4, lora_alpha=8,
                  learning_rate=1e-2)
    out = rl.run(cfg)
    history = json.loads((out / "train_summary.json").read_text())["log_history"]
    assert any(h.get("frac_reward_zero_std", 1) < 1 for h in history), "no reward variance: nothing to learn"
    model, processor = load_judge(out / "model")   # plain HF judge, no adapter needed
    assert not any("lora" in k for k in model.state_dict())
    before, after = _state_dict(sft_dir), _state_dict(out / "model")
    changed = [k for k in before if not (before[k].to(after[k].dtype) == after[k]).all()]
    assert changed and all(any(m in k for m in LANGUAGE_LORA_TARGETS) for k in changed)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


# A driver that runs `egt rl` and kills itself (SIGKILL) half-way through saving the final model: the first
# weights file of the final save (not a checkpoint's) is written half, then the process dies.
FINAL_SAVE_KILL_DRIVER = """
import os, signal, sys
from pathlib import Path
from transformers import PreTrainedModel
from egt.stages import rl
from egt.core.config import load_config

cfg = load_config(rl.Config, None, sys.argv[1:])
save_pretrained = PreTrainedModel.save_pretrained
def save_then_die(self, save_directory, *args, **kwargs):
    if "checkpoint-" not in str(save_directory):
        save_pretrained(self, save_directory, *args, **kwargs)
        weights = Path(save_directory) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return save_pretrained(self, save_directory, *args, **kwargs)
PreTrainedModel.save_pretrained = save_then_die
rl.run(cfg)
"""


@pytest.mark.heavy   # several processes: `make test-heavy`
def test_finished_rl_run_is_not_trained_again_and_a_kill_during_the_final_save_ends_the_same(sft_dir, curated,
                                                                                           tmp_path):
    """A rerun of a finished run changes nothing (no step 3, no checkpoint-3, no third consumed line); a run killed
    while its final model/ is written ends, when rerun, with the uninterrupted run's weights, bit for bit (CPU)."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    curated_file, _ = curated

    def args(out):
        return [f"model={sft_dir}", f"train={curated_file}", f"output={out}", "max_steps=2", "num_generations=2",
                "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "max_completion_length=24",
                "learning_rate=1e-3", "save_steps=1", "logging_steps=1", "seed=0", "both_orders=false"]

    def egt_rl(out, driver=None):
        cmd = [sys.executable, "-c", driver] if driver else [sys.executable, "-m", "egt.cli", "rl"]
        proc = subprocess.run(cmd + args(out), env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == (-signal.SIGKILL if driver else 0), proc.stderr[-3000:]
        return proc

    ref = tmp_path / "ref"
    egt_rl(ref)
    finished = folder_state(ref)
    assert sorted(p.name for p in (ref / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert "finished already" in egt_rl(ref).stderr   # a rerun of the finished run: nothing changes
    assert folder_state(ref) == finished
    assert len(rl.read_consumed(ref / "consumed.jsonl")) == 2

    out = tmp_path / "killed"
    egt_rl(out, driver=FINAL_SAVE_KILL_DRIVER)       # dies half-way through writing the final weights
    assert not (out / "train_summary.json").exists() and not (out / "model").exists()
    egt_rl(out)
    assert not (out / "checkpoints" / "checkpoint-3").exists()
    assert rl.read_consumed(out / "consumed.jsonl") == rl.read_consumed(ref / "consumed.jsonl")
    assert (out / "model" / "model.safetensors").read_bytes() == (ref / "model" / "model.safetensors").read_bytes()

# Rank 1 of a torchrun world kills itself (SIGKILL) after optimizer step N; the launcher then stops rank 0.
RANK_KILL_DRIVER = """
import os, signal, sys
from transformers import TrainerCallback
from egt.stages import rl
from egt.core.config import load_config

at = int(sys.argv[1])
cfg = load_config(rl.Config, None, sys.argv[2:])

class KillRank1(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if os.environ.get("RANK") == "1" and state.global_step == at:
            os.kill(os.getpid(), signal.SIGKILL)
rl.run(cfg, callbacks=[KillRank1()])
"""


@pytest.mark.heavy
def test_rl_two_processes_killed_rank_resumes_to_the_same_weights(sft_dir, curated, tmp_path):
    """torchrun with 2 CPU processes; rank 1 killed after step 5, between checkpoint 3 (inside the second
    generation: each rank saved its slice of the generation buffer) and 6. The rerun resumes from checkpoint 3
    and ends with the uninterrupted 2-process run's consumed.jsonl and weights, bit for bit (before, the buffers
    saved by CPU processes, device "cpu:0", could not be loaded: the generation was sampled again, 3.9e-3 off)."""
    import os
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    curated_file, expected = curated
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    driver = tmp_path / "kill_rank1.py"
    driver.write_text(RANK_KILL_DRIVER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

    def egt_rl(out, kill_at=None):
        args = [a.replace("per_device_train_batch_size=2", "per_device_train_batch_size=1")
                for a in _rl_args(sft_dir, curated_file, out)]      # 1 x 2 processes: the 1-process generation
        entry = [str(driver), str(kill_at)] if kill_at else ["-m", "egt.cli", "rl"]
        proc = subprocess.run(launcher + entry + args, env=env, capture_output=True, text=True, timeout=600)
        assert (proc.returncode != 0) if kill_at else (proc.returncode == 0), proc.stderr[-3000:]

    egt_rl(tmp_path / "ref")
    out = tmp_path / "killed"
    egt_rl(out, kill_at=5)
    checkpoint = out / "checkpoints" / "checkpoint-3"
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint")) == [checkpoint.name]
    assert {p.name for p in checkpoint.glob("egt_generation_buffer-*")} == {
        "egt_generation_buffer-0-of-2.pt", "egt_generation_buffer-1-of-2.pt"}
    egt_rl(out)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-3") and summary["processes"] == 2
    lines = rl.read_consumed(out / "consumed.jsonl")
    assert lines == rl.read_consumed(tmp_path / "ref" / "consumed.jsonl")
    assert [pair_id for line in lines for pair_id in line["ids"]] == expected
    ref, got = (load_file(str(d / "model" / "model.safetensors")) for d in (tmp_path / "ref", out))
    differing = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differing, f"{len(differing)} tensors differ, max abs " \
        f"{max((ref[k] - got[k]).abs().max().item() for k in differing)}"

def test_vllm_prompts_have_one_placeholder_per_image_and_expand_to_the_training_prompt(tiny_model_dir,
                                                                                      synth_pairs_list):
    """What vLLM colocate gets (rl.unexpanded_prompt_ids): the image token once per image; the processor expands
    that prompt to exactly the ids TRL trains on (its apply_chat_template(tokenize=True))."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    pairs = synth_pairs_list[:3]
    dataset = rl.build_dataset(pairs)
    prompts = []
    for row in dataset:
        messages = json.loads(json.dumps(row["prompt"]))
        messages[0]["content"][0] = {"type": "image", "image": row["images"][0]}
        prompts.append(messages)
    ids = rl.unexpanded_prompt_ids(processor, prompts)
    expanded = processor.apply_chat_template(conversation=prompts, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
    image_token = processor.image_token_id
    for one, full, row in zip(ids, expanded, dataset):
        assert one.count(image_token) == len(row["images"]) == 1
        assert full.count(image_token) > 1
        text = processor.tokenizer.decode(one)
        assert list(processor(text=[text], images=[row["images"]])["input_ids"][0]) == list(full)


def test_grpo_extra_unknown_key_and_deepspeed_without_its_package(sft_dir, curated, tmp_path, monkeypatch):
    import importlib.util

    from egt.core.errors import ConfigError, MissingDependency

    curated_file, _ = curated
    with pytest.raises(ConfigError, match=r"grpo_extra: unknown GRPOConfig key 'mask_truncated_completion' "
                                          r"\(did you mean mask_truncated_completions"):
        rl.run(_config(sft_dir, curated_file, tmp_path / "a", grpo_extra={"mask_truncated_completion": True}))
    if importlib.util.find_spec("deepspeed") is None:
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")   # what accelerate launch sets with a DeepSpeed config
        with pytest.raises(MissingDependency, match=r"pip install 'egt\[deepspeed\]'"):
            rl.run(_config(sft_dir, curated_file, tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_image_caps_that_vllm_would_not_see_are_refused(sft_dir, curated, tmp_path):
    from egt.core.errors import ConfigError

    curated_file, _ = curated
    cfg = _config(sft_dir, curated_file, tmp_path / "c", processor_max_pixels=32 * 32, use_vllm=True)
    with pytest.raises(ConfigError, match="vLLM reads the image sizes from"):
        rl.capped_processor(cfg)
    processor = rl.capped_processor(_config(sft_dir, curated_file, tmp_path / "c", processor_max_pixels=32 * 32))
    assert processor.image_processor.size["longest_edge"] == 32 * 32 and processor.tokenizer.padding_side == "left"
