"""`egt rerank`: tournaments by hand, best-of-N against a served judge (helpers.FakeServedJudge), resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SLOW_SERVED_JUDGE, FakeOpenAIServer, FakeServedJudge, kill_once_journalled
from PIL import Image

from egt.cli import main
from egt.core.errors import DataError
from egt.judge import rerank


def test_round_robin_and_knockout_by_hand():
    # won[i][j]: i's vote share against j
    won = {(0, 1): 0.0, (1, 0): 1.0, (0, 2): 0.5, (2, 0): 0.5, (1, 2): 0.25, (2, 1): 0.75,
           (0, 3): 1.0, (3, 0): 0.0, (1, 3): 1.0, (3, 1): 0.0, (2, 3): 0.5, (3, 2): 0.25}
    share = lambda i, j: won[(i, j)]  # noqa: E731
    assert rerank.round_robin_matches(3) == [(0, 1), (0, 2), (1, 2)]
    assert rerank.round_robin_scores(4, share) == [1.5, 2.25, 1.75, 0.25]
    assert rerank.best_index([1.5, 2.25, 1.75, 0.25]) == 1
    assert rerank.best_index([1.0, 2.0, 2.0]) == 1                      # a tie goes to the lower index
    assert rerank.knockout_round([0, 1, 2, 3], share) == [1, 2]
    assert rerank.knockout_round([1, 2], share) == [2]
    assert rerank.knockout_round([0, 2, 3], share) == [0, 3]            # 0-2 tie -> 0; 3 has a bye
    assert rerank.match_key("q", 3, 1) == "q\t1\t3"


def write_candidates(tmp_path: Path, n: int = 4, questions: int = 3, hard: tuple = (2,)) -> Path:
    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (20, 120, 30)).save(image)
    rows = []
    for q in range(questions):
        best = (q + 1) % n
        candidates = [f"good {q}" if i == best else f"bad {q} {i}" for i in range(n)]
        rows.append({"id": f"q{q}", "images": [{"path": str(image)}], "candidates": candidates, "best": best,
                     "question": ("hard " if q in hard else "") + f"question {q}"})
    path = tmp_path / "candidates.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("method,matches", [("round_robin", 6), ("knockout", 3)])
def test_best_of_n_against_a_served_judge(tmp_path, method, matches):
    cands, out = write_candidates(tmp_path), tmp_path / method
    args = ["rerank", "--model", None, "--served_model", "judge-x", "--candidates", str(cands), "--output", str(out),
            "--method", method, "--progress", "false", "--batch_size", "4"]
    with FakeOpenAIServer(FakeServedJudge()) as server:
        args[2] = server.base_url
        assert main(args) == 0
        posts = sum(r[0] == "POST" for r in server.requests)
        assert posts == 3 * matches * 2                                  # every match in both orders
        assert main(args) == 0                                           # a rerun judges nothing
        assert sum(r[0] == "POST" for r in server.requests) == posts
    rows = read_jsonl(out / "rankings.jsonl")
    # the judge finds the good candidate, except on the hard question, where it prefers the others
    assert [r["correct"] for r in rows] == [True, True, False]
    assert [r["best"] for r in rows][:2] == [1, 2] and rows[2]["best"] != 3 and rows[2]["best_true"] == 3
    assert all(r["matches"] == matches for r in rows)
    if method == "round_robin":
        assert rows[0]["scores"] == [0.0, 3.0, 0.0, 0.0]                 # bad vs bad: no verdict, no vote
    else:
        assert rows[0]["scores"] == [0, 2, 1, 0] and rows[1]["scores"] == [1, 0, 2, 0]   # round reached
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top1_accuracy"] == pytest.approx(2 / 3) and summary["random_pick_accuracy"] == 0.25
    assert summary["matches"] == 3 * matches and len(read_jsonl(out / rerank.LOG_NAME)) == 3 * matches


def test_edited_candidates_are_refused_not_reused(tmp_path, capsys):
    """Candidates changed in place: the old matches do not belong to them. Refused naming the input, until
    --overwrite; `method` may change (the matches are reused)."""
    cands, out = write_candidates(tmp_path), tmp_path / "out"
    with FakeOpenAIServer(FakeServedJudge()) as server:
        args = ["rerank", "--model", server.base_url, "--served_model", "judge-x", "--candidates", str(cands),
                "--output", str(out), "--progress", "false", "--batch_size", "4"]
        assert main(args) == 0
        posts = sum(r[0] == "POST" for r in server.requests)
        assert main(args + ["--method", "knockout"]) == 0                  # its matches were all played
        assert sum(r[0] == "POST" for r in server.requests) == posts
        rows = read_jsonl(cands)
        rows[0]["candidates"] = rows[0]["candidates"][::-1]
        cands.write_text("".join(json.dumps(r) + "\n" for r in rows))
        capsys.readouterr()
        assert main(args) == 1
        assert "holds rerank results of other inputs or settings (input candidates: " in capsys.readouterr().err
        assert main(args + ["--overwrite"]) == 0
    assert read_jsonl(out / "rankings.jsonl")[0]["best"] == 2          # the good candidate, now at index 2


@pytest.mark.heavy   # several processes: `make test-heavy`
def test_killed_rerank_resumes_to_the_uninterrupted_result(tmp_path):
    """kill -9 half-way, then a torn line: the rerun judges the chunks left (the partly written one again whole)
    and ends with the uninterrupted run's matches and rankings."""
    import subprocess
    import sys

    cands = write_candidates(tmp_path, n=5, questions=4)
    server = subprocess.Popen([sys.executable, "-c", SLOW_SERVED_JUDGE, str(Path(__file__).parents[1])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()

        def cmd(out):
            return [sys.executable, "-m", "egt.cli", "rerank", "--model", url, "--served_model", "judge-x",
                    "--candidates", str(cands), "--output", str(out), "--progress", "false", "--batch_size", "4",
                    "--concurrency", "2"]

        assert subprocess.run(cmd(tmp_path / "ref"), capture_output=True, timeout=300).returncode == 0
        out = tmp_path / "killed"
        log = out / rerank.LOG_NAME
        kill_once_journalled(cmd(out), log, 6)
        lines = log.read_bytes().splitlines(keepends=True)
        assert 6 <= len(lines) < 40, "the run was not interrupted mid-way"
        log.write_bytes(b"".join(lines[:-1]) + lines[-1][:30])     # and its last line torn
        done = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.communicate("\n", timeout=30)
    assert read_jsonl(out / "rankings.jsonl") == read_jsonl(tmp_path / "ref" / "rankings.jsonl")
    matches = {r["key"]: r for r in read_jsonl(log)}
    assert matches == {r["key"]: r for r in read_jsonl(tmp_path / "ref" / rerank.LOG_NAME)}


def test_bad_candidate_files(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "q", "candidates": ["only one"]}) + "\n")
    with pytest.raises(DataError, match="c.jsonl:1: field 'candidates'"):
        rerank.read_candidates(path)
    path.write_text(json.dumps({"id": "a", "question": "q", "candidates": ["x", "y"], "best": 2}) + "\n")
    with pytest.raises(DataError, match="best"):
        rerank.read_candidates(path)


