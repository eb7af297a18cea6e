"""Curation strategies: exact selections on a score file with known values, ties and NaN."""

import json
import math

import numpy as np
import pytest
from helpers import score_row

from egt.cli import main
from egt.core.config import load_config
from egt.core.errors import ConfigError, DataError
from egt.core.records import read_rows, write_rows
from egt.stages.curate import Config, rebuild, run

NAN = math.nan
# answer entropy per id; ascending with ties by id: p06 p00 p02 p03 p07 p09 p01 p08 p05 p04(nan)
ANSWER = {"p00": 0.10, "p01": 0.50, "p02": 0.20, "p03": 0.20, "p04": NAN,
          "p05": 0.90, "p06": 0.05, "p07": 0.20, "p08": 0.70, "p09": 0.30}
# verdicts of K = 4 samples; label is 1 for every pair, so "correct" = count of 1s
VERDICTS = {"p00": [1, 1, 1, 1], "p01": [1, 1, 1, 2], "p02": [2, 2, 2, 2], "p03": [1, 1, 0, 2],
            "p04": [0, 0, 0, 0], "p05": [1, 2, 1, 1], "p06": [1, 1, 1, 0], "p07": [2, 1, 2, 1],
            "p08": [1, 1, 1, 1], "p09": [2, 2, 2, 1]}


@pytest.fixture
def scores(tmp_path):
    rows = [score_row(i, verdicts=VERDICTS[i], answer=ANSWER[i], max=float(n % 3)) for n, i in enumerate(ANSWER)]
    return write_rows(rows, tmp_path / "scores.parquet")


def curate(scores, out, **options) -> tuple[list[str], list[dict], dict]:
    cfg = load_config(Config, None, {"scores": str(scores), "output": str(out), **options})
    folder = run(cfg)
    selected = read_rows(folder / "selected.parquet")
    assert [r["order"] for r in selected] == list(range(len(selected)))
    dropped = read_rows(folder / "dropped.parquet")
    assert len(selected) + len(dropped) == 10
    assert {r["id"] for r in selected}.isdisjoint({r["id"] for r in dropped})
    return [r["id"] for r in selected], dropped, json.loads((folder / "manifest.json").read_text())


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Row equality that treats NaN as equal to NaN."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def reasons(dropped):
    return {r["id"]: r["drop_reason"] for r in dropped}


def test_lowest_n_breaks_ties_by_id(scores, tmp_path):
    ids, dropped, manifest = curate(scores, tmp_path / "o", strategy="lowest", n=4)
    assert ids == ["p06", "p00", "p02", "p03"]
    assert reasons(dropped)["p07"] == ("answer_entropy_nats=0.2 > cutoff 0.2 (lowest 4 of 10); "
                                       "ties the last kept value 0.2, tie broken by id")
    assert reasons(dropped)["p05"] == "answer_entropy_nats=0.9 > cutoff 0.2 (lowest 4 of 10)"
    assert reasons(dropped)["p04"].startswith("answer_entropy_nats=undefined > cutoff 0.2")
    assert manifest["thresholds"] == {"cutoff": 0.2, "kept": 4}
    assert manifest["counts"]["selected"] == 4 and manifest["selected_ids"] == ids


def test_lowest_fraction_rounds_half_up(scores, tmp_path):
    ids, _, _ = curate(scores, tmp_path / "o", strategy="lowest", fraction=0.25)
    assert ids == ["p06", "p00", "p02"]


def test_missing_policies(scores, tmp_path):
    ids, _, _ = curate(scores, tmp_path / "a", strategy="lowest", n=3, missing="lowest")
    assert ids == ["p04", "p06", "p00"]
    ids, dropped, manifest = curate(scores, tmp_path / "b", strategy="lowest", n=9, missing="drop")
    assert ids == ["p06", "p00", "p02", "p03", "p07", "p09", "p01", "p08", "p05"]
    assert reasons(dropped) == {"p04": "answer_entropy_nats undefined (missing=drop)"}
    assert manifest["counts"]["dropped_missing"] == 1


def test_highest(scores, tmp_path):
    ids, _, _ = curate(scores, tmp_path / "a", strategy="highest", n=3)
    assert ids == ["p08", "p05", "p04"]  # selection p04 p05 p08, ordered ascending (nan last)
    ids, dropped, _ = curate(scores, tmp_path / "b", strategy="highest", n=6, missing="lowest", order="descending")
    assert ids == ["p05", "p08", "p01", "p09", "p02", "p03"]
    assert reasons(dropped)["p07"].endswith("ties the last kept value 0.2, tie broken by id")
    assert reasons(dropped)["p04"] == "answer_entropy_nats=undefined < cutoff 0.2 (highest 6 of 10)"


