"""Metric functions of `egt eval` on hand-counted cases."""

import math

import pytest

from egt.stages.metrics import (
    CHOSEN,
    REJECTED,
    category_accuracy,
    choice_of,
    is_correct,
    judgement_stats,
    majority_vote,
    mmrb_metrics,
    mmrlhf_category,
    mmrlhf_metrics,
    order_metrics,
    vlrewardbench_category,
    vlrewardbench_metrics,
)


def test_vlrewardbench_categories_are_case_insensitive():
    assert vlrewardbench_category("RLAIF-V_0012") == "hallucination"
    assert vlrewardbench_category("RLHF-V-Dataset_3") == "hallucination"
    assert vlrewardbench_category("povid_hallucination_7") == "hallucination"
    assert vlrewardbench_category("mmmu_pro_12") == "reasoning"
    assert vlrewardbench_category("MathVerse_vision_1") == "reasoning"
    assert vlrewardbench_category("wildvision-battle_4") == "general"
    assert vlrewardbench_category("VLFeedback_9") == "general"
    # reasoning is checked first, as in the public script
    assert vlrewardbench_category("mmmu_rlhf_1") == "reasoning"


def test_vlrewardbench_overall_vs_macro():
    # general 1/1, hallucination 1/4, reasoning 2/2 (hand-counted)
    ids = ["wildvision_1", "RLAIF_1", "RLAIF_2", "RLHF_3", "povid_hallucination_4", "mmmu_1", "mathverse_2"]
    correct = [True, True, False, False, False, True, True]
    out = vlrewardbench_metrics(ids, correct)
    assert out["categories"]["general"] == {"accuracy": 1.0, "correct": 1, "n": 1}
    assert out["categories"]["hallucination"]["accuracy"] == pytest.approx(0.25)
    assert out["categories"]["hallucination"]["n"] == 4
    assert out["categories"]["reasoning"]["accuracy"] == 1.0
    assert out["accuracy"] == pytest.approx(4 / 7)
    assert out["macro_accuracy"] == pytest.approx((1.0 + 0.25 + 1.0) / 3)
    assert list(out["categories"]) == ["general", "hallucination", "reasoning"]


def test_vlrewardbench_case_sensitive_match_would_differ():
    # With a case-sensitive match the RLAIF ids would land in general (1/3 there instead of 1/1).
    ids = ["wildvision_1", "RLAIF_1", "RLAIF_2"]
    out = vlrewardbench_metrics(ids, [True, False, False])
    assert out["categories"]["general"]["n"] == 1
    assert out["categories"]["hallucination"]["n"] == 2


def test_vlrewardbench_verdict_only_variant_drops_no_verdict_pairs():
    ids = ["wildvision_1", "wildvision_2", "RLAIF_1", "RLAIF_2"]
    correct = [True, False, True, False]
    has_verdict = [True, False, True, True]
    out = vlrewardbench_metrics(ids, correct, has_verdict)
    assert out["accuracy"] == 0.5
    assert out["accuracy_verdict_only"] == pytest.approx(2 / 3)
    assert out["macro_accuracy_verdict_only"] == pytest.approx((1.0 + 0.5) / 2)


def test_macro_leaves_out_empty_categories():
    out = category_accuracy(["a", "a", "b"], [True, False, True], order=("a", "b", "c"))
    assert list(out["categories"]) == ["a", "b"]
    assert out["macro_accuracy"] == pytest.approx(0.75)
    assert out["accuracy"] == pytest.approx(2 / 3)


def test_mmrb_metrics_hand_counted():
    ids = ["pairs_1", "pairs_2", "toxic_1", "math_1", "math_2", "code_1", "vqa_1", "vqa_2"]
    cats = ["safety", "safety", "safety", "reasoning", "reasoning", "reasoning", "vqa", "vqa"]
    correct = [True, False, True, True, True, False, True, False]
    out = mmrb_metrics(ids, cats, correct)
    table = out["categories"]
    assert table["safety/bias"]["accuracy"] == 0.5 and table["safety/bias"]["n"] == 2
    assert table["safety/toxicity"]["accuracy"] == 1.0 and table["safety/toxicity"]["n"] == 1
    assert table["reasoning/math"]["accuracy"] == 1.0 and table["reasoning/math"]["n"] == 2
    assert table["reasoning/coding"]["accuracy"] == 0.0
    assert table["vqa"]["accuracy"] == 0.5
    assert out["accuracy"] == pytest.approx(5 / 8)  # the script's "all"
    assert "safety" not in table and "reasoning" not in table