def test_candidate_images_stay_inside_their_root(tmp_path):
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "a.png")
    path = tmp_path / "run" / "c.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"id": "a", "question": "q", "candidates": ["x", "y"],
                                "images": [str(images / "a.png")]}) + "\n")
    (question,) = rerank.read_candidates(path)              # outside the file's folder: refused when opened
    with pytest.raises(DataError, match="c.jsonl:1: field 'images'.*outside the image root"):
        question["images"][0].open()
    (question,) = rerank.read_candidates(path, image_root=tmp_path / "data")
    assert question["images"][0].open().size == (8, 8)
    (question,) = rerank.read_candidates(path, allow_absolute_paths=True)
    assert question["images"][0].open().size == (8, 8)


@pytest.mark.slow
def test_rerank_with_the_tiny_judge(tmp_path, tiny_model_dir):
    cands, out = write_candidates(tmp_path, n=3, questions=2, hard=()), tmp_path / "out"
    assert main(["rerank", "--model", str(tiny_model_dir), "--candidates", str(cands), "--output", str(out),
                 "--method", "knockout", "--max_new_tokens", "8", "--samples", "2", "--progress", "false"]) == 0
    rows = read_jsonl(out / "rankings.jsonl")
    assert len(rows) == 2 and all(0 <= r["best"] < 3 and r["matches"] == 2 for r in rows)
    records = read_jsonl(out / rerank.LOG_NAME)
    assert len(records) == 4 and all(r["n_judgements"] == 4 and r["entropy_kind"] == "exact" for r in records)
