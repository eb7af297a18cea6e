"""`egt data convert` / `egt data inspect`: files written, report, swap, exit codes."""

from __future__ import annotations

import json

import pytest
from test_readers import png_bytes, write_jsonl, write_png

from egt.cli import main
from egt.core.records import read_pairs, read_rows
from egt.data import convert, inspection


def _mmrlhf_file(tmp_path, bad=False):
    write_png(tmp_path / "mcq/1.png")
    rows = [{"id": "g", "image": "mcq/1.png", "prompt": "Q", "chosen": "good answer", "rejected": "bad"},
            {"id": "g", "image": "mcq/1.png", "prompt": "Q", "chosen": "good answer", "rejected": "worse"}]
    if bad:
        rows.append({"id": "h", "image": "mcq/missing.png", "prompt": "Q", "chosen": "c", "rejected": "r"})
    return write_jsonl(tmp_path / "mm.jsonl", rows)


def test_convert_parquet_swap_absolute_paths(tmp_path, capsys):
    src = _mmrlhf_file(tmp_path)
    out = tmp_path / "out/pairs.parquet"
    assert main(["data", "convert", "--format", "mmrlhf", "--input", str(src), "--output", str(out),
                 "--swap"]) == 0
    pairs = read_pairs(out)
    assert [(p.id, p.label, p.response_1) for p in pairs] == [
        ("g#0", 1, "good answer"), ("g#0::swap", 2, "bad"), ("g#1", 1, "good answer"), ("g#1::swap", 2, "worse")]
    assert all(p.chosen == "good answer" for p in pairs)
    assert pairs[1].meta["swapped_from"] == "g#0" and pairs[1].meta["group_id"] == "g"
    assert pairs[0].images[0].path == str((tmp_path / "mcq/1.png").resolve())
    assert pairs[0].images[0].open().size == (4, 3)
    assert "converted 2 pairs" in capsys.readouterr().out
    assert not (tmp_path / "out/pairs.skipped.jsonl").exists()


def test_convert_jsonl_output_embeds_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "mmmu_1", "query": "Q", "response": ["a", "b"],
                                          "human_ranking": [1, 0], "image": {"bytes": png_bytes(), "path": None}}]),
                   tmp_path / "vl.parquet")
    out = convert.run(convert.Config(format="vlrewardbench", input=tmp_path / "vl.parquet",
                                     output=tmp_path / "pairs.jsonl"))
    [pair] = read_pairs(out)
    assert (pair.label, pair.category) == (2, "reasoning") and pair.images[0].data == png_bytes()


def test_convert_fail_exits_1_without_traceback(tmp_path, capsys):
    src = _mmrlhf_file(tmp_path, bad=True)
    code = main(["data", "convert", "--format", "mmrlhf", "--input", str(src), "--output", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    assert code == 1 and f"{src}:3: field 'image'" in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "o.parquet").exists()


def test_convert_skip_writes_report_and_counts(tmp_path, capsys):
    src = _mmrlhf_file(tmp_path, bad=True)
    out = tmp_path / "o.parquet"
    assert main(["data", "convert", "--format", "mmrlhf", "--input", str(src), "--output", str(out),
                 "--on-error", "skip"]) == 0
    report = read_rows(tmp_path / "o.skipped.jsonl")
    assert report == [{"file": str(src), "line": 3, "field": "image",
                       "reason": f"image file not found: {(tmp_path / 'mcq/missing.png').resolve()}"}]
    printed = capsys.readouterr().out
    assert "converted 2 pairs" in printed and "skipped 1 records" in printed
    assert len(read_pairs(out)) == 2


def test_convert_all_bad_in_skip_mode_fails_with_report(tmp_path, capsys):
    src = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "question": "Q", "response_1": "x", "response_2": "y",
                                              "label": 0}])
    code = main(["data", "convert", "--format", "pairs", "--input", str(src), "--output", str(tmp_path / "o.parquet"),
                 "--on-error", "skip"])
    assert code == 1 and "no valid records (1 skipped" in capsys.readouterr().err
    assert read_rows(tmp_path / "o.skipped.jsonl")[0]["field"] == "label"


