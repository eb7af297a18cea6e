"""egt distill against a fake OpenAI-compatible server on 127.0.0.1 (real HTTP, real openai client)."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import FakeOpenAIServer, chat_completion
from PIL import Image

from egt.core import prompts
from egt.core.config import load_config
from egt.core.errors import RunIncomplete
from egt.core.endpoint import backoff_delay_s
from egt.core.files import Journal
from egt.core.records import ImageRef, PreferencePair, read_pairs, read_rows, write_pairs
from egt.stages.distill import Config, drop_reason, judge_reply, run

SECRET = "sk-test-SECRET123"
KEY_ENV = "EGT_TEST_TEACHER_KEY"


class FakeTeacher:
    """Answers by the pair's question `<kind>-<i>`; counts requests per question."""

    def __init__(self, labels: dict[str, int], slow_s: float = 1.5, delay_s: float = 0.0):
        self.labels, self.slow_s, self.delay_s = labels, slow_s, delay_s
        self.healed = False  # True: the "dead" pairs are answered from now on
        self.counts: dict[str, int] = {}
        self.texts: dict[str, str] = {}
        self.image_urls: list[str] = []
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        self.server = FakeOpenAIServer(lambda method, path, headers, body:
                                       self.answer(path, headers.get("authorization"), body))

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def answer(self, path, auth, body):
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": "not found"}}, {}
        content = body["messages"][-1]["content"]
        text = next(part["text"] for part in content if part["type"] == "text")
        question = re.search(r"Question: (\S+)", text).group(1)
        with self.lock:
            n = self.counts[question] = self.counts.get(question, 0) + 1
            self.texts[question] = text
            self.image_urls += [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
            self.auth.add(auth)
        if auth != f"Bearer {SECRET}":
            return 401, {"error": {"message": "bad key"}}, {}
        if self.delay_s:
            time.sleep(self.delay_s)
        kind, label = question.split("-")[0], self.labels[question]
        good = prompts.format_judgement(f"Response {label} answers {question} correctly.", label)
        bad = prompts.format_judgement("Response is worse.", 3 - label)
        if kind == "e500" and n == 1 or kind == "dead" and not self.healed:
            return (503 if kind == "dead" else 500), {"error": {"message": "boom", "type": "server_error"}}, {}
        if kind == "e429" and n <= 2:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        if kind == "slow" and n == 1:
            time.sleep(self.slow_s)
        reply = {"wrong": bad, "junk": "I prefer the first one.", "nothink": f"<answer>{label}</answer>",
                 "late": bad if n == 1 else good,
                 "sloppy": f"  <think> {question} compared </think>\n<answer>Response {label}</answer> done"
                 }.get(kind, good)
        return 200, chat_completion(reply, body["model"], reply_id=f"chatcmpl-{question}-{n}"), {}


def make_pairs(tmp_path: Path, kinds: list[str]) -> tuple[Path, dict[str, int]]:
    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    pairs, labels = [], {}
    for i, kind in enumerate(kinds):
        question = f"{kind}-{i}"
        labels[question] = 1 + i % 2
        pairs.append(PreferencePair(id=f"p{i:03d}", images=[ImageRef(path=str(image))], question=question,
                                    response_1=f"first answer {i}", response_2=f"second answer {i}",
                                    label=labels[question]))
    path = tmp_path / "pairs.parquet"
    write_pairs(pairs, path)
    return path, labels


def teacher_cfg(input_path: Path, output: Path, base_url: str, **kw) -> Config:
    base = dict(pairs=input_path, output=output, backend="openai", base_url=base_url, model="teacher-x",
                api_key_env=KEY_ENV, concurrency=4, request_timeout_s=0.5, max_attempts=3, max_retries=2,
                backoff_base_s=0.01, backoff_max_s=0.05, progress=True)
    return Config(**{**base, **kw})


KINDS = ["good", "sloppy", "wrong", "junk", "nothink", "late", "e500", "e429", "slow", "dead", "good"]


def test_openai_backend_filters_retries_and_hides_key(tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    pairs_path, labels = make_pairs(tmp_path, KINDS)
    out = tmp_path / "run"
    with FakeTeacher(labels) as server:
        # the dead pair fails after its retries: no verdict yet, so the run says so (exit 75), loses nothing
        with pytest.raises(RunIncomplete, match=r"1 pairs have no verdict yet \(server_error 1; listed in "
                                                r"failed.parquet\); rerun the same command"):
            run(teacher_cfg(pairs_path, out, server.base_url))
        first_counts = dict(server.counts)
        failed = read_rows(out / "failed.parquet")
        assert [(r["question"], r["failure_class"], r["last_error"]) for r in failed] == \
            [("dead-9", "server_error", "HTTP 503: boom")]
        stats = json.loads((out / "stats.json").read_text())
        assert stats["complete"] is False and stats["failed_by_class"] == {"server_error": 1}
        assert stats["faults_by_class"] == {"rate_limited": 2, "server_error": 4, "timeout": 1}
        server.healed = True
        run(teacher_cfg(pairs_path, out, server.base_url))  # the rerun asks the dead pair only

    kept = {r["question"]: r for r in read_rows(out / "traces.parquet")}
    dropped = {r["question"]: r for r in read_rows(out / "dropped.parquet")}
    assert set(kept) == {"good-0", "sloppy-1", "late-5", "e500-6", "e429-7", "slow-8", "dead-9", "good-10"}
    assert {q: r["drop_reason"] for q, r in dropped.items()} == {
        "wrong-2": "unfaithful", "junk-3": "unparsable", "nothink-4": "unparsable"}
    assert not (out / "failed.parquet").exists()
    # attempt limit: unfaithful/unparsable pairs get exactly max_attempts requests; errors also retry,
    # and a pair whose retries run out is not sent again in that run.
    assert first_counts == {"good-0": 1, "sloppy-1": 1, "wrong-2": 3, "junk-3": 3, "nothink-4": 3, "late-5": 2,
                            "e500-6": 2, "e429-7": 3, "slow-8": 2, "dead-9": 3, "good-10": 1}
    assert server.counts == {**first_counts, "dead-9": 4}
    assert {q: r["attempts"] for q, r in kept.items()} == {
        "good-0": 1, "sloppy-1": 1, "late-5": 2, "e500-6": 1, "e429-7": 1, "slow-8": 1, "dead-9": 1, "good-10": 1}
    assert dropped["wrong-2"]["attempt_outcomes"] == ["unfaithful"] * 3
    for q, row in kept.items():
        verdict = prompts.parse_verdict(row["trace"])
        assert verdict.verdict == row["label"] and verdict.format_ok
    # a sloppy but faithful reply is stored in the canonical format
    assert kept["sloppy-1"]["trace"] == prompts.format_judgement("sloppy-1 compared", 2)
    assert kept["sloppy-1"]["teacher_format_ok"] is False and kept["good-0"]["teacher_format_ok"] is True
    # the teacher saw the judge prompt (no label) and the image as a data URL
    assert server.texts["good-0"] == prompts.judge_prompt_text("good-0", "first answer 0", "second answer 0")
    assert all(u.startswith("data:image/png;base64,") for u in server.image_urls)
    assert server.auth == {f"Bearer {SECRET}"}

    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 8 and stats["dropped"] == 3 and stats["pairs"] == 11 and stats["complete"]
    assert stats["attempts_histogram"] == {"1": 7, "2": 1}
    assert stats["drop_reasons"] == {"unfaithful": 1, "unparsable": 2}
    assert stats["completion_tokens"] == 20 * (1 + 1 + 3 + 3 + 3 + 2 + 1 + 1 + 1 + 1 + 1)
    # faults are carried over from the first run in the dead pair's record
    assert stats["faults_by_class"] == {"rate_limited": 2, "server_error": 4, "timeout": 1}

    captured = capfd.readouterr()
    assert "kept=" in captured.err  # the progress bar shows the kept rate
    assert "failed: server_error" in captured.err and "this run:" in captured.err  # the summary table
    for path in out.rglob("*"):
        if path.is_file():
            assert b"SECRET123" not in path.read_bytes(), path
    assert "SECRET123" not in captured.out + captured.err + caplog.text
    assert KEY_ENV in (out / "distill_config.yaml").read_text()  # the NAME of the env var only


def test_reveal_label_variant_and_bad_key(tmp_path, monkeypatch):
    pairs_path, labels = make_pairs(tmp_path, ["good", "good"])
    with FakeTeacher(labels) as server:
        monkeypatch.setenv(KEY_ENV, SECRET)
        run(teacher_cfg(pairs_path, tmp_path / "reveal", server.base_url, reveal_label=True))
        assert "Response 2 is the better one" in server.texts["good-1"]
        monkeypatch.setenv(KEY_ENV, "sk-wrong")
        from egt.core.errors import EgtError
        with pytest.raises(EgtError, match="HTTP 401"):
            run(teacher_cfg(pairs_path, tmp_path / "badkey", server.base_url))
    monkeypatch.delenv(KEY_ENV)
    from egt.core.errors import ConfigError
    with pytest.raises(ConfigError, match=KEY_ENV):
        run(teacher_cfg(pairs_path, tmp_path / "nokey", "http://127.0.0.1:9/v1"))


def test_rerun_with_other_pairs_or_teacher_is_refused_not_reused(tmp_path, monkeypatch, capsys):
    """The journal is keyed by pair id: without a fingerprint, pairs edited in place (same ids) or another teacher
    got the old traces back. Refused, naming what changed, until --overwrite."""
    from egt.cli import main

    monkeypatch.setenv(KEY_ENV, SECRET)
    pairs_path, labels = make_pairs(tmp_path, ["good", "good"])
    out = tmp_path / "out"
    with FakeTeacher(labels) as server:
        args = ["distill", f"pairs={pairs_path}", f"output={out}", "backend=openai", f"base_url={server.base_url}",
                "model=teacher-x", f"api_key_env={KEY_ENV}", "progress=false", "request_timeout_s=5"]
        assert main(args) == 0
        first = (out / "traces.parquet").read_bytes()
        assert main([*args[:5], "model=teacher-y", *args[6:]]) == 1
        assert "setting models: ['teacher-x'] -> ['teacher-y']" in capsys.readouterr().err
        pairs = read_pairs(pairs_path)
        pairs[0].response_1, pairs[0].response_2 = pairs[0].response_2, pairs[0].response_1
        write_pairs(pairs, pairs_path)
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "holds distill results of other inputs or settings (input pairs: " in err and "--overwrite" in err
        assert (out / "traces.parquet").read_bytes() == first
        assert main(args + ["overwrite=true"]) == 0
        assert read_rows(out / "traces.parquet")[0]["response_1"] == "second answer 0"


def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    kinds = ["good", "wrong", "nothink", "junk", "good", "sloppy"] * 5  # stateless replies: deterministic
    pairs_path, labels = make_pairs(tmp_path, kinds)
    with FakeTeacher(labels) as server:
        run(teacher_cfg(pairs_path, tmp_path / "ref", server.base_url, progress=False))

    out = tmp_path / "killed"
    with FakeTeacher(labels, delay_s=0.1) as server:
        cmd = [sys.executable, "-m", "egt.cli", "distill", f"pairs={pairs_path}", f"output={out}",
               "backend=openai", f"base_url={server.base_url}", "model=teacher-x", f"api_key_env={KEY_ENV}",
               "concurrency=2", "request_timeout_s=5", "max_attempts=3", "max_retries=2", "progress=false"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        journal = out / "journal.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert b"SECRET123" not in stdout + stderr
        before = Journal(journal, key="id").load()
        assert 6 <= len(before) < len(kinds)
        with open(journal, "ab") as handle:  # a torn last line, as if killed mid-write
            handle.write(b'{"id": "p0')
        counts_before_rerun = dict(server.counts)
        run(teacher_cfg(pairs_path, out, server.base_url, progress=False, request_timeout_s=5))
        # finished pairs were not asked again
        for rec_id in before:
            question = f"{kinds[int(rec_id[1:])]}-{int(rec_id[1:])}"
            assert server.counts[question] == counts_before_rerun[question]

    ref_rows, got_rows = read_rows(tmp_path / "ref" / "traces.parquet"), read_rows(out / "traces.parquet")
    assert [r["id"] for r in got_rows] == [r["id"] for r in ref_rows]
    assert len({r["id"] for r in got_rows}) == len(got_rows)
    assert [(r["trace"], r["attempts"]) for r in got_rows] == [(r["trace"], r["attempts"]) for r in ref_rows]
    assert [r["id"] for r in read_rows(out / "dropped.parquet")] == \
        [r["id"] for r in read_rows(tmp_path / "ref" / "dropped.parquet")]
    lines = journal.read_text().splitlines()
    assert len(lines) == len(kinds) and len({json.loads(x)["id"] for x in lines}) == len(kinds)


def test_pure_helpers():
    assert drop_reason(["error", "error"]) == "teacher_error"
    assert drop_reason(["error", "unparsable"]) == "unparsable"
    assert drop_reason(["unparsable", "unfaithful", "error"]) == "unfaithful"
    assert judge_reply("<think>a</think><answer>2</answer>", 2, True) == \
        ("faithful", "<think>a</think><answer>2</answer>", True)
    assert judge_reply("<think>a</think><answer>1</answer>", 2, True)[0] == "unfaithful"
    assert judge_reply("<think> </think><answer>2</answer>", 2, True)[0] == "unparsable"
    import random
    rng = random.Random(0)
    delays = [backoff_delay_s(i, 1.0, 10.0, rng) for i in range(8)]
    assert all(0 <= d <= min(10.0, 2 ** i) for i, d in enumerate(delays))
    assert backoff_delay_s(0, 0.0, 10.0, rng, retry_after_s=3.0) == 3.0
    assert backoff_delay_s(0, 0.0, 2.0, rng, retry_after_s=30.0) == 2.0


def test_shipped_distill_config_parses():
    cfg_path = Path(__file__).parents[2] / "configs" / "qwen2.5-vl-7b" / "distill_vllm_teacher.yaml"
    cfg = load_config(Config, cfg_path)
    assert cfg.backend == "openai" and cfg.api_key_env and not cfg.reveal_label


def test_oracle_backend_keeps_only_traces_matching_the_label(synth_pairs_path, tmp_path):
    pairs_path = synth_pairs_path("train", n=40, seed=2, noise="uniform:0.3")
    cfg = dict(pairs=pairs_path, backend="oracle", oracle_wrong_rate=0.3, max_attempts=2, progress=False)
    out = run(Config(output=tmp_path / "a", **cfg))
    kept, dropped = read_rows(out / "traces.parquet"), read_rows(out / "dropped.parquet")
    assert len(kept) + len(dropped) == 40 and kept and dropped
    for row in kept:
        verdict = prompts.parse_verdict(row["trace"])
        assert verdict.format_ok and verdict.verdict == row["label"] and row["attempts"] in (1, 2)
        # a noisy label is matched only by a trace that misreads the scene
        assert (verdict.verdict != row["meta"]["true_label"]) == bool(row["meta"]["noisy"])
    assert all(r["drop_reason"] == "unfaithful" and r["attempts"] == 2 for r in dropped)
    stats = json.loads((out / "stats.json").read_text())
    assert sum(stats["attempts_histogram"].values()) == len(kept)
    assert stats["kept_pct"] == pytest.approx(100 * len(kept) / 40)
    again = run(Config(output=tmp_path / "b", **cfg))  # deterministic given the seed
    assert read_rows(again / "traces.parquet") == kept


@pytest.mark.slow
def test_both_orders_distils_each_pair_and_its_swap(synth_pairs_path, tmp_path):
    """Swap augmentation: every pair is also distilled in the other order, with a trace written for
    that order (the oracle reads the swapped truth), and the fidelity filter applied per order."""
    path = synth_pairs_path("train", 20, seed=4, noise="uniform:0.3")
    out = run(Config(pairs=path, output=tmp_path / "d", backend="oracle", oracle_wrong_rate=0.0,
                     orders="both", progress=False))
    kept = read_pairs(out / "traces.parquet")
    dropped = read_rows(out / "dropped.parquet")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["orders"] == "both" and stats["pairs"] == 40 and len(kept) + len(dropped) == 40
    by_id = {p.id: p for p in kept}
    for pair in kept:
        assert prompts.parse_verdict(pair.extra["trace"]).verdict == pair.label  # the filter, per order
        if pair.id.endswith("::swap"):
            original = read_pairs(path)[int(pair.id.split("-")[-1].split(":")[0])]
            assert (pair.response_1, pair.response_2, pair.label) == \
                (original.response_2, original.response_1, 3 - original.label)
    # a faithful oracle keeps exactly the clean pairs, in both orders, and drops the flipped ones in both
    clean = {p.id for p in read_pairs(path) if not p.meta["noisy"]}
    assert set(by_id) == clean | {i + "::swap" for i in clean}


def test_hf_backend_counts_attempts_of_a_local_teacher(synth_pairs_path, tiny_model_dir, tmp_path):
    # The untrained tiny judge writes no verdict in 6 tokens: every attempt is unparsable.
    pairs_path = synth_pairs_path("train", n=4, seed=3)
    out = run(Config(pairs=pairs_path, output=tmp_path / "hf", backend="hf", model=str(tiny_model_dir),
                     device="cpu", max_attempts=2, max_tokens=6, batch_size=4, progress=False))
    dropped = read_rows(out / "dropped.parquet")
    assert [r["attempt_outcomes"] for r in dropped] == [["unparsable", "unparsable"]] * 4
    assert all(r["drop_reason"] == "unparsable" for r in dropped)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 0 and 0 < stats["completion_tokens"] <= 4 * 2 * 6


def test_shard_jobs_write_what_one_process_writes(synth_pairs_path, tmp_path):
    """Three `--shard i/3` jobs on one folder (blocks of hf_chunk_pairs pairs each): the last writes
    traces.parquet, dropped.parquet and the journal byte for byte as one process does."""
    from egt.core.runfolder import StaleRunError

    cfg = dict(pairs=synth_pairs_path("train", n=30, seed=2, noise="uniform:0.3"), backend="oracle",
               oracle_wrong_rate=0.3, max_attempts=2, hf_chunk_pairs=4, progress=False)
    one = run(Config(output=tmp_path / "one", **cfg))
    split = tmp_path / "split"
    for i in range(3):
        run(Config(output=split, shard=f"{i}/3", **cfg))
        assert (split / "traces.parquet").exists() == (i == 2)
    for name in ("traces.parquet", "dropped.parquet", "journal.jsonl"):
        assert (split / name).read_bytes() == (one / name).read_bytes(), name
    stats = [{k: v for k, v in json.loads((d / "stats.json").read_text()).items() if k != "wall_time_s"}
             for d in (one, split)]
    assert stats[0] == stats[1]
    with pytest.raises(StaleRunError, match="setting max_attempts: 2 -> 3"):   # jobs of other settings: refused
        run(Config(output=split, shard="0/3", **{**cfg, "max_attempts": 3}))