def test_mmrlhf_category_from_path():
    assert mmrlhf_category("mm_reward_bench/mcq/001.jpg") == "mcq"
    assert mmrlhf_category("bench/long/2.png") == "long"
    assert mmrlhf_category("bench/video/clip_7") == "video"
    assert mmrlhf_category("bench/other/3.png") == "other"


def test_mmrlhf_acc_plus_groups_rows_by_id():
    # id a: 3 rows (mcq) all right; id b: 2 rows (mcq) one wrong; id c: 1 row (long) right;
    # id d: 2 rows (long) both wrong.
    gids = ["a", "a", "a", "b", "b", "c", "d", "d"]
    cats = ["mcq"] * 5 + ["long"] * 3
    correct = [True, True, True, True, False, True, False, False]
    out = mmrlhf_metrics(gids, cats, correct)
    assert out["accuracy"] == pytest.approx(5 / 8)
    assert out["acc_plus"] == pytest.approx(2 / 4)
    assert out["n_ids"] == 4
    mcq, long_ = out["categories"]["mcq"], out["categories"]["long"]
    assert mcq["accuracy"] == pytest.approx(4 / 5) and mcq["acc_plus"] == pytest.approx(1 / 2)
    assert long_["accuracy"] == pytest.approx(1 / 3) and long_["acc_plus"] == pytest.approx(1 / 2)
    assert mcq["n_ids"] == 2 and long_["n_ids"] == 2
    assert "short" not in out["categories"]


def test_mmrlhf_acc_plus_credits_first_keyword_category():
    # One id with rows in long and short, all right: credited to long only, counted in both denominators.
    out = mmrlhf_metrics(["x", "x"], ["short", "long"], [True, True])
    assert out["categories"]["long"]["acc_plus"] == 1.0
    assert out["categories"]["short"]["acc_plus"] == 0.0
    assert out["acc_plus"] == 1.0


def test_choice_and_correctness():
    assert choice_of(1, chosen_position=1) == CHOSEN
    assert choice_of(2, chosen_position=1) == REJECTED
    assert choice_of(1, chosen_position=2) == REJECTED
    assert choice_of(2, chosen_position=2) == CHOSEN
    assert choice_of(None, 1) is None
    assert is_correct([1, 0]) and not is_correct([0, 1]) and not is_correct([0, 0])


def test_majority_vote_and_tie_rule():
    assert majority_vote([CHOSEN]) == (CHOSEN, [1.0, 0.0])
    assert majority_vote([None]) == (None, [0.0, 0.0])
    assert majority_vote([CHOSEN, REJECTED, CHOSEN]) == (CHOSEN, [2 / 3, 1 / 3])
    # abstentions do not vote: 1 chosen vs 0 rejected wins
    assert majority_vote([CHOSEN, None, None])[0] == CHOSEN
    # a tie is no verdict and its rewards are not "right" for the official rule
    choice, rewards = majority_vote([CHOSEN, REJECTED, None, None])
    assert choice is None and rewards == [0.25, 0.25] and not is_correct(rewards)
    choice, rewards = majority_vote([REJECTED, REJECTED, CHOSEN, None, CHOSEN])
    assert choice is None and not is_correct(rewards)


def test_always_answers_one_judge():
    # "1" picks the chosen response when it is shown first, the rejected one when it is shown second.
    first = [choice_of(1, chosen_position=1)] * 5
    second = [choice_of(1, chosen_position=2)] * 5
    out = order_metrics(first, second)
    assert out == {"chosen_first_accuracy": 1.0, "chosen_second_accuracy": 0.0,
                   "both_order_accuracy": 0.0, "position_consistency": 0.0}


def test_order_metrics_hand_counted():
    first = [CHOSEN, CHOSEN, REJECTED, None, CHOSEN]
    second = [CHOSEN, REJECTED, REJECTED, None, None]
    out = order_metrics(first, second)
    assert out["chosen_first_accuracy"] == pytest.approx(3 / 5)
    assert out["chosen_second_accuracy"] == pytest.approx(1 / 5)
    assert out["both_order_accuracy"] == pytest.approx(1 / 5)
    # consistent: pair 0 (chosen both), pair 2 (rejected both); None-None is not consistent
    assert out["position_consistency"] == pytest.approx(2 / 5)


def test_judgement_stats_and_empty_accuracy():
    out = judgement_stats([True, False, False, True], [True, True, False, True], [10, 20, 30, 40])
    assert out == {"format_failure_rate": 0.5, "no_verdict_rate": 0.25, "mean_generated_tokens": 25.0,
                   "n_judgements": 4}
    assert math.isnan(category_accuracy([], [])["accuracy"])
