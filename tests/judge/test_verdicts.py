"""`egt judge`: verdicts, abstention by entropy, resume and settings, against a served judge
(helpers.FakeServedJudge on a real loopback server) and with the tiny judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FakeOpenAIServer, FakeServedJudge, kill_once_journalled
from PIL import Image

from egt.cli import main
from egt.core.records import ImageRef, PreferencePair, write_pairs
from egt.judge import verdicts


def make_pairs(tmp_path: Path, n: int = 8, hard_from: int = 4, labels: bool = True) -> Path:
    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    pairs = []
    for i in range(n):
        label = 1 + i % 2
        good, bad = f"good {i}", f"bad {i}"
        pairs.append(PreferencePair(f"p{i}", [ImageRef(path=str(image))], ("hard " if i >= hard_from else "") + f"q{i}",
                                    good if label == 1 else bad, bad if label == 1 else good, label))
    path = write_pairs(pairs, tmp_path / "pairs.jsonl")
    if not labels:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def args_for(url, pairs, out, *extra):
    return ["judge", "--model", url, "--served_model", "judge-x", "--vocab_size", "10", "--top_logprobs", "2",
            "--pairs", str(pairs), "--output", str(out), "--progress", "false", "--batch_size", "4", *extra]


def posts(server):
    return sum(r[0] == "POST" for r in server.requests)


def test_judge_command_abstains_on_the_uncertain_pairs_and_resumes(tmp_path, capsys):
    pairs, out = make_pairs(tmp_path), tmp_path / "out"
    with FakeOpenAIServer(FakeServedJudge()) as server:
        assert main(args_for(server.base_url, pairs, out, "--limit", "3")) == 0
        assert posts(server) == 6 and len(read_jsonl(out / verdicts.LOG_NAME)) == 3
        # the rest, keeping the 3 already judged; the hard pairs (answered wrongly) have the higher answer entropy
        assert main(args_for(server.base_url, pairs, out, "--coverage", "0.5", "--abstain_metric", "answer")) == 0
        assert posts(server) == 18   # chunks of 2 pairs: the chunk p2-p3 that --limit cut is judged again whole
        rows = read_jsonl(out / "verdicts.jsonl")
        assert [r["id"] for r in rows] == [f"p{i}" for i in range(8)]
        assert [r["decision"] for r in rows] == [1, 2, 1, 2] + ["abstain"] * 4
        assert [r["correct"] for r in rows] == [True] * 4 + [False] * 4
        assert all(r["orders_agree"] and r["confidence"] == 1.0 and r["entropy_kind"] == "upper_bound" for r in rows)
        assert rows[0]["uncertainty"] == rows[0]["entropies"]["answer"] < rows[7]["uncertainty"]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["accuracy"] == 0.5 and summary["accuracy_kept"] == 1.0 and summary["coverage"] == 0.5
        assert summary["abstained"] == 4 and summary["threshold_nats"] == rows[0]["uncertainty"]
        assert "4 abstained" in capsys.readouterr().out
        # abstention settings change freely: nothing is judged again
        threshold = (rows[0]["uncertainty"] + rows[7]["uncertainty"]) / 2
        assert main(args_for(server.base_url, pairs, out, "--abstain_above", str(threshold), "--abstain_metric",
                             "answer")) == 0
        assert posts(server) == 18
        assert [r["decision"] for r in read_jsonl(out / "verdicts.jsonl")][3:5] == [2, "abstain"]
        # judging settings cannot
        assert main(args_for(server.base_url, pairs, out, "--samples", "2")) == 1
        assert "setting samples: 1 -> 2" in capsys.readouterr().err
    judged = read_jsonl(out / verdicts.LOG_NAME)
    assert len(judged) == 9 and len({r["key"] for r in judged}) == 8 and all(len(r["traces"]) == 2 for r in judged)
    assert judged[2] == judged[3]            # p2, judged again in the same chunk: the same comparison


def test_pairs_edited_in_place_are_refused_not_reused(tmp_path, capsys):
    """Responses swapped in the same file: the old verdicts no longer belong to it. A rerun into the same folder is
    refused naming the changed input (before, it reported the old accuracy, 1.0, where a fresh folder gives 0.0);
    --overwrite judges again and agrees with a fresh folder."""
    pairs, out = make_pairs(tmp_path, hard_from=8), tmp_path / "out"
    with FakeOpenAIServer(FakeServedJudge()) as server:
        assert main(args_for(server.base_url, pairs, out)) == 0
        assert json.loads((out / "summary.json").read_text())["accuracy"] == 1.0
        rows = read_jsonl(pairs)
        for row in rows:
            row["response_1"], row["response_2"] = row["response_2"], row["response_1"]
        pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))   # labels now name the bad responses
        capsys.readouterr()
        assert main(args_for(server.base_url, pairs, out)) == 1
        err = capsys.readouterr().err
        assert "holds judge results of other inputs or settings (input pairs: " in err
        assert "--overwrite" in err
        assert json.loads((out / "summary.json").read_text())["accuracy"] == 1.0    # the old results, untouched
        assert main(args_for(server.base_url, pairs, tmp_path / "fresh")) == 0
        assert main(args_for(server.base_url, pairs, out, "--overwrite")) == 0
    for folder in (out, tmp_path / "fresh"):
        assert json.loads((folder / "summary.json").read_text())["accuracy"] == 0.0


def test_an_endpoint_is_fingerprinted_by_its_url_and_served_model(tmp_path, capsys):
    """The weights behind a URL cannot be hashed: the URL and the served model name stand for them (the name the
    server lists when none is given)."""
    pairs, out = make_pairs(tmp_path), tmp_path / "out"
    with FakeOpenAIServer(FakeServedJudge(models=("judge-x", "judge-y"))) as server:
        assert main(args_for(server.base_url, pairs, out)) == 0
        fingerprint = json.loads((out / "fingerprint.json").read_text())
        assert fingerprint["models"] == {} and fingerprint["settings"]["served_model"] == "judge-x"
        assert fingerprint["settings"]["endpoint"] == server.base_url
        capsys.readouterr()
        args = args_for(server.base_url, pairs, out)
        args[args.index("judge-x")] = "judge-y"
        assert main(args) == 1
        assert "setting served_model: 'judge-x' -> 'judge-y'" in capsys.readouterr().err
    with FakeOpenAIServer(FakeServedJudge(models=("judge-z",))) as server:
        args = [a for a in args_for(server.base_url, pairs, tmp_path / "listed") if a not in ("--served_model",
                                                                                            "judge-x")]
        assert main(args) == 0
        settings = json.loads((tmp_path / "listed" / "fingerprint.json").read_text())["settings"]
        assert settings["served_model"] == "judge-z"
        assert main(args[:args.index("--output") + 1] + [str(out)] + args[args.index("--output") + 2:]) == 1
        assert "setting endpoint: " in capsys.readouterr().err


def test_two_judges_cannot_write_one_folder(tmp_path, capsys):
    """While one `egt judge` holds the folder, another (even of another model) is refused naming the holder,
    instead of mixing the judgements of two models in one log."""
    import subprocess
    import sys

    pairs, out = make_pairs(tmp_path), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom egt.core.runfolder import run_lock\n"
                               f"with run_lock({str(out)!r}, 'judge'):\n    print('held', flush=True)\n"
                               "    sys.stdin.readline()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with FakeOpenAIServer(FakeServedJudge()) as server:
            assert main(args_for(server.base_url, pairs, out)) == 1
            assert posts(server) == 0
        err = capsys.readouterr().err
        assert f"in use by egt judge (pid {holder.pid}" in err
        assert not (out / verdicts.LOG_NAME).exists()
    finally:
        holder.communicate("\n", timeout=30)


@pytest.mark.heavy   # several processes: `make test-heavy`
def test_killed_judge_resumes_to_the_uninterrupted_result(tmp_path):
    """kill -9 half-way, then a torn line: the rerun judges the chunks left (the partly written one again whole)
    and ends with the uninterrupted run's judgements and verdicts."""
    import subprocess
    import sys

    from helpers import SLOW_SERVED_JUDGE

    pairs = make_pairs(tmp_path, n=24, hard_from=12)
    server = subprocess.Popen([sys.executable, "-c", SLOW_SERVED_JUDGE, str(Path(__file__).parents[1])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()

        def cmd(out):
            return [sys.executable, "-m", "egt.cli", *args_for(url, pairs, out, "--concurrency", "2")]

        assert subprocess.run(cmd(tmp_path / "ref"), capture_output=True, timeout=300).returncode == 0
        out = tmp_path / "killed"
        log = out / verdicts.LOG_NAME
        kill_once_journalled(cmd(out), log, 4)
        lines = log.read_bytes().splitlines(keepends=True)
        assert 4 <= len(lines) < 24, "the run was not interrupted mid-way"
        log.write_bytes(b"".join(lines[:-1]) + lines[-1][:30])     # and its last line torn
        done = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.communicate("\n", timeout=30)
    assert read_jsonl(out / "verdicts.jsonl") == read_jsonl(tmp_path / "ref" / "verdicts.jsonl")
    reference = read_jsonl(tmp_path / "ref" / verdicts.LOG_NAME)
    assert {r["key"]: r for r in read_jsonl(log)} == {r["key"]: r for r in reference}


def test_aurc_of_the_judge_command_by_hand(tmp_path):
    pairs, out = make_pairs(tmp_path), tmp_path / "out"
    with FakeOpenAIServer(FakeServedJudge()) as server:
        verdicts.run(verdicts.Config(**dict(zip(["model", "served_model", "vocab_size", "top_logprobs", "pairs",
                                               "output", "progress", "abstain_metric"],
                                              [server.base_url, "judge-x", 10, 2, pairs, out, False, "answer"]))))
    summary = json.loads((out / "summary.json").read_text())
    # 4 right pairs tied at the lowest entropy, then 4 wrong ones tied: risk 0 up to coverage .5, then .5
    assert summary["aurc"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.5)
    assert summary["abstained"] == 0 and summary["coverage"] == 1.0 and summary["accuracy_kept"] == 0.5


def test_without_logprobs_only_the_vote_can_abstain(tmp_path, capsys):
    pairs, out = make_pairs(tmp_path, labels=False), tmp_path / "out"
    with FakeOpenAIServer(FakeServedJudge(logprobs=False)) as server:
        assert main(args_for(server.base_url, pairs, out, "--coverage", "0.8")) == 1
        assert "no log-probabilities" in capsys.readouterr().err
        assert main(args_for(server.base_url, pairs, out, "--coverage", "0.8", "--abstain_metric", "vote")) == 0
    rows = read_jsonl(out / "verdicts.jsonl")
    assert all(r["entropies"]["max"] is None and r["entropies"]["vote"] == 0.0 for r in rows)
    assert all("label" not in r and "correct" not in r for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert "accuracy" not in summary and summary["abstained"] == 0  # all tied at 0: kept together


def test_config_rejects_two_abstention_rules():
    from egt.core.config import load_config
    from egt.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        load_config(verdicts.Config, None, ["--model", "m", "--pairs", "p", "--output", "o", "--coverage", "0.8",
                                           "--abstain_above", "0.3"])


@pytest.mark.slow
def test_judge_command_with_the_tiny_judge(tmp_path, tiny_model_dir, synth_pairs_path, monkeypatch, capsys):
    import shutil

    pairs, out = synth_pairs_path("test", 3), tmp_path / "out"
    args = ["judge", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--output", str(out),
            "--max_new_tokens", "12", "--progress", "false", "--coverage", "0.6", "--samples", "2"]
    assert main(args) == 0
    rows = read_jsonl(out / "verdicts.jsonl")
    assert len(rows) == 3 and all(r["entropy_kind"] == "exact" for r in rows)
    assert all(r["entropies"]["mean"] > 0 and r["uncertainty"] == r["entropies"]["max"] for r in rows)
    assert [r["decision"] == "abstain" for r in rows].count(True) == 1   # the most uncertain of three
    assert max(rows, key=lambda r: r["uncertainty"])["decision"] == "abstain"
    judged = read_jsonl(out / verdicts.LOG_NAME)
    assert all(len(r["traces"]) == 4 and 0 < r["traces"][0]["n_tokens"] <= 12 for r in judged)
    # a finished run loads no model
    monkeypatch.setattr(verdicts, "build_backend", lambda cfg: pytest.fail("the judge was loaded again"))
    assert main(args) == 0 and read_jsonl(out / verdicts.LOG_NAME) == judged
    monkeypatch.undo()
    # another model of the same size (one weight changed): refused, naming the file, never reused
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    assert main([*args[:2], str(model), *args[3:]]) == 0     # a copy elsewhere: the same content, the work reused
    assert read_jsonl(out / verdicts.LOG_NAME) == judged
    weights = model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main([*args[:2], str(model), *args[3:]]) == 1
    assert "model file model.safetensors: " in capsys.readouterr().err


def test_shard_jobs_write_what_one_process_writes(tmp_path):
    pairs = make_pairs(tmp_path, n=9)
    with FakeOpenAIServer(FakeServedJudge()) as server:
        assert main(args_for(server.base_url, pairs, tmp_path / "one", "--coverage", "0.5")) == 0
        for i in range(3):
            if i == 1:   # a job cutting the pairs into other chunks would own other pairs: refused, naming it
                assert main(args_for(server.base_url, pairs, tmp_path / "split", "--coverage", "0.5",
                                     "--shard", "1/3", "--batch_size", "2")) == 1
            assert main(args_for(server.base_url, pairs, tmp_path / "split", "--coverage", "0.5",
                                 "--shard", f"{i}/3")) == 0
            assert (tmp_path / "split" / "verdicts.jsonl").exists() == (i == 2)
        assert posts(server) == 2 * 18                                    # every pair judged once per run
    one, split = tmp_path / "one", tmp_path / "split"
    for name in (verdicts.LOG_NAME, "verdicts.jsonl"):
        assert (split / name).read_bytes() == (one / name).read_bytes(), name
    drop_wall = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k != "wall_s"}
                 for d in (one, split)]
    assert drop_wall[0] == drop_wall[1] and not (split / "shards").exists()


@pytest.mark.heavy
def test_tiny_judge_under_torchrun_equals_one_process(tmp_path, tiny_model_dir, synth_pairs_path):
    """`egt judge` over the ranks of a torchrun world of 2 (gloo on CPU): the pairs' chunks split over the
    ranks, rank 0 writes the outputs; they equal one process's (summary.json but its wall time)."""
    import os
    import subprocess
    import sys

    pairs = synth_pairs_path("test", 5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = ["-m", "egt.cli", "judge", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--max_new_tokens", "12",
            "--batch_size", "4", "--coverage", "0.6", "--progress", "false"]
    for out, launcher in (("one", []), ("world", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])):
        proc = subprocess.run([sys.executable, *launcher, *args, "--output", str(tmp_path / out)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, world = tmp_path / "one", tmp_path / "world"
    for name in (verdicts.LOG_NAME, "verdicts.jsonl"):
        assert (world / name).read_bytes() == (one / name).read_bytes(), name
    summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k != "wall_s"}
                 for d in (one, world)]
    assert summaries[0] == summaries[1]
