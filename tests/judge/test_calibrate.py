"""egt calibrate: the split by id, the fitted temperature and threshold, the held-out ECE before and after, the
files it writes, resume and refusal of other settings; and egt serve loading the result."""

from __future__ import annotations

import json

import pytest

from egt.core.config import load_config
from egt.core.errors import EgtError
from egt.core.records import read_pairs
from egt.judge.calibrate import Config, choose_threshold, in_calibration_split, run
from egt.judge.probability import Calibration, RewardJudge


def test_split_by_id_is_stable_and_near_the_fraction():
    ids = [f"pair-{i}" for i in range(2000)]
    share = sum(in_calibration_split(i, 0.3) for i in ids) / len(ids)
    assert 0.27 < share < 0.33
    assert [in_calibration_split(i, 0.3) for i in ids[:50]] == [in_calibration_split(i, 0.3) for i in ids[:50]]


def test_choose_threshold_by_coverage_or_target_accuracy():
    u = [0.1, 0.2, 0.3, 0.4]
    correct = [True, True, False, False]
    assert choose_threshold(u, correct, 0.5, None) == 0.2
    assert choose_threshold(u, correct, None, 1.0) == 0.2          # the largest threshold with accuracy 1
    assert choose_threshold(u, correct, None, 0.6) == 0.3          # 2 of 3 kept right
    assert choose_threshold([0.5], [False], None, 0.9) is None     # unreachable: abstain on everything


@pytest.mark.slow
def test_calibrate_writes_a_file_the_service_loads(coin_judge_dir, synth_pairs_path, tmp_path):
    data = synth_pairs_path("test", 12, seed=3)
    cfg = load_config(Config, None, {"model": str(coin_judge_dir), "data": str(data), "output": str(tmp_path / "c"),
                                     "max_new_tokens": 24, "device": "cpu", "progress": False, "bins": 3})
    out = run(cfg)
    calibration = Calibration.load(out / "calibration.json")
    fitted = calibration.fitted
    assert 0.05 <= calibration.temperature <= 20 and calibration.abstain_metric == "probability"
    assert fitted["calibration_pairs"] + fitted["held_out_pairs"] == 12
    assert fitted["calibration_nll_after"] <= fitted["calibration_nll_before"] + 1e-9   # T minimises it there
    for key in ("held_out_before", "held_out_after"):
        assert 0 <= fitted[key]["ece"] <= 1 and len(fitted[key]["reliability"]) <= 3
    assert (out / "reliability.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["held_out_pairs"] == fitted["held_out_pairs"]
    records = [json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(set(r["logits"]) == {"given", "swapped"} for r in records)
    # a rerun judges nothing again; other judging settings are refused
    mtime = (out / "judgements.jsonl").stat().st_mtime_ns
    run(cfg)
    assert (out / "judgements.jsonl").stat().st_mtime_ns == mtime
    with pytest.raises(EgtError, match="max_new_tokens"):
        run(cfg.model_copy(update={"max_new_tokens": 16}))
    # the service's judge applies the temperature and the threshold
    judge = RewardJudge.from_pretrained(coin_judge_dir, calibration=out / "calibration.json", max_new_tokens=24,
                                        device="cpu")
    reward = judge.score([read_pairs(data)[0]])[0]
    assert reward.abstain == (reward.uncertainty > calibration.abstain_threshold)
