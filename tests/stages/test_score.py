"""egt score: score columns, teacher forcing, kill -9 + resume, fingerprint, merge, 2 processes."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import child_pids

from egt.core.errors import DataError, EgtError
from egt.core.records import read_rows, write_pairs
from egt.core.runfolder import StaleRunError

N_PAIRS = 6
CLI_ARGS = ["--samples", "2", "--max_new_tokens", "24", "--batch_size", "2", "--shard_size", "1", "--seed", "0",
            "--progress", "false"]
# One thread everywhere: the runs compared below must do the same float operations.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _rows_text(path: Path) -> str:
    """All columns of a scores file as text: floats by repr, so equality is exact (NaN == NaN)."""
    return json.dumps(read_rows(path), sort_keys=True, default=repr)


def _score_cmd(model: Path, pairs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "egt.cli", "score", "--model", str(model), "--pairs", str(pairs),
            "--output", str(out), *CLI_ARGS]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def pairs6(synth_pairs_path) -> Path:
    return synth_pairs_path("pool", N_PAIRS, 0, "ambiguity:0.25")


@pytest.fixture(scope="module")
def reference_run(tiny_model_dir, pairs6, tmp_path_factory) -> Path:
    """One uninterrupted single-process run (subprocess, same settings as the runs compared with it)."""
    out = tmp_path_factory.mktemp("score_ref") / "ref"
    _run(_score_cmd(tiny_model_dir, pairs6, out))
    return out


# ---------------------------------------------------------------- columns (in-process)

@pytest.mark.slow
def test_teacher_forced_columns_match_an_independent_forward_pass(tiny_model_dir, synth_pairs_list, tmp_path):
    from egt.data.synth import oracle_trace
    from egt.model.encoding import judge_batch_inputs
    from egt.model.entropy import response_entropies, token_entropy
    from egt.model.loading import load_judge
    from egt.model.spans import token_char_spans
    from egt.stages.score import Config, run

    pairs = copy.deepcopy(synth_pairs_list[:3])  # the fixture's pairs are shared: never mutate them
    # A column holds a string or a list of strings per pair (K = its length); Parquet needs one type.
    pairs[0].extra["trace"] = [oracle_trace(pairs[0])]
    pairs[1].extra["trace"] = [oracle_trace(pairs[1])]
    pairs[2].extra["trace"] = [oracle_trace(pairs[2]), oracle_trace(pairs[2], faithful=False)]
    write_pairs(pairs, tmp_path / "traces.parquet")
    out = run(Config(model=str(tiny_model_dir), pairs=tmp_path / "traces.parquet", output=tmp_path / "tf",
                     mode="teacher_forced", batch_size=2, shard_size=2, progress=False))
    rows = read_rows(out / "scores.parquet")
    assert [r["id"] for r in rows] == [p.id for p in pairs]

    model, processor = load_judge(tiny_model_dir)
    tok = processor.tokenizer
    for pair, row in zip(pairs, rows):
        traces = pair.extra["trace"]
        assert row["completions"] == traces
        responses = []
        for trace in traces:
            batch = judge_batch_inputs(processor, [pair], completions=[trace])
            mask = batch.pop("completion_mask")[0].bool()
            with torch.inference_mode():
                logits = model(**batch).logits[0]
            positions = mask.nonzero().flatten()
            entropies = token_entropy(logits[positions - 1].double()).tolist()  # logits at t-1 predict t
            ids = batch["input_ids"][0][positions].tolist()
            responses.append(response_entropies(trace, token_char_spans(tok, ids), entropies))
        true = pair.meta["true_label"]
        expected_verdicts = [true] if len(traces) == 1 else [true, 3 - true]
        assert row["verdicts"] == expected_verdicts
        assert row["parse_failures"] == 0 and row["answer_entropy_missing"] == 0
        assert row["format_ok_rate"] == 1.0
        assert row["k_accuracy"] == pytest.approx(sum(v == pair.label for v in expected_verdicts) / len(traces))
        assert row["vote_entropy_nats"] == pytest.approx(0.0 if len(traces) == 1 else math.log(2))
        for column, attr in [("answer_entropy_nats", "answer_nats"), ("sentence_entropy_nats", "sentence_nats"),
                             ("mean_token_entropy_nats", "mean_token_nats"), ("max_token_entropy_nats", "max_token_nats")]:
            expected = sum(getattr(r, attr) for r in responses) / len(responses)
            assert row[column] == pytest.approx(expected, rel=1e-5, abs=1e-6), column


@pytest.mark.slow
def test_generate_columns_tokens_dump_and_seeds(tiny_model_dir, synth_pairs_list, tmp_path):
    from egt.model.generation import JudgeRequest, judge, judgement_seed
    from egt.model.loading import load_judge
    from egt.stages.score import Config, run

    pairs = synth_pairs_list[:3]
    write_pairs(pairs, tmp_path / "p.parquet")
    out = run(Config(model=str(tiny_model_dir), pairs=tmp_path / "p.parquet", output=tmp_path / "gen", samples=3,
                     max_new_tokens=10, batch_size=4, shard_size=2, seed=5, dump_tokens=True, progress=False))
    rows = read_rows(out / "scores.parquet")
    tokens = read_rows(out / "tokens.parquet")
    summary = json.loads((out / "summary.json").read_text())
    from egt.core.score_columns import SCORE_COLUMNS  # the one definition of what a score row adds to its pair

    assert [c for c in rows[0] if c not in pairs[0].to_row()] == list(SCORE_COLUMNS)
    assert summary["pairs"] == 3 and summary["judgements"] == 9
    assert summary["parse_failures"] == sum(r["parse_failures"] for r in rows)
    assert len(tokens) == 9 and [(t["id"], t["sample"]) for t in tokens] == [(p.id, k) for p in pairs for k in range(3)]

    model, processor = load_judge(tiny_model_dir)
    direct = judge(model, processor, [JudgeRequest(p, judgement_seed(5, p.id, k)) for p in pairs for k in range(3)],
                   max_new_tokens=10, batch_size=9, with_entropy=True, progress=False)
    for i, row in enumerate(rows):
        dumped = tokens[3 * i:3 * i + 3]
        assert row["completions"] == ["".join(t["tokens"]) for t in dumped]
        assert row["completions"] == [j.text for j in direct[3 * i:3 * i + 3]]  # seeds, not batches, decide
        assert len(row["verdicts"]) == 3 and row["n_tokens_mean"] == 10.0
        per_response = [sum(t["token_entropies_nats"]) / len(t["token_entropies_nats"]) for t in dumped]
        assert row["mean_token_entropy_nats"] == pytest.approx(sum(per_response) / 3, rel=1e-12)
        assert row["truncated"] == 3


# ---------------------------------------------------------------- resume, fingerprint, merge

def _markers(out: Path) -> list[Path]:
    return sorted((out / "shards").glob("*.done")) if (out / "shards").exists() else []


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_model_dir, pairs6, reference_run, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_score_cmd(tiny_model_dir, pairs6, out), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _markers(out):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no shard finished within 120 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in _markers(out)}
    assert 1 <= len(finished) < N_PAIRS, "the run was not interrupted mid-way"
    assert not (out / "scores.parquet").exists()
    # A torn shard (killed while writing) must be rescored, never trusted.
    torn = next(i for i in range(N_PAIRS) if f"shard-{i:05d}.done" not in finished)
    (out / "shards" / f"shard-{torn:05d}.parquet").write_bytes(b"PAR1 torn")

    _run(_score_cmd(tiny_model_dir, pairs6, out))
    assert {p.name: p.stat().st_mtime_ns for p in _markers(out) if p.name in finished} == finished  # skipped
    assert len(_markers(out)) == N_PAIRS
    assert _rows_text(out / "scores.parquet") == _rows_text(reference_run / "scores.parquet")


@pytest.mark.slow
def test_resume_with_other_config_or_input_is_refused(tiny_model_dir, pairs6, reference_run, synth_pairs_path):
    from egt.stages.score import Config, run

    base = dict(model=str(tiny_model_dir), pairs=pairs6, output=reference_run, samples=2, max_new_tokens=24,
                batch_size=2, shard_size=1, seed=0, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in _markers(reference_run)}
    with pytest.raises(StaleRunError, match=r"setting samples: 2 -> 3"):
        run(Config(**{**base, "samples": 3}))
    with pytest.raises(StaleRunError, match=r"input pairs: [0-9a-f]{12}\.\.\. -> [0-9a-f]{12}\.\.\."):
        run(Config(**{**base, "pairs": synth_pairs_path("pool", N_PAIRS + 1, 0, "ambiguity:0.25")}))
    assert {p.name: p.stat().st_mtime_ns for p in _markers(reference_run)} == before


@pytest.mark.slow
def test_merge_only(reference_run, tmp_path):
    from egt.stages.score import Config, run

    out = tmp_path / "copy"
    shutil.copytree(reference_run, out)
    (out / "scores.parquet").unlink()
    run(Config(output=out, merge=True))
    assert _rows_text(out / "scores.parquet") == _rows_text(reference_run / "scores.parquet")
    (out / "shards" / "shard-00004.done").unlink()
    with pytest.raises(EgtError, match=r"1 of 6 shards are not finished \(first: \[4\]\)"):
        run(Config(output=out, merge=True))


@pytest.mark.slow
def test_changed_weights_of_the_same_size_are_refused_then_overwritten(tiny_model_dir, pairs6, tmp_path):
    """The fingerprint reads model file contents, not sizes: a model edited in place is another model."""
    from egt.stages.score import Config, run

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    base = dict(model=str(model), pairs=pairs6, output=tmp_path / "out", samples=1, max_new_tokens=8,
                batch_size=2, shard_size=3, seed=0, progress=False)
    run(Config(**base))
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF                     # one bit of the last tensor: same size, other weights
    weights.write_bytes(bytes(data))
    before = (tmp_path / "out" / "scores.parquet").read_bytes()
    with pytest.raises(StaleRunError, match=r"model file model\.safetensors: [0-9a-f]{12}\.\.\. -> .*--overwrite"):
        run(Config(**base))
    assert (tmp_path / "out" / "scores.parquet").read_bytes() == before   # nothing mixed in
    run(Config(**base, overwrite=True))                                    # the user asks: score again
    assert len(_markers(tmp_path / "out")) == 2


def test_a_run_that_failed_before_scoring_does_not_block_its_rerun(tiny_model_dir, pairs6, tmp_path):
    from egt.stages.score import Config, run

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "no_such_model"}))
    base = dict(pairs=pairs6, output=tmp_path / "out", samples=1, max_new_tokens=8, batch_size=2, shard_size=3,
                progress=False)
    with pytest.raises(EgtError, match=r"broken: cannot load the model"):
        run(Config(model=str(broken), **base))
    assert (tmp_path / "out" / "fingerprint.json").exists() and not _markers(tmp_path / "out")
    run(Config(model=str(tiny_model_dir), **base))          # corrected: not refused
    assert len(_markers(tmp_path / "out")) == 2 and not (tmp_path / "out" / ".egt.lock").exists()
    with pytest.raises(EgtError, match=r"nowhere: model folder not found"):
        run(Config(model=str(tmp_path / "nowhere"), **base))


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tiny_model_dir, pairs6, tmp_path):
    from egt.core.runfolder import run_lock

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom egt.core.runfolder import run_lock\n"
                               f"with run_lock({str(out)!r}, 'score'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(_score_cmd(tiny_model_dir, pairs6, out), env=ENV, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert f"in use by egt score (pid {holder.pid} on " in proc.stderr and proc.stderr.count("\n") == 1
        assert not (out / "shards").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale, taken over, and the run goes on
    assert (out / ".egt.lock").exists()
    with run_lock(out, "score") as lock:
        assert lock.took_over["pid"] == holder.pid


@pytest.mark.parametrize("path", ["../../../../../../etc/passwd", "/etc/passwd", "/no/such/dir/x.png",
                                  "../no_such_file.png"])
def test_images_outside_their_root_are_refused_without_saying_if_they_exist(tiny_model_dir, tmp_path, path):
    from egt.stages.score import Config, run

    rows = [{"id": "a", "images": [{"path": path}], "question": "Q", "response_1": "x", "response_2": "y",
             "label": 1}]
    pairs = tmp_path / "data" / "pairs.jsonl"
    pairs.parent.mkdir()
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        run(Config(model=str(tiny_model_dir), pairs=pairs, output=tmp_path / "out", progress=False))
    message = str(err.value)
    assert message.startswith(f"{pairs}:1: field 'images'")
    assert ("leaves the image root" if not path.startswith("/") else "is outside the image root") in message
    assert "not found" not in message and "exist" not in message
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tiny_model_dir, pairs6, reference_run, tmp_path):
    # accelerate 1.15's `--cpu` runs ONE process unless mpirun is configured; `--multi_gpu` uses its
    # torchrun launcher, and on a machine without CUDA `egt score` sets up a gloo CPU group.
    accelerate = Path(sys.executable).parent / "accelerate"
    out = tmp_path / "two"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "egt.cli", "score", "--model", str(tiny_model_dir), "--pairs", str(pairs6),
           "--output", str(out), *CLI_ARGS]
    if torch.cuda.is_available():
        pytest.skip("this test runs CPU processes")
    _run(cmd, timeout=180)
    ranks = {json.loads(p.read_text())["rank"] for p in _markers(out)}
    assert ranks == {0, 1}
    assert _rows_text(out / "scores.parquet") == _rows_text(reference_run / "scores.parquet")


def test_fast_span_tokenizer_gives_the_same_spans(tiny_model_dir):
    from transformers import AutoProcessor

    from egt.model.spans import span_tokenizer, token_char_spans

    tok = AutoProcessor.from_pretrained(str(tiny_model_dir)).tokenizer
    raw = span_tokenizer(tok)
    assert raw is not tok  # the Rust tokenizer is used for the tiny judge
    text = "<think>Response 1 says a red circle. Ünïcödé → ok.</think><answer>2</answer><|im_start|>"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [300, 17, 5]
    assert raw.decode(ids, skip_special_tokens=False) == tok.decode(ids)
    assert token_char_spans(raw, ids) == token_char_spans(tok, ids)


def test_vllm_backend_without_vllm_says_how_to_install(tiny_model_dir, synth_pairs, tmp_path):
    import importlib.util

    from egt.core.errors import MissingDependency
    from egt.stages.score import Config, run

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    with pytest.raises(MissingDependency, match=r"pip install 'egt\[vllm\]'") as error:
        run(Config(model=str(tiny_model_dir), pairs=synth_pairs, output=tmp_path / "v", backend="vllm",
                   progress=False))
    if not torch.cuda.is_available():   # the CUDA build would not run here: the message names the CPU build
        assert "make vllm-env" in str(error.value)


# ---------------------------------------------------------------- independent jobs (egt.core.shards)

TIMING_FIELDS = ("wall_s", "scoring_s", "pairs_per_s", "tokens_per_s")


@pytest.mark.heavy
def test_three_independent_shard_jobs_equal_one_process(tiny_model_dir, pairs6, reference_run, tmp_path):
    """Three jobs started together on one folder, each told its slice another way (`--shard 0/3`, a SLURM
    array task, torchrun's RANK / WORLD_SIZE without a process group): each scores only its shards, the last
    to finish merges, and scores.parquet is byte for byte the one-process file."""
    out = tmp_path / "jobs"
    slurm = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}   # --array=1-3
    jobs = [("0/3", {}), ("slurm", slurm), ("env", {"RANK": "2", "WORLD_SIZE": "3"})]
    procs = [subprocess.Popen(_score_cmd(tiny_model_dir, pairs6, out) + ["--shard", shard], env={**ENV, **extra},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for shard, extra in jobs]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    by_shard = {int(p.name.split("-")[1].split(".")[0]): json.loads(p.read_text()) for p in _markers(out)}
    assert sorted(by_shard) == list(range(N_PAIRS))
    assert (out / "scores.parquet").read_bytes() == (reference_run / "scores.parquet").read_bytes()
    summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k not in TIMING_FIELDS}
                 for d in (out, reference_run)]
    assert summaries[0] == summaries[1]
    assert not list(out.glob(".egt*.lock"))   # every job let go of its slice


@pytest.mark.heavy
def test_a_shard_job_that_is_a_launched_world_splits_its_slice_over_its_ranks(tiny_model_dir, pairs6, reference_run,
                                                                              tmp_path):
    """Job 0/2 as two torchrun processes (its slice's shards split over its ranks) beside job 1/2 as one."""
    out = tmp_path / "mixed"
    world = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             *_score_cmd(tiny_model_dir, pairs6, out)[1:], "--shard", "0/2"]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in (world, _score_cmd(tiny_model_dir, pairs6, out) + ["--shard", "1/2"])]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    ranks = {json.loads(p.read_text())["shard"]: json.loads(p.read_text())["rank"] for p in _markers(out)}
    assert {i: ranks[i] for i in (0, 2, 4)} == {0: 0, 2: 1, 4: 0}     # slot 0 + 2r of 4: shards 0, 4 | 2
    assert (out / "scores.parquet").read_bytes() == (reference_run / "scores.parquet").read_bytes()



@pytest.mark.heavy
def test_a_rank_killed_mid_run_then_a_rerun_of_another_size_equals_one_process(tiny_model_dir, pairs6, reference_run,
                                                                                tmp_path):
    """kill -9 of one rank of a torchrun world of 2 (the launcher then stops the other): the rerun, here one
    process, redoes only the unfinished shards and merges the one-process file."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *_score_cmd(tiny_model_dir, pairs6, out)[1:]]
    launcher = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_markers(out)) < 2:
        assert launcher.poll() is None, launcher.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no shard finished within 240 s"
        time.sleep(0.005)
    ranks = child_pids(launcher.pid)
    assert len(ranks) == 2
    os.kill(max(ranks), signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    finished = {p.name: p.stat().st_mtime_ns for p in _markers(out)}
    assert 2 <= len(finished) < N_PAIRS and not (out / "scores.parquet").exists()
    _run(_score_cmd(tiny_model_dir, pairs6, out))
    assert {p.name: p.stat().st_mtime_ns for p in _markers(out) if p.name in finished} == finished
    assert (out / "scores.parquet").read_bytes() == (reference_run / "scores.parquet").read_bytes()
