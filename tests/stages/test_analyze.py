"""Entropy analysis: AUROC / Spearman of each metric, bins, figures, report (the estimators: core/test_stats.py)."""

import json
import math

import numpy as np
import pytest
from helpers import score_row
from PIL import Image
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from egt.cli import main
from egt.core.records import read_rows, write_rows
from egt.stages.analyze import analyze_scores, write_analysis

N_PAIRS, N_UNDEFINED = 200, 5


def synthetic_rows(seed: int = 0) -> list[dict]:
    """200 pairs, ~20% mislabeled; answer entropy separates noisy pairs best, mean weakly, max not at all."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N_PAIRS):
        noisy = bool(rng.random() < 0.2) or i < N_UNDEFINED   # undefined answers sit on noisy pairs
        true_label = int(rng.integers(1, 3))
        label = 3 - true_label if noisy else true_label
        majority = true_label if rng.random() < 0.9 else 3 - true_label
        verdicts = [majority, majority, majority, 3 - majority if rng.random() < 0.5 else majority]
        answer = 0.2 + 1.0 * noisy + 0.4 * float(rng.random())
        if i < N_UNDEFINED:
            answer = math.nan
        p = np.bincount(verdicts, minlength=3)[1:] / 4
        rows.append(score_row(f"s{i:03d}", label=label, verdicts=verdicts, n_tokens_mean=12.0,
                              meta={"noisy": noisy, "true_label": true_label}, answer=answer,
                              sentence=float(rng.random()), mean=0.1 + 0.2 * noisy + 0.5 * float(rng.random()), max=float(rng.gamma(2.0)),
                              vote=float(-(p[p > 0] * np.log(p[p > 0])).sum())))
    return rows


@pytest.fixture(scope="module")
def score_file(tmp_path_factory):
    return write_rows(synthetic_rows(), tmp_path_factory.mktemp("scores") / "scores.parquet")


def test_analysis_numbers_on_known_structure(score_file):
    rows = read_rows(score_file)
    result = analyze_scores(rows)
    assert result["noise_known"] and result["true_label_known"]
    noisy = np.array([r["meta"]["noisy"] for r in rows])
    answer = np.array([r["answer_entropy_nats"] for r in rows])
    filled = np.where(np.isnan(answer), 1e9, answer)       # missing=highest
    assert result["auroc"]["answer"]["noisy"] == pytest.approx(roc_auc_score(noisy, filled))
    assert result["auroc"]["answer"]["noisy"] > 0.9
    assert 0.3 < result["auroc"]["max"]["noisy"] < 0.7
    majority_error = np.array([r["majority_verdict"] != r["label"] for r in rows])
    assert result["auroc"]["answer"]["majority_error"] == pytest.approx(roc_auc_score(majority_error, filled))
    k_acc = np.array([r["k_accuracy"] for r in rows])
    assert result["spearman"]["answer"] == pytest.approx(spearmanr(filled, k_acc).statistic)
    assert result["spearman"]["answer"] < -0.3
    assert result["headline"]["best_metric"] == "answer" and result["headline"]["target"] == "noisy"
    assert result["n_missing"]["answer"] == N_UNDEFINED

    quintiles = result["bins"]["answer"]["quintiles"]
    assert [b["count"] for b in quintiles] == [40] * 5
    assert [b["n_missing"] for b in quintiles] == [0, 0, 0, 0, N_UNDEFINED]
    assert quintiles[0]["noisy_share"] == 0.0 and quintiles[4]["noisy_share"] > 0.8
    assert quintiles[0]["majority_accuracy"] > quintiles[4]["majority_accuracy"]
    assert sum(b["count"] for b in result["bins"]["answer"]["deciles"]) == N_PAIRS
    in_bin = [not math.isnan(a) and quintiles[1]["low_nats"] <= a <= quintiles[1]["high_nats"] for a in answer]
    assert sum(in_bin) == 40
    correct = ~majority_error
    q2 = np.array(in_bin)
    assert quintiles[1]["majority_accuracy"] == pytest.approx(correct[q2].mean())


def test_missing_policy_drop_and_lowest(score_file):
    rows = read_rows(score_file)
    dropped = analyze_scores(rows, ["answer"], missing="drop")
    assert dropped["n_used"]["answer"] == N_PAIRS - N_UNDEFINED
    assert sum(b["count"] for b in dropped["bins"]["answer"]["quintiles"]) == N_PAIRS - N_UNDEFINED
    lowest = analyze_scores(rows, ["answer"], missing="lowest")
    assert lowest["bins"]["answer"]["quintiles"][0]["n_missing"] == N_UNDEFINED
    assert lowest["auroc"]["answer"]["noisy"] < analyze_scores(rows, ["answer"])["auroc"]["answer"]["noisy"]


def test_analyze_writes_report_table_and_figures(score_file, tmp_path):
    out = tmp_path / "analysis"
    assert main(["analyze", str(score_file), "--output", str(out)]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["headline"]["best_metric"] == "answer"
    assert set(analysis["auroc"]["vote"]) == {"majority_error", "noisy", "true_error"}
    report = (out / "report.md").read_text()
    assert "Headline" in report and "missing=highest" in report and "| answer |" in report
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"accuracy_by_quintile.png", "noise_by_quintile.png", "hist_answer.png", "hist_vote.png"} <= names
    for png in pngs:
        assert f"]({png.name})" in report
        assert png.stat().st_size > 10_000
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300
    assert (out / "bins.csv").read_text().count("\n") == 1 + 5 * (5 + 10)


def test_metrics_option_parses_a_comma_list():
    from egt.core.config import load_config
    from egt.stages.analyze import Config

    cfg = load_config(Config, None, ["scores=s.parquet", "--metrics", "answer,vote", "--missing", "drop"])
    assert cfg.metrics == ["answer", "vote"] and cfg.missing == "drop"


def test_without_ground_truth_and_with_hybrid(tmp_path):
    rows = synthetic_rows(1)
    for row in rows:
        row["meta"] = {}
    result = analyze_scores(rows, ["answer", "hybrid"], weights={"answer": 1.0, "mean": 1.0})
    assert not result["noise_known"] and set(result["auroc"]["answer"]) == {"majority_error"}
    assert result["headline"]["target"] == "majority_error"
    assert "noisy_share" not in result["bins"]["answer"]["quintiles"][0]
    out = write_analysis(result, tmp_path / "a")
    assert not (out / "noise_by_quintile.png").exists() and (out / "hist_hybrid.png").exists()