def test_convert_column_map_from_cli(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"k": "1", "prompt": "Q", "win": "w", "lose": "l"}])
    out = tmp_path / "o.parquet"
    assert main(["data", "convert", "--format", "pairs", "--input", str(src), "--output", str(out),
                 "--column-map", json.dumps({"id": "k", "question": "prompt", "chosen": "win",
                                             "rejected": "lose"})]) == 0
    [pair] = read_pairs(out)
    assert (pair.id, pair.question, pair.chosen, pair.label) == ("1", "Q", "w", 1)


def test_inspect_counts_and_image_check(tmp_path, capsys):
    src = _mmrlhf_file(tmp_path)
    out = convert.run(convert.Config(format="mmrlhf", input=src, output=tmp_path / "p.parquet", swap=True))
    summary_path = inspection.run(inspection.Config(input=out, summary=tmp_path / "s.json"))
    summary = json.loads(summary_path.read_text())
    assert summary["n_pairs"] == 4 and summary["by_label"] == {"1": 2, "2": 2}
    assert summary["by_category"] == {"mcq": 4} and summary["by_source"] == {"mmrlhf": 4}
    assert summary["chosen_chars"] == {"min": 11, "median": 11.0, "mean": 11.0, "max": 11}
    assert summary["rejected_chars"]["min"] == 3 and summary["rejected_chars"]["max"] == 5
    assert "category" in capsys.readouterr().out
    # break the image: --check-images lists it and exits 1
    (tmp_path / "mcq/1.png").write_bytes(b"garbage")
    code = main(["data", "inspect", str(out), "--check-images"])
    captured = capsys.readouterr()
    assert code == 1 and "image check: 4 problem(s)" in captured.out and "cannot be decoded" in captured.out
    assert "Traceback" not in captured.err
    write_png(tmp_path / "mcq/1.png")
    assert main(["data", "inspect", str(out), "--check-images"]) == 0


# every bad-record case through the CLI, in both modes
from test_readers import BAD_CASES, _make_bad_file  # noqa: E402


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_cli_bad_record_both_modes(tmp_path, capsys, case):
    content, field, reason = BAD_CASES[case]
    src = _make_bad_file(tmp_path, content)
    out = tmp_path / "o.parquet"
    args = ["data", "convert", "--format", "mmrlhf", "--input", str(src), "--output", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    where = f"{src}:3:" + (f" field '{field}'" if field else "")
    assert err.startswith(f"error: {where}") and reason in err and "Traceback" not in err
    assert not out.exists()
    assert main(args + ["--on-error", "skip"]) == 0
    [skipped] = read_rows(tmp_path / "o.skipped.jsonl")
    assert (skipped["file"], skipped["line"], skipped["field"]) == (str(src), 3, field) and reason in skipped["reason"]
    assert "skipped 1 records" in capsys.readouterr().out and len(read_pairs(out)) == 2


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_cli_file_level_errors_both_modes(tmp_path, capsys, mode):
    (tmp_path / "empty.jsonl").write_text("")
    code = main(["data", "convert", "--format", "mmrb", "--input", str(tmp_path / "empty.jsonl"),
                 "--output", str(tmp_path / "o.parquet"), "--on-error", mode])
    assert code == 1 and "file is empty" in capsys.readouterr().err
    src = write_jsonl(tmp_path / "mm.jsonl", [{"id": "a", "image": "i.png", "prompt": "Q", "chosen": "c",
                                              "rejected": "r"}])
    code = main(["data", "convert", "--format", "mmrb", "--input", str(src), "--output", str(tmp_path / "o.parquet"),
                 "--on-error", mode])
    err = capsys.readouterr().err
    assert code == 1 and "not a mmrb file: expected fields (ID, Text, Output1, Output2, Better)" in err
    assert "--format mmrlhf" in err and "Traceback" not in err
