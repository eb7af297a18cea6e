"""`egt eval`: orders, voting, resume, official fields, compare, and the tiny judge end to end.

Most tests drive `evaluate_pairs` with scripted judges: plain functions that
answer a fixed verdict text per request, parsed by the real `parse_verdict`.
"""

import json
from pathlib import Path

import pytest

from egt.core.errors import EgtError
from egt.core.prompts import parse_verdict
from egt.core.records import PreferencePair
from egt.model.generation import Judgement
from egt.stages import evaluate as E


def make_pairs(n, prefix="p", category=""):
    # label alternates so that chosen is sometimes response_2 in the file
    return [PreferencePair(f"{prefix}{i}", [], f"q{i}", f"good {i}" if i % 2 == 0 else f"bad {i}",
                           f"bad {i}" if i % 2 == 0 else f"good {i}", 1 if i % 2 == 0 else 2,
                           category=category) for i in range(n)]


def answer(text):
    return Judgement(text=text, token_ids=list(range(len(text) // 4)), token_entropies_nats=None,
                     verdict=parse_verdict(text))


def verdict_text(v):
    return f"<think>t</think><answer>{v}</answer>"


class Scripted:
    """A judge: `policy(request) -> completion text`; records every request it saw."""

    def __init__(self, policy):
        self.policy, self.requests = policy, []

    def __call__(self, requests):
        self.requests.extend(requests)
        return [answer(self.policy(r)) for r in requests]


def always(v):
    return Scripted(lambda r: verdict_text(v))


def oracle():
    return Scripted(lambda r: verdict_text(1 if r.pair.response_1.startswith("good") else 2))


def cfg_for(tmp_path, **kw):
    base = dict(benchmark="synthetic", data=str(tmp_path / "data.parquet"), model=str(tmp_path / "model"),
                output=str(tmp_path / "out"), progress=False, batch_size=4)
    base.update(kw)
    return E.Config(**base)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_always_one_judge_both_orders(tmp_path):
    pairs = make_pairs(6)
    judge = always(1)
    out = E.evaluate_pairs(pairs, judge, cfg_for(tmp_path))
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["overall"]
    assert s["chosen_first_accuracy"] == 1.0 and s["chosen_second_accuracy"] == 0.0
    assert s["both_order_accuracy"] == 0.0 and s["position_consistency"] == 0.0
    assert s["accuracy"] == 1.0  # headline = chosen first, the public-script protocol
    assert metrics["views"]["both_orders"]["accuracy"] == 0.0
    assert s["format_failure_rate"] == 0.0 and s["n_judgements"] == 12
    # the judge saw each pair with the chosen response first and second
    seen = {(r.pair.id, r.pair.response_1.startswith("good")) for r in judge.requests}
    assert seen == {(p.id, first) for p in pairs for first in (True, False)}
    assert all(r.seed is None for r in judge.requests)  # K = 1 is greedy
    preds = read_jsonl(out / "predictions.jsonl")
    assert [p["egt_id"] for p in preds] == [p.id for p in pairs]
    assert all(p["rewards"] == [1.0, 0.0] and p["correct"] for p in preds)
    assert all(p["judgements"]["chosen_second"]["choices"] == ["rejected"] for p in preds)
    assert (out / "metrics.md").read_text().startswith("# egt eval: synthetic")


def test_oracle_judge_is_right_and_consistent(tmp_path):
    out = E.evaluate_pairs(make_pairs(5), oracle(), cfg_for(tmp_path))
    s = json.loads((out / "metrics.json").read_text())["overall"]
    assert s["both_order_accuracy"] == 1.0 and s["position_consistency"] == 1.0


def test_chosen_first_judges_once_per_pair(tmp_path):
    judge = always(2)
    out = E.evaluate_pairs(make_pairs(4), judge, cfg_for(tmp_path, orders="chosen-first"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(judge.requests) == 4 and list(metrics["views"]) == ["chosen_first"]
    assert metrics["overall"]["accuracy"] == 0.0 and metrics["overall"]["chosen_first_accuracy"] == 0.0
    assert "position_consistency" not in metrics["overall"]


def test_random_orders_are_seeded_per_pair(tmp_path):
    pairs = make_pairs(20)
    judge = always(1)
    out = E.evaluate_pairs(pairs, judge, cfg_for(tmp_path, orders="random", seed=3))
    preds = read_jsonl(out / "predictions.jsonl")
    orders = [p["order"] for p in preds]
    assert orders == [E.random_order(p.id, 3) for p in pairs]
    assert 0 < orders.count("chosen_first") < 20
    metrics = json.loads((out / "metrics.json").read_text())
    # always "1" is right exactly when the chosen response was shown first
    assert metrics["overall"]["accuracy"] == pytest.approx(orders.count("chosen_first") / 20)
    assert len(judge.requests) == 20 and metrics["headline_view"] == "random"
    assert [E.random_order(p.id, 4) for p in pairs] != orders


def test_voting_at_k_with_ties(tmp_path):
    # answers per (pair, order) in sample order; "x" has no verdict
    script = {("p0", "chosen_first"): ["1", "2", "1"],   # chosen 2-1: right
              ("p1", "chosen_first"): ["2", "1", "x"],   # 1-1 tie (p1's chosen is response 2 in the file)
              ("p2", "chosen_first"): ["x", "x", "2"]}   # rejected 0-1: wrong
    counters = {}

    def policy(request):
        order = "chosen_first" if request.pair.label == 1 else "chosen_second"
        key = (request.pair.id, order)
        i = counters.get(key, 0)
        counters[key] = i + 1
        v = script[key][i]
        return "<think>t</think><answer>maybe</answer>" if v == "x" else verdict_text(v)

    judge = Scripted(policy)
    out = E.evaluate_pairs(make_pairs(3), judge, cfg_for(tmp_path, orders="chosen-first", samples=3, batch_size=6))
    preds = {p["egt_id"]: p for p in read_jsonl(out / "predictions.jsonl")}
    assert preds["p0"]["rewards"] == pytest.approx([2 / 3, 1 / 3]) and preds["p0"]["correct"]
    assert preds["p1"]["rewards"] == pytest.approx([1 / 3, 1 / 3]) and not preds["p1"]["correct"]
    assert preds["p1"]["judgements"]["chosen_first"]["choice"] is None
    assert preds["p2"]["rewards"] == pytest.approx([0, 1 / 3]) and not preds["p2"]["correct"]
    s = json.loads((out / "metrics.json").read_text())["overall"]
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert s["no_verdict_rate"] == pytest.approx(3 / 9) and s["format_failure_rate"] == pytest.approx(3 / 9)
    seeds = [r.seed for r in judge.requests]
    assert None not in seeds and len(set(seeds)) == 9  # K > 1: a distinct seed per sample


def test_resume_skips_judged_pairs_and_recovers_a_torn_line(tmp_path):
    pairs = make_pairs(10)
    cfg = cfg_for(tmp_path, batch_size=4)

    class Crash(Exception):
        pass

    calls = []

    def crashing(requests):
        calls.append(len(requests))
        if len(calls) == 3:
            raise Crash
        return always(1)(requests)

    with pytest.raises(Crash):
        E.evaluate_pairs(pairs, crashing, cfg)
    log = tmp_path / "out" / E.LOG_NAME
    assert len(log.read_text().splitlines()) == 8  # two batches of 4 (pair, order) units kept
    with open(log, "a") as handle:
        handle.write('{"key": "p9\\tchosen_first", "verd')  # a write cut off mid-line
    judge = always(1)
    out = E.evaluate_pairs(pairs, judge, cfg)
    assert len(judge.requests) == 20 - 8
    assert len(log.read_text().splitlines()) == 20
    fresh = E.evaluate_pairs(pairs, always(1), cfg_for(tmp_path / "fresh"))
    resumed, clean = (json.loads((d / "metrics.json").read_text()) for d in (out, fresh))
    assert (resumed["overall"], resumed["views"]) == (clean["overall"], clean["views"])
    assert read_jsonl(out / "predictions.jsonl") == read_jsonl(fresh / "predictions.jsonl")
    # a finished run judges nothing on a rerun
    again = always(1)
    E.evaluate_pairs(pairs, again, cfg)
    assert again.requests == []


class Padded(Scripted):
    """A judge whose entropies depend on the batch a request is judged in, at the 1e-7 level, as a real model's do
    (a batch's padding changes the last bits of its logits)."""

    def __call__(self, requests):
        from egt.model.entropy import ResponseEntropy, ScoredJudgement

        self.requests.extend(requests)
        batch = "|".join(r.pair.question for r in requests)
        out = []
        for r in requests:
            jitter = 1e-7 * (sum(map(ord, batch)) % 97)
            verdict = parse_verdict(verdict_text(1))
            entropy = ResponseEntropy(1, 0.25 + jitter, 0.5 + jitter, 0.125 + jitter, 0.75 + jitter, 3)
            out.append(ScoredJudgement(verdict_text(1), verdict, 3, False, entropy))
        return out


def test_a_batch_torn_mid_way_is_judged_again_whole_so_entropies_equal_an_uninterrupted_run(tmp_path):
    """A kill while a batch's lines are written leaves some of them and a torn one: the rerun judges that whole batch
    again (the batches are fixed positions of the unit list), so every judgement -- entropies to the bit -- equals an
    uninterrupted run's."""
    pairs = make_pairs(10)
    cfg = cfg_for(tmp_path, batch_size=4)
    fresh = E.evaluate_pairs(pairs, Padded(None), cfg_for(tmp_path / "fresh", batch_size=4))

    class Crash(Exception):
        pass

    def crashing(requests, judge=Padded(None), calls=[]):
        calls.append(len(requests))
        if len(calls) == 3:
            raise Crash
        return judge(requests)

    with pytest.raises(Crash):
        E.evaluate_pairs(pairs, crashing, cfg)
    log = tmp_path / "out" / E.LOG_NAME
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 8                                   # batches 1 and 2 of 4 units each
    log.write_text("".join(lines[:5]) + lines[5][:25])      # batch 2: one line whole, one torn, two lost
    judge = Padded(None)
    out = E.evaluate_pairs(pairs, judge, cfg)
    assert len(judge.requests) == 20 - 4                     # batch 2 again whole, then 3, 4, 5
    by_key = {r["key"]: r for r in read_jsonl(log)}
    assert by_key == {r["key"]: r for r in read_jsonl(fresh / E.LOG_NAME)}
    assert read_jsonl(out / "predictions.jsonl") == read_jsonl(fresh / "predictions.jsonl")


def test_rerun_with_other_settings_is_refused(tmp_path):
    E.evaluate_pairs(make_pairs(2), always(1), cfg_for(tmp_path))
    with pytest.raises(EgtError, match="max_new_tokens"):
        E.evaluate_pairs(make_pairs(2), always(1), cfg_for(tmp_path, max_new_tokens=7))
    # a different order choice reuses the judged units
    judge = always(1)
    E.evaluate_pairs(make_pairs(2), judge, cfg_for(tmp_path, orders="chosen-first"))
    assert judge.requests == []


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path.name


def test_mmrlhf_predictions_carry_group_ids_and_acc_plus(tmp_path):
    rows = []
    for gid, cat, n in (("a", "mcq", 2), ("b", "mcq", 1), ("c", "long", 2)):
        for k in range(n):
            _png(tmp_path / cat / f"{gid}{k}.png")
            rows.append({"id": gid, "image": f"{cat}/{gid}{k}.png", "prompt": "q",
                         "chosen": f"good {gid}{k}", "rejected": f"bad {gid}{k}"})
    data = tmp_path / "mm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = cfg_for(tmp_path, benchmark="mmrlhf", data=str(data), orders="chosen-first")
    pairs, skipped = E.load_pairs(cfg)
    wrong = {"a1"}  # the judge errs on row a#1 only

    def policy(r):
        tag = r.pair.response_1.split()[-1]
        return verdict_text(2 if tag in wrong else 1)

    out = E.evaluate_pairs(pairs, Scripted(policy), cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    view = metrics["views"]["chosen_first"]
    assert view["accuracy"] == pytest.approx(4 / 5) and view["acc_plus"] == pytest.approx(2 / 3)
    assert view["categories"]["mcq"]["acc_plus"] == pytest.approx(1 / 2)
    assert view["categories"]["long"]["acc_plus"] == 1.0
    preds = read_jsonl(out / "predictions.jsonl")
    # what the public MM-RLHF script reads: the shared id, a path with the category, rewards
    assert [p["id"] for p in preds] == ["a", "a", "b", "c", "c"]
    assert all(p["category"] in p["image"] for p in preds)
    assert [p["rewards"][0] > p["rewards"][1] for p in preds] == [True, False, True, True, True]


def test_mmrb_fields_for_both_public_scripts(tmp_path):
    rows = []
    for i, (rid, cat) in enumerate((("pairs_1", "safety"), ("hateful_2", "safety"), ("math_3", "reasoning"))):
        rows.append({"ID": rid, "Text": "q", "Image": _png(tmp_path / f"{i}.png"), "Output1": f"good {i}",
                     "Output2": f"bad {i}", "Better": "Output1", "Meta": {"Category": cat}})
    data = tmp_path / "all_data.json"
    data.write_text(json.dumps(rows))
    cfg = cfg_for(tmp_path, benchmark="mmrb", data=str(data))
    pairs, _ = E.load_pairs(cfg)
    out = E.evaluate_pairs(pairs, always(1), cfg)
    preds = read_jsonl(out / "predictions.jsonl")
    assert [p["Category"] for p in preds] == ["safety", "safety", "reasoning"]
    assert all(p["Meta"]["Category"] == p["Category"] for p in preds)
    assert all(p["Label"] == "A" and p["output"] == "[[A]]" for p in preds)
    cats = json.loads((out / "metrics.json").read_text())["views"]["chosen_second"]["categories"]
    assert set(cats) == {"safety/bias", "safety/toxicity", "reasoning/math"}
    assert all(c["accuracy"] == 0.0 for c in cats.values())


def test_vlrewardbench_views_and_categories(tmp_path):
    rows = [{"id": rid, "prompt": "q", "chosen": f"good {i}", "rejected": f"bad {i}",
             "image": _png(tmp_path / f"{i}.png")}
            for i, rid in enumerate(["RLAIF-V_1", "wildvision_2", "mmmu_3", "povid_hallucination_4"])]
    data = tmp_path / "vl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = cfg_for(tmp_path, benchmark="vlrewardbench", data=str(data))
    pairs, _ = E.load_pairs(cfg)
    out = E.evaluate_pairs(pairs, oracle(), cfg)
    view = json.loads((out / "metrics.json").read_text())["views"]["both_orders"]
    assert {c: v["n"] for c, v in view["categories"].items()} == {"general": 1, "hallucination": 2, "reasoning": 1}
    assert view["accuracy"] == 1.0 and view["macro_accuracy"] == 1.0
    assert [p["id"] for p in read_jsonl(out / "predictions.jsonl")] == [r["id"] for r in rows]


def test_decompression_bombs_stop_naming_the_row_or_are_skipped_and_counted(tmp_path, tiny_model_dir, capsys):
    """20,000 x 20,000 (above PIL's own limit) and 13,000 x 13,000 (above egt's cap) one-bit PNGs, in a pairs file's
    bytes column and as a benchmark's image files: one line naming the file and row, before the model loads; with
    on_error=skip they are skipped and counted like any bad row."""
    from helpers import bomb_png

    from egt.cli import main
    from egt.core.errors import DataError
    from egt.core.records import ImageRef, write_pairs

    pairs = make_pairs(3)
    pairs[1].images = [ImageRef(data=bomb_png(20_000, 20_000))]
    pairs[2].images = [ImageRef(data=bomb_png(13_000, 13_000))]
    data = write_pairs(pairs, tmp_path / "data.parquet")
    with pytest.raises(DataError, match=r"data.parquet:1: field 'images' image <embedded bytes>: more than "
                                        r"178,956,970 pixels"):
        E.load_pairs(cfg_for(tmp_path, data=str(data)))
    kept, skipped = E.load_pairs(cfg_for(tmp_path, data=str(data), on_error="skip"))
    assert [p.id for p in kept] == ["p0"]
    assert [(s["line"], s["field"]) for s in skipped] == [(1, "images"), (2, "images")]
    assert "13000 x 13000 = 169,000,000 pixels, above max_image_pixels" in skipped[1]["reason"]
    kept, skipped = E.load_pairs(cfg_for(tmp_path, data=str(data), on_error="skip", max_image_pixels=170_000_000))
    assert [p.id for p in kept] == ["p0", "p2"] and len(skipped) == 1        # the cap is the user's to raise

    (tmp_path / "bomb.png").write_bytes(bomb_png(20_000, 20_000))
    rows = [{"id": f"RLAIF-V_{i}", "prompt": "q", "chosen": "good", "rejected": "bad", "image": name}
            for i, name in enumerate([_png(tmp_path / "ok.png"), "bomb.png"])]
    bench = tmp_path / "vl.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept, skipped = E.load_pairs(cfg_for(tmp_path, benchmark="vlrewardbench", data=str(bench), on_error="skip"))
    assert len(kept) == 1 and skipped[0]["line"] == 2 and "decompression-bomb limit" in skipped[0]["reason"]
    capsys.readouterr()
    code = main(["eval", "--benchmark", "vlrewardbench", "--data", str(bench), "--model", str(tiny_model_dir),
                 "--output", str(tmp_path / "out"), "--progress", "false"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "internal error" not in err
    assert "vl.jsonl:2: field 'image' image " in err and "bomb.png: more than 178,956,970 pixels" in err


def test_compare_prints_runs_side_by_side(tmp_path, capsys):
    from egt.cli import main

    a = E.evaluate_pairs(make_pairs(4, category="x"), always(1), cfg_for(tmp_path / "a"))
    b = E.evaluate_pairs(make_pairs(4, category="x"), oracle(), cfg_for(tmp_path / "b"))
    assert main(["compare", str(a), str(b), "--output", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert table.strip() in capsys.readouterr().out
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()}
    assert lines["both_order_accuracy"] == ["0.0000", "1.0000"]
    assert lines["accuracy: x"] == ["1.0000", "1.0000"]
    assert main(["compare", str(tmp_path / "nope")]) == 1
    assert "no metrics.json" in capsys.readouterr().err


def test_config_needs_inputs():
    from egt.core.config import load_config
    from egt.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--model"):
        load_config(E.Config, None, ["--benchmark", "synthetic", "--data", "x", "--output", "o"])


@pytest.mark.slow
def test_tiny_judge_end_to_end(tmp_path, tiny_model_dir, synth_pairs_path):
    from egt.cli import main

    data = synth_pairs_path("test", 6)
    out = tmp_path / "eval"
    args = ["eval", "--benchmark", "synthetic", "--data", str(data), "--model", str(tiny_model_dir),
            "--output", str(out), "--max_new_tokens", "12", "--batch_size", "6", "--progress", "false"]
    assert main(args) == 0
    for name in ("predictions.jsonl", "metrics.json", "metrics.md", E.LOG_NAME):
        assert (out / name).exists(), name
    preds = read_jsonl(out / "predictions.jsonl")
    assert len(preds) == 6 and all(set(p["judgements"]) == {"chosen_first", "chosen_second"} for p in preds)
    assert all(len(p["rewards"]) == 2 for p in preds)
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["overall"]
    assert metrics["n_pairs"] == 6 and s["n_judgements"] == 12
    assert 0 < s["mean_generated_tokens"] <= 12
    assert 0.0 <= s["format_failure_rate"] <= 1.0
    # greedy judgements carry their entropies (from the raw logits), so abstention is reported
    records = read_jsonl(out / E.LOG_NAME)
    spoke = [r for r in records if r["n_tokens"][0] > 0]
    assert spoke and all(r["entropies_nats"]["mean"][0] > 0 for r in spoke)
    assert set(metrics["abstention"]["views"]) == {"chosen_first", "chosen_second", "both_orders"}
    assert (out / "risk_coverage_both_orders.png").exists()
    # a rerun finds everything judged and does not load the model again
    log_before = (out / E.LOG_NAME).read_text()
    assert main(args) == 0 and (out / E.LOG_NAME).read_text() == log_before
    # voting@2 through seeded sampling: reproducible across runs
    voted = []
    for name in ("vote_a", "vote_b"):
        cfg = E.Config(benchmark="synthetic", data=str(data), model=str(tiny_model_dir), output=str(tmp_path / name),
                       orders="chosen-first", samples=2, max_new_tokens=12, batch_size=12, progress=False)
        E.run(cfg)
        rows = read_jsonl(tmp_path / name / "predictions.jsonl")
        voted.append([r["judgements"]["chosen_first"]["texts"] for r in rows])
    assert voted[0] == voted[1] and all(len(texts) == 2 for texts in voted[0])
    assert any(a != b for a, b in voted[0])  # the two samples of a pair differ


# ------------------------------------------------------------------ abstention by entropy

def entropic(verdict, value):
    """A judgement with every per-response entropy equal to `value` (as egt.judge.api.LocalBackend returns)."""
    from egt.model.entropy import ResponseEntropy, ScoredJudgement

    text = verdict_text(verdict)
    return ScoredJudgement(text, parse_verdict(text), 5, False, ResponseEntropy(verdict, value, value, value, value, 5))


def test_abstention_risk_coverage_hand_counted(tmp_path):
    # chosen first only: right on p0 (entropy .1) and p1 (.2), wrong on p2 (.3) and p3 (.4)
    value = {"p0": 0.1, "p1": 0.2, "p2": 0.3, "p3": 0.4}

    def judge_fn(requests):
        out = []
        for r in requests:
            right = r.pair.id in ("p0", "p1")
            out.append(entropic(r.pair.label if right else 3 - r.pair.label, value[r.pair.id]))
        return out

    out = E.evaluate_pairs(make_pairs(4), judge_fn, cfg_for(tmp_path, orders="chosen-first"))
    metrics = json.loads((out / "metrics.json").read_text())
    view = metrics["abstention"]["views"]["chosen_first"]
    assert set(view) == {"answer", "sentence", "mean", "max"}        # vote only with samples > 1
    for metric in view.values():
        assert metric["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
        assert metric["accuracy_at"] == {"1": 0.5, "0.9": 0.5, "0.8": 0.5, "0.5": 1.0}
        assert metric["coverage_at"]["0.8"] == 1.0                   # 80% of 4 pairs needs all 4
    assert metrics["overall"]["accuracy"] == 0.5                     # the official metrics are unchanged
    curves = json.loads((out / "risk_coverage.json").read_text())
    assert curves["chosen_first"]["max"]["accuracy"] == pytest.approx([1.0, 1.0, 2 / 3, 0.5])
    assert (out / "risk_coverage_chosen_first.png").stat().st_size > 1000
    assert "## Abstention by entropy" in (out / "metrics.md").read_text()
    records = read_jsonl(out / E.LOG_NAME)
    assert records[0]["entropies_nats"] == {"answer": [0.1], "sentence": [0.1], "mean": [0.1], "max": [0.1]}
    preds = read_jsonl(out / "predictions.jsonl")
    assert preds[3]["judgements"]["chosen_first"]["entropies_nats"]["max"] == [0.4]


def test_abstention_both_orders_and_vote(tmp_path):
    # both orders, 2 samples: the both-order view averages over all four judgements; vote entropy joins
    def judge_fn(requests):
        return [entropic(1, 0.5 if r.pair.label == 1 else 1.5) for r in requests]   # always "1"

    out = E.evaluate_pairs(make_pairs(4), judge_fn, cfg_for(tmp_path, samples=2, batch_size=8))
    abst = json.loads((out / "metrics.json").read_text())["abstention"]
    assert set(abst["views"]) == {"chosen_first", "chosen_second", "both_orders"}
    assert set(abst["views"]["both_orders"]) == {"answer", "sentence", "mean", "max", "vote"}
    # chosen first: always right; both orders: never (position bias)
    assert abst["views"]["chosen_first"]["max"]["aurc"] == 0.0
    assert abst["views"]["both_orders"]["max"]["aurc"] == 1.0
    vote = abst["views"]["chosen_first"]["vote"]
    assert vote["accuracy_at"]["0.5"] == 1.0 and vote["coverage_at"]["0.5"] == 1.0  # all tied at vote entropy 0
    assert {p.name for p in out.glob("risk_coverage*")} == {"risk_coverage.json", "risk_coverage_chosen_first.png",
                                                             "risk_coverage_both_orders.png"}


def test_judgements_without_entropies_are_redone(tmp_path, capsys):
    pairs, cfg = make_pairs(3), cfg_for(tmp_path)
    out = E.evaluate_pairs(pairs, always(1), cfg)      # a judge without entropies: no abstention section
    assert json.loads((out / "metrics.json").read_text())["abstention"] is None
    assert not (out / "risk_coverage.json").exists()
    log = out / E.LOG_NAME
    records = read_jsonl(log)
    for r in records[:4]:
        del r["entropies_nats"]                        # as egt eval wrote them before it stored entropies
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    judge = Scripted(lambda r: verdict_text(1))
    E.evaluate_pairs(pairs, lambda requests: [entropic(1, 0.2) for _ in judge(requests)], cfg)
    assert len(judge.requests) == 4 and "4 judgement(s)" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["abstention"] is None   # two units still lack them
    assert all("entropies_nats" in r for r in E.judgement_log(log).load().values())

def test_image_root_applies_to_pairs_files_and_stays_closed(tmp_path, synth_pairs_path):
    import shutil

    from egt.core.errors import DataError

    data = synth_pairs_path("test", 3)
    moved = tmp_path / "elsewhere" / "test.parquet"
    moved.parent.mkdir()
    shutil.copy(data, moved)          # relative image paths now point into a folder without images
    cfg = cfg_for(tmp_path, data=str(moved))
    with pytest.raises(DataError, match=r"test.parquet:0: field 'images' image .*: image file not found"):
        E.load_pairs(cfg)                                          # every image is checked before any work
    pairs, _ = E.load_pairs(cfg_for(tmp_path, data=str(moved), image_root=str(data.parent)))
    assert pairs[0].open_images()[0].size[0] > 0                  # --image-root is where they resolve
    with pytest.raises(DataError, match="image file not found"):
        E.load_pairs(cfg_for(tmp_path, data=str(moved), image_root=str(tmp_path / "elsewhere")))


@pytest.mark.slow
def test_changed_model_weights_are_refused_not_reused(tmp_path, tiny_model_dir, synth_pairs_path):
    import shutil

    from egt.core.runfolder import StaleRunError

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cfg = E.Config(benchmark="synthetic", data=str(synth_pairs_path("test", 2)), model=str(model),
                   output=str(tmp_path / "out"), max_new_tokens=4, batch_size=4, progress=False)
    E.run(cfg)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))          # same path, same size, other weights
    log = (tmp_path / "out" / E.LOG_NAME).read_text()
    with pytest.raises(StaleRunError, match=r"model file model\.safetensors"):
        E.run(cfg)
    assert (tmp_path / "out" / E.LOG_NAME).read_text() == log
    E.run(cfg.model_copy(update={"overwrite": True}))
    assert len((tmp_path / "out" / E.LOG_NAME).read_text().splitlines()) == 4


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_model_dir, synth_pairs_path):
    import os
    import subprocess
    import sys

    from helpers import kill_once_journalled

    data = synth_pairs_path("test", 16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def cmd(out):
        return [sys.executable, "-m", "egt.cli", "eval", "--benchmark", "synthetic", "--data", str(data), "--model",
                str(tiny_model_dir), "--output", str(out), "--max_new_tokens", "40", "--batch_size", "2",
                "--progress", "false"]

    assert subprocess.run(cmd(tmp_path / "ref"), env=env, capture_output=True, timeout=300).returncode == 0
    out = tmp_path / "killed"
    log = out / E.LOG_NAME
    judged = kill_once_journalled(cmd(out), log, 4, timeout_s=240, env=env)
    assert 4 <= judged < 32, "the run was not interrupted mid-way"
    with open(log, "ab") as handle:
        handle.write(b'{"key": "torn')                  # and a line cut off by a kill
    assert subprocess.run(cmd(out), env=env, capture_output=True, timeout=300).returncode == 0
    for name in ("predictions.jsonl", "metrics.json"):
        assert (out / name).read_text() == (tmp_path / "ref" / name).read_text().replace(
            str(tmp_path / "ref"), str(out)), name


# ------------------------------------------------------------------ a served judge, independent jobs

def _served_pairs(tmp_path, n=12):
    from PIL import Image

    from egt.core.records import ImageRef, write_pairs

    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    pairs = [PreferencePair(f"p{i}", [ImageRef(path=str(image))], ("hard " if i % 3 == 2 else "") + f"q{i}",
                            f"good {i}" if i % 2 == 0 else f"bad {i}", f"bad {i}" if i % 2 == 0 else f"good {i}",
                            1 if i % 2 == 0 else 2) for i in range(n)]
    return write_pairs(pairs, tmp_path / "pairs.jsonl")


OUTPUTS = ("judgements.jsonl", "predictions.jsonl", "metrics.json", "metrics.md", "config.yaml", "risk_coverage.json")


def test_served_judge_split_into_shard_jobs_writes_what_one_process_writes(tmp_path):
    """`model=http://...` judges through egt.judge.endpoint (entropies: upper bounds from the top-k log-probs);
    three `--shard i/3` jobs on one folder write byte for byte the files one process writes, the last job
    writes them, and no unit is judged twice."""
    from helpers import FakeOpenAIServer, FakeServedJudge

    data = _served_pairs(tmp_path)
    with FakeOpenAIServer(FakeServedJudge()) as server:
        def cfg(out, **kw):
            return E.Config(benchmark="pairs", data=str(data), model=server.base_url, vocab_size=10, top_logprobs=2,
                            output=str(out), progress=False, **{"served_model": "judge-x", "batch_size": 4, **kw})

        def posts():
            return sum(r[0] == "POST" for r in server.requests)

        one = E.run(cfg(tmp_path / "one"))
        assert posts() == 24
        records = read_jsonl(one / E.LOG_NAME)
        assert records[0]["entropies_nats"]["answer"][0] > 0 and records[0]["texts"][0].endswith("</answer>")
        metrics = json.loads((one / "metrics.json").read_text())
        assert metrics["model"] == server.base_url and metrics["overall"]["accuracy"] == pytest.approx(8 / 12)  # hard: wrong
        split = tmp_path / "split"
        for i in range(3):
            if i == 1:   # a job cutting the pairs into other batches would own other pairs: refused, naming it
                with pytest.raises(EgtError, match="setting batch_size: 4 -> 2"):
                    E.run(cfg(split, shard="1/3", batch_size=2))
            E.run(cfg(split, shard=f"{i}/3"))
            assert (split / "predictions.jsonl").exists() == (i == 2)   # the last job writes the outputs
        assert posts() == 48
        # the URL and the served model name stand for the weights (as egt judge's); without served_model, the
        # name the server lists
        listed = E.run(cfg(tmp_path / "listed", served_model=None, limit=1))
    for folder in (one, listed):
        fingerprint = json.loads((folder / "fingerprint.json").read_text())
        assert fingerprint["models"] == {} and fingerprint["settings"]["endpoint"] == server.base_url
        assert fingerprint["settings"]["served_model"] == "judge-x"
    for name in OUTPUTS:
        assert (split / name).read_bytes() == (one / name).read_bytes().replace(b"/one", b"/split"), name
    assert not (split / "shards").exists()                               # the jobs' journals are folded in
    with pytest.raises(EgtError, match="shard=3/3"):
        E.run(cfg(split, shard="3/3"))


@pytest.mark.heavy
def test_tiny_judge_under_torchrun_and_as_shard_jobs_equals_one_process(tmp_path, tiny_model_dir, synth_pairs_path):
    """`egt eval` split over the ranks of a torchrun world of 2 (gloo on CPU) and over three independent
    `--shard i/3` jobs started together: every output file equals the one-process run's byte for byte
    (batches are the same blocks of units, each generated by one process)."""
    import os
    import subprocess
    import sys

    data = synth_pairs_path("test", 5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = ["-m", "egt.cli", "eval", "--benchmark", "synthetic", "--data", str(data), "--model", str(tiny_model_dir),
            "--max_new_tokens", "16", "--batch_size", "2", "--progress", "false"]

    def start(out, *extra, launcher=()):
        return subprocess.Popen([sys.executable, *launcher, *args, "--output", str(tmp_path / out), *extra], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(*procs):
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]

    finish(start("one"))
    finish(start("world", launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")))
    finish(*[start("jobs", "--shard", f"{i}/3") for i in range(3)])
    for run in ("world", "jobs"):
        for name in (*OUTPUTS, "risk_coverage_both_orders.png"):
            assert (tmp_path / run / name).read_bytes() == \
                (tmp_path / "one" / name).read_bytes().replace(b"/one", f"/{run}".encode()), (run, name)
        assert not (tmp_path / run / "shards").exists()