def test_prune_drops_the_top_percent(scores, tmp_path):
    ids, dropped, manifest = curate(scores, tmp_path / "a", strategy="prune", prune_percent=20)
    assert set(ids) == set(ANSWER) - {"p04", "p05"}
    assert reasons(dropped)["p05"] == "answer_entropy_nats=0.9 in the top 20% (threshold 0.9)"
    assert manifest["thresholds"] == {"prune_percent": 20.0, "drop_from": 0.9, "kept": 8}
    ids, _, _ = curate(scores, tmp_path / "b", strategy="prune", prune_percent=25)  # 2.5 -> 3 dropped
    assert set(ids) == set(ANSWER) - {"p04", "p05", "p08"}


def test_random_is_seeded_and_independent_of_row_order(scores, tmp_path):
    ids, dropped, _ = curate(scores, tmp_path / "a", strategy="random", n=4, seed=7, order="ascending")
    by_id = sorted(ANSWER)
    drawn = {by_id[i] for i in np.random.default_rng(7).permutation(10)[:4]}
    assert set(ids) == drawn
    assert all(r.startswith("not drawn by the random baseline (seed 7") for r in reasons(dropped).values())
    rows = read_rows(scores)[::-1]
    flipped = write_rows(rows, tmp_path / "flipped.parquet")
    ids2, _, _ = curate(flipped, tmp_path / "b", strategy="random", n=4, seed=7, order="ascending")
    assert ids2 == ids
    picks = {frozenset(curate(scores, tmp_path / f"s{s}", strategy="random", n=4, seed=s)[0]) for s in range(5)}
    assert len(picks) > 1


def test_accuracy_keeps_pairs_right_in_m_of_k(scores, tmp_path):
    ids, dropped, _ = curate(scores, tmp_path / "a", strategy="accuracy", min_correct=3)
    assert set(ids) == {"p00", "p01", "p05", "p06", "p08"}
    assert ids == ["p06", "p00", "p01", "p08", "p05"]  # ordered by answer entropy, ascending
    assert reasons(dropped)["p03"] == "correct in 2 of 4 samples < min_correct 3"
    assert reasons(dropped)["p04"] == "correct in 0 of 4 samples < min_correct 3"


def test_order_by_another_metric_and_buckets(scores, tmp_path):
    # max = n % 3 by row: p00 0, p01 1, p02 2, p03 0, p04 1, p05 2, p06 0, p07 1, p08 2, p09 0
    ids, _, _ = curate(scores, tmp_path / "a", strategy="lowest", n=4, order="descending", order_metric="max")
    assert ids == ["p02", "p00", "p03", "p06"]
    folder = tmp_path / "b"
    curate(scores, folder, strategy="lowest", n=6, order="buckets:2", seed=1)
    selected = read_rows(folder / "selected.parquet")
    # p06 p00 p02 | p03 p07 p09 by answer; ties 0.2 share the later stage: ranks 1,2,4,4,4,6
    stages = {r["id"]: r["stage"] for r in selected}
    assert stages == {"p06": 0, "p00": 0, "p02": 1, "p03": 1, "p07": 1, "p09": 1}
    assert [r["stage"] for r in selected] == sorted(r["stage"] for r in selected)


def test_hybrid_weights(tmp_path):
    rows = [score_row(i, answer=a, max=m) for i, a, m in
            [("a", 0.1, 0.4), ("b", 0.2, 0.3), ("c", 0.3, 0.1), ("d", 0.4, 0.2)]]
    path = write_rows(rows, tmp_path / "h.parquet")
    # ranks answer 0,1/3,2/3,1; max 1,2/3,0,1/3 -> weights 1:3 give .75 .583 .167 .5
    cfg = load_config(Config, None, {"scores": str(path), "output": str(tmp_path / "o"), "strategy": "lowest",
                                     "n": 2, "metric": "hybrid", "weights": {"answer": 1, "max": 3}})
    assert [r["id"] for r in read_rows(run(cfg) / "selected.parquet")] == ["c", "d"]
    cfg.weights, cfg.output = {"answer": 1, "max": 1}, tmp_path / "o2"   # .5 .5 .333 .667
    assert [r["id"] for r in read_rows(run(cfg) / "selected.parquet")] == ["c", "a"]


