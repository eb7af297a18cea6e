"""Synthetic benchmark: determinism, noise models, difficulty metadata, oracle traces."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from egt.core.errors import ConfigError
from egt.core.prompts import parse_verdict
from egt.core.records import read_pairs
from egt.data import synth


@pytest.fixture(scope="module")
def big_pool():
    """2,000 pairs without noise (images embedded, nothing written)."""
    return synth.generate_pairs("pool", 2000, 7, "none")


def _flips(pairs, noise):
    """Re-apply a noise model to the same pairs (same per-pair streams as generate_pairs)."""
    kind, rate = synth.parse_noise(noise)
    probs = synth._flip_probabilities([p.meta["ambiguity"] for p in pairs], kind, rate)
    return probs


def test_same_seed_same_bytes(tmp_path):
    outs = [synth.run(synth.Config(split="pool", n=12, seed=3, noise="ambiguity:0.3", output=tmp_path / d / "p.parquet"))
            for d in ("a", "b")]
    assert outs[0].read_bytes() == outs[1].read_bytes()
    pngs = sorted((tmp_path / "a" / "p_images").glob("*.png"))
    assert len(pngs) == 12
    for png in pngs:
        assert png.read_bytes() == (tmp_path / "b" / "p_images" / png.name).read_bytes()
    other = synth.run(synth.Config(split="pool", n=12, seed=4, output=tmp_path / "c" / "p.parquet"))
    assert other.read_bytes() != outs[0].read_bytes()


def test_pair_i_does_not_depend_on_n_and_splits_differ():
    few = synth.generate_pairs("train", 3, 0)
    many = synth.generate_pairs("train", 10, 0)
    for a, b in zip(few, many):
        assert (a.id, a.question, a.response_1, a.response_2, a.label) == (b.id, b.question, b.response_1, b.response_2, b.label)
        assert a.images[0].data == b.images[0].data
    test = synth.generate_pairs("test", 3, 0)
    assert [p.meta["scene"] for p in test] != [p.meta["scene"] for p in few]


def test_written_file_reads_back_with_relative_images(synth_pairs, synth_pairs_list):
    import pyarrow.parquet as pq

    raw = pq.read_table(synth_pairs).to_pylist()
    assert raw[0]["images"][0]["path"] == f"pool_images/{raw[0]['id']}.png"
    assert len(synth_pairs_list) == 24
    img = synth_pairs_list[0].open_images()[0]
    assert img.size == (64, 64) and img.mode == "RGB"
    for pair in synth_pairs_list:
        meta = pair.meta
        assert set(meta) >= {"difficulty", "ambiguity", "true_label", "noisy", "question_kind", "flaw_kind", "scene"}
        assert 0.0 <= meta["ambiguity"] <= meta["difficulty"] <= 1.0
        assert meta["noisy"] == (pair.label != meta["true_label"])
        assert pair.category == meta["question_kind"] and pair.source == "synth"


def test_correct_response_is_at_true_label(big_pool):
    for pair in big_pool[:300]:
        scene, good = pair.meta["scene"], pair.meta["true_label"]
        correct = pair.response_1 if good == 1 else pair.response_2
        flawed = pair.response_2 if good == 1 else pair.response_1
        assert scene["claim"] in correct and scene["wrong_claim"] in flawed
        assert correct != flawed


def test_scene_is_drawn_where_it_says(big_pool):
    checked = 0
    for pair in big_pool:
        scene = pair.meta["scene"]
        obj = scene["objects"][0]
        if scene["kind"] != "describe" or obj["r"] < 8 or obj["shape"] == "triangle":
            continue
        pixel = pair.open_images()[0].getpixel((obj["x"], obj["y"]))
        assert pixel == synth._rgb(obj["colour"])
        checked += 1
    assert checked > 50


def test_every_kind_and_flaw_occurs(big_pool):
    kinds = {p.meta["question_kind"] for p in big_pool}
    flaws = {p.meta["flaw_kind"] for p in big_pool}
    assert kinds == set(synth.QUESTION_KINDS)
    assert flaws == set(synth.SUBTLETY)
    ambiguities = [p.meta["ambiguity"] for p in big_pool]
    # most pairs are clear, a real tail is ambiguous
    assert 0.4 < sum(a < 0.1 for a in ambiguities) / len(ambiguities) < 0.8
    assert sum(a > 0.7 for a in ambiguities) > 50


def test_colour_ambiguity_follows_hue_distance(big_pool):
    """colour_near pairs: hue at the midpoint between two names -> ambiguity 1."""
    for pair in big_pool:
        scene = pair.meta["scene"]
        if scene["flaw"] != "colour_near":
            continue
        colour = scene["objects"][0]["colour"]
        assert pair.meta["ambiguity"] >= colour["amb_hue"]
        assert scene["wrong_claim"].split()[0] == colour["lean"]


def test_flip_probabilities_hand_computed():
    assert synth._flip_probabilities([0.0, 0.5], "none", 0.0) == [0.0, 0.0]
    assert synth._flip_probabilities([0.0, 0.5], "uniform", 0.2) == [0.2, 0.2]
    probs = synth._flip_probabilities([0.0, 0.0, 1.0, 1.0], "ambiguity", 0.25)
    assert probs == pytest.approx([0.01 / 2.04, 0.01 / 2.04, 1.01 / 2.04, 1.01 / 2.04], abs=1e-6)
    # one very ambiguous pair is capped at 0.5; the rest of the budget goes to the others
    probs = synth._flip_probabilities([1.0, 0.0, 0.0, 0.0], "ambiguity", 0.25)
    assert probs == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6], abs=1e-6)


@pytest.mark.parametrize("noise", ["uniform:0.2", "ambiguity:0.25"])
def test_noise_rate_within_sampling_error(noise):
    pairs = synth.generate_pairs("pool", 2000, 11, noise)
    probs = [p.meta["flip_prob"] for p in pairs]
    rate = float(noise.split(":")[1])
    assert statistics.mean(probs) == pytest.approx(rate, abs=1e-4)
    flips = sum(p.meta["noisy"] for p in pairs)
    sd = math.sqrt(sum(q * (1 - q) for q in probs))
    assert abs(flips - rate * len(pairs)) < 3.5 * sd
    assert all((p.label != p.meta["true_label"]) == p.meta["noisy"] for p in pairs)


def _ambiguity_gap(pairs):
    flipped = [p.meta["ambiguity"] for p in pairs if p.meta["noisy"]]
    kept = [p.meta["ambiguity"] for p in pairs if not p.meta["noisy"]]
    se = math.sqrt(statistics.pvariance(flipped) / len(flipped) + statistics.pvariance(kept) / len(kept))
    return statistics.mean(flipped) - statistics.mean(kept), se


def test_ambiguity_noise_hits_ambiguous_pairs_uniform_does_not():
    gap, se = _ambiguity_gap(synth.generate_pairs("pool", 2000, 5, "ambiguity:0.2"))
    assert gap > 0.2 and gap > 6 * se
    gap, se = _ambiguity_gap(synth.generate_pairs("pool", 2000, 5, "uniform:0.2"))
    assert abs(gap) < 3.5 * se


def test_bad_noise_spec_is_a_config_error():
    for bad in ("uniform", "gauss:0.1", "uniform:0.7", "ambiguity:x"):
        with pytest.raises(ConfigError):
            synth.parse_noise(bad)
    from egt.core.config import load_config

    with pytest.raises(ConfigError, match="noise"):
        load_config(synth.Config, None, ["noise=uniform:2", "output=x.parquet"])


def test_oracle_faithful_traces_always_parse(big_pool):
    rng = random.Random(0)
    for i, pair in enumerate(big_pool):
        for r in (None, rng):
            v = parse_verdict(synth.oracle_trace(pair, rng=r))
            assert v.format_ok and v.verdict == pair.meta["true_label"], (pair.id, v)
        wrong = parse_verdict(synth.oracle_trace(pair, faithful=False, rng=rng))
        assert wrong.format_ok and wrong.verdict == 3 - pair.meta["true_label"]


def test_oracle_checks_each_response_and_varies_phrasing(big_pool):
    pair = big_pool[0]
    canonical = synth.oracle_trace(pair)
    assert canonical == synth.oracle_trace(pair)
    think = parse_verdict(canonical).think
    assert think.index("Response 1") < think.index("Response 2")
    scene = pair.meta["scene"]
    assert think.startswith(f"I see {scene['fact']}.")
    good = pair.meta["true_label"]
    # each check restates the read value beside the response's claim
    assert f"Response {good} says {scene['claim']}, I see {scene['claim']}: yes." in think
    assert f"Response {3 - good} says {scene['wrong_claim']}, I see {scene['claim']}: no." in think
    rng = random.Random(1)
    assert len({synth.oracle_trace(pair, rng=rng) for _ in range(40)}) == len(synth._TEMPLATES)
    unfaithful = parse_verdict(synth.oracle_trace(pair, faithful=False)).think
    assert unfaithful.startswith(f"I see {scene['wrong_fact']}.")
    assert f"Response {3 - good} says {scene['wrong_claim']}, I see {scene['wrong_claim']}: yes." in unfaithful


def test_question_kinds_option(tmp_path):
    out = synth.run(synth.Config(n=20, output=tmp_path / "c.parquet", question_kinds=["colour"]))
    assert {p.meta["question_kind"] for p in read_pairs(out)} == {"colour"}
    with pytest.raises(ConfigError):
        from egt.core.config import load_config

        load_config(synth.Config, None, ["question_kinds=[smell]", "output=x.parquet"])


def test_cli_and_inspectable(tmp_path):
    from egt.cli import main

    out = tmp_path / "t.parquet"
    assert main(["data", "synth", "--split", "test", "--n", "6", "--seed", "2", "--noise", "uniform:0.1",
                 "--output", str(out)]) == 0
    pairs = read_pairs(out)
    assert len(pairs) == 6 and pairs[0].id == "synth-test-2-000000"
    assert all(p.open_images()[0].size == (64, 64) for p in pairs)
