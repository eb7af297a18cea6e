"""egt.demo.rl_diet: what each RL run trained on, against hand-counted cases."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from egt.demo.rl_diet import claim_context, diet_section, rl_diet

# id, SFT K-sample accuracy against the (possibly flipped) label, label flipped by the noise model
POOL = [("p0", 1.0, False), ("p1", 1.0, False), ("p2", 0.5, True), ("p3", 0.25, False), ("p4", 0.0, True),
        ("p5", 0.75, True)]
HEADS = {"curate": {"subsets": {"curated_ascending": {"pairs": 6, "noise": 0.5},
                                "curated_descending": {"pairs": 6, "noise": 0.5}}}}


def make_run(root, consumed: dict[str, list[list[str]]], known_noise: bool = True):
    (root / "score").mkdir(parents=True)
    pq.write_table(pa.table({"id": [p for p, _, _ in POOL], "k_accuracy": [k for _, k, _ in POOL],
                             "meta": [json.dumps({"noisy": n} if known_noise else {}) for _, _, n in POOL]}),
                   root / "score" / "scores.parquet")
    for model, generations in consumed.items():
        (root / "rl" / model).mkdir(parents=True)
        lines = [json.dumps({"global_step": i + 1, "generation": i, "ids": ids}) for i, ids in enumerate(generations)]
        (root / "rl" / model / "consumed.jsonl").write_text("\n".join(lines) + "\n")
    return root


def diets(run):
    return {model: rl_diet(run, model) for model in ("a_egt", "b_full", "c_random", "d_descending")}


def test_rl_diet_counts_each_pair_once_and_the_noise_of_the_pairs_the_judge_splits(tmp_path):
    run = make_run(tmp_path, {"a_egt": [["p0", "p0::swap", "p2", "p2::swap"], ["p3", "p3::swap", "p5", "p5::swap"],
                                        ["p0", "p0::swap"]]})
    diet = rl_diet(run, "a_egt")
    # seen p0 p2 p3 p5 (p0 twice, swapped copies fold into their pair): 2 of 4 mislabeled (p2, p5)
    assert diet["ids"] == ["p0", "p2", "p3", "p5"] and diet["pairs_seen"] == 4
    assert diet["noise_seen"] == 0.5
    assert diet["solved"] == 0.25 and diet["missed"] == 0.0          # p0 solved in all K, none missed in all
    assert diet["split_pairs"] == 3 and abs(diet["split_noise"] - 2 / 3) < 1e-12   # p2 p3 p5; p2, p5 flipped
    assert rl_diet(run, "b_full") is None                              # no such run: nothing invented
    unknown = rl_diet(make_run(tmp_path / "real", {"a_egt": [["p0", "p2"]]}, known_noise=False), "a_egt")
    assert unknown["noise_seen"] is None and unknown["split_noise"] is None   # real data: noise not invented
    assert unknown["pairs_seen"] == 2 and unknown["split_pairs"] == 1


def test_descending_claim_says_whether_the_two_runs_saw_the_same_pairs(tmp_path):
    claim = "ascending (a) beats descending (d)"
    different = make_run(tmp_path / "different", {"a_egt": [["p0", "p0::swap", "p1", "p1::swap"]],
                                                  "d_descending": [["p4", "p4::swap", "p2", "p2::swap"]]})
    text = claim_context(claim, different, HEADS, None, None, diets(different))
    assert text.startswith("different pairs: the RL steps cover 2 of the subset's 6 pairs")
    assert "(0.00 mislabeled)" in text and "(1.00 mislabeled)" in text
    same = make_run(tmp_path / "same", {"a_egt": [["p0", "p0::swap", "p4", "p4::swap"]],
                                        "d_descending": [["p4", "p4::swap", "p0", "p0::swap"]]})
    assert claim_context(claim, same, HEADS, None, None, diets(same)).startswith("same pairs, reversed order")
    # the section's row for (a): 2 of 6 pairs, half mislabeled, one solved, one missed, none split
    section = "\n".join(diet_section(same, HEADS, diets(same)))
    assert "| (a) EGT: lowest entropy, ascending | 2 of 6 | 0.500 | 50% | 50% | 0 | n/a | n/a |" in section