def test_outputs_carry_columns_and_manifest_rebuilds_exactly(scores, tmp_path):
    folder = run(load_config(Config, None, {"scores": str(scores), "output": str(tmp_path / "o"),
                                            "strategy": "random", "fraction": 0.5, "seed": 3,
                                            "order": "buckets:3"}))
    selected = read_rows(folder / "selected.parquet")
    assert {"verdicts", "answer_entropy_nats", "order", "stage", "meta"} <= set(selected[0])
    assert all(isinstance(r["order"], int) and isinstance(r["stage"], int) for r in selected)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["input"]["sha256"] and manifest["egt_version"] and manifest["config"]["seed"] == 3
    again = rebuild(folder / "manifest.json", tmp_path / "again")
    assert same_rows(read_rows(again / "selected.parquet"), selected)
    assert same_rows(read_rows(again / "dropped.parquet"), read_rows(folder / "dropped.parquet"))
    assert main(["curate", "--manifest", str(folder / "manifest.json"), "--output", str(tmp_path / "cli")]) == 0
    assert same_rows(read_rows(tmp_path / "cli" / "selected.parquet"), selected)
    write_rows(read_rows(scores)[:9], scores)   # the input changed: refuse to "rebuild"
    with pytest.raises(DataError, match="sha256"):
        rebuild(folder / "manifest.json", tmp_path / "bad")


def test_cli_and_config_errors(scores, tmp_path, capsys):
    assert main(["curate", str(scores), "--strategy", "lowest", "--n", "2", "--output", str(tmp_path / "c")]) == 0
    assert [r["id"] for r in read_rows(tmp_path / "c" / "selected.parquet")] == ["p06", "p00"]
    for options, message in [({"strategy": "lowest"}, "exactly one of n or fraction"),
                             ({"strategy": "prune"}, "prune_percent"),
                             ({"strategy": "accuracy", "n": 3}, "does not take n"),
                             ({"strategy": "lowest", "n": 2, "order": "zigzag"}, "ordering"),
                             ({"strategy": "lowest", "n": 2, "metric": "hybrid"}, "needs weights")]:
        with pytest.raises(ConfigError, match=message):
            run(load_config(Config, None, {"scores": str(scores), "output": str(tmp_path / "x"), **options}))
    assert main(["curate", str(scores), "--strategy", "lowest", "--output", str(tmp_path / "x")]) == 1
    assert "exactly one of n or fraction" in capsys.readouterr().err


def test_missing_column_names_the_file_and_field(tmp_path):
    path = write_rows([{"id": "a", "label": 1}], tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="answer_entropy_nats"):
        run(load_config(Config, None, {"scores": str(path), "output": str(tmp_path / "o"), "n": 1}))


def test_duplicate_ids_are_reported_with_their_row(tmp_path):
    path = write_rows([score_row("a", answer=0.1), score_row("b", answer=0.2), score_row("a", answer=0.3)],
                      tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="dup.parquet:2: field 'id' duplicate id 'a'"):
        run(load_config(Config, None, {"scores": str(path), "output": str(tmp_path / "o"), "n": 1}))


def test_rerun_with_other_settings_is_refused_unless_overwrite(scores, tmp_path):
    from egt.core.runfolder import StaleRunError

    out = tmp_path / "o"
    ids, _, _ = curate(scores, out, strategy="lowest", n=4)
    assert curate(scores, out, strategy="lowest", n=4)[0] == ids        # the same settings: fine
    with pytest.raises(StaleRunError, match=r"setting n: 4 -> 5"):
        curate(scores, out, strategy="lowest", n=5)
    write_rows(read_rows(scores)[::-1], scores)                          # same rows, other file
    with pytest.raises(StaleRunError, match=r"input scores: [0-9a-f]{12}\.\.\. -> "):
        curate(scores, out, strategy="lowest", n=4)
    assert len(curate(scores, out, strategy="lowest", n=5, overwrite=True)[0]) == 5


@pytest.mark.parametrize("edit, field", [(lambda m: m["config"].update(n="many"), "config.n"),
                                         (lambda m: m["config"].update(strategy="best"), "config.strategy"),
                                         (lambda m: m.pop("input"), "config"),
                                         (lambda m: m.update(selected_ids=7), "config")])
def test_bad_manifest_values_are_one_line_errors(scores, tmp_path, edit, field, capsys):
    folder = run(load_config(Config, None, {"scores": str(scores), "output": str(tmp_path / "o"), "n": 3}))
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"manifest.json: field '{field}'"):
        rebuild(folder / "manifest.json", tmp_path / "again")
    assert main(["curate", "--manifest", str(folder / "manifest.json"), "--output", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
