"""egt.demo.claims: a paper claim is reproduced only pooled over >= 3 training runs; one run says what it saw."""

import json

import numpy as np
import pytest

from egt.core.stats import compare_paired
from egt.demo.claims import MIN_RUNS, paired, verdict


def runs(differences: list[float], n_pairs: int = 1000, seed: int = 0):
    """[runs x pairs] correctness of two judges whose accuracy differs by about `d` in each run."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for d in differences:
        base = rng.random(n_pairs) < 0.6
        flip = rng.random(n_pairs) < abs(d)
        a.append(np.where(flip, d > 0, base))
        b.append(np.where(flip, d < 0, base))
    return np.array(a), np.array(b)


def test_one_run_is_never_a_reproduced_claim():
    a, b = runs([0.10])
    result = compare_paired(a[0], b[0])
    assert result["verdict"] == "higher" and result["n_seeds"] == 1
    assert verdict(result) == "higher in this run"
    assert verdict(compare_paired(b[0], a[0])) == "lower in this run"
    same = compare_paired(a[0], a[0])
    assert verdict(same).startswith("no difference detected")
    assert verdict(result, ("RL helps", "RL hurts"), ("gain in this run", "loss in this run")) == "gain in this run"


def test_two_runs_say_these_runs_and_three_agreeing_runs_reproduce():
    a, b = runs([0.10, 0.12])
    assert verdict(compare_paired(a, b)) == "higher in these 2 runs"
    a, b = runs([0.10, 0.12, 0.08])
    assert MIN_RUNS == 3 and verdict(compare_paired(a, b)) == "reproduced"
    assert verdict(compare_paired(b, a)) == "reversed"


def test_a_run_that_disagrees_makes_the_pooled_claim_inconclusive():
    # Each run's own interval excludes 0, but they disagree: the t-interval over the runs sees it.
    a, b = runs([0.10, 0.10, -0.10])
    per_run = [compare_paired(x, y)["verdict"] for x, y in zip(a, b)]
    assert per_run == ["higher", "higher", "lower"]
    pooled = compare_paired(a, b)
    assert pooled["ci_low"] < 0 < pooled["ci_high"]
    assert verdict(pooled).startswith("inconclusive")


def test_paired_reads_each_runs_predictions_aligned_by_id(tmp_path):
    a, b = runs([0.2, 0.2, 0.2], n_pairs=50)
    dirs = []
    for i in range(3):
        run = tmp_path / f"seed_{i}"
        for model, correct in (("a_egt", a[i]), ("b_full", b[i])):
            folder = run / "eval" / model
            folder.mkdir(parents=True)
            rows = [{"id": f"p{j}", "both_correct": bool(c)} for j, c in enumerate(correct)]
            rows = rows[::-1] if model == "b_full" else rows           # order on disk does not matter
            (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        dirs.append(run)
    result = paired(dirs, "a_egt", "b_full")
    assert result["n_seeds"] == 3 and result["n_pairs"] == 50
    assert result["per_seed"] == pytest.approx([float(np.mean(x) - np.mean(y)) for x, y in zip(a, b)])
    assert paired(dirs, "a_egt", "c_random") is None                       # not evaluated: nothing invented
