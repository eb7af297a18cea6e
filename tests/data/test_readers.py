"""Readers: every format round-trips a hand-written fixture; bad input in both modes."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from egt.core.errors import DataError
from egt.data.readers import load_benchmark, mmrb_category, mmrlhf_category, vlrewardbench_category


def png_bytes(color=(255, 0, 0), size=(4, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def write_png(path: Path, color=(255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(color))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- categories

VLRB_PREFIXES = {"hallucination_pair": 448, "RLAIF": 233, "wildvision": 173, "mathverse": 167, "mmmu": 151,
                 "RLHF": 68, "jailbreak": 7, "LRVInstruction": 1, "politics": 1, "svit": 1}
VLRB_SPLIT = {"general": 183, "hallucination": 749, "reasoning": 318}


def test_vlrewardbench_category_split_matches_benchmark(tmp_path):
    ids = [f"{p}-{i}" for p, n in VLRB_PREFIXES.items() for i in range(n)]
    assert len(ids) == 1250
    assert Counter(map(vlrewardbench_category, ids)) == VLRB_SPLIT
    # the same through the reader (HF parquet form, one shared embedded image)
    image = {"bytes": png_bytes(), "path": None}
    rows = [{"id": i, "query": "Q", "response": ["a", "b"], "human_ranking": [0, 1], "image": image} for i in ids]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "vl.parquet")
    pairs = load_benchmark("vlrewardbench", tmp_path / "vl.parquet").pairs
    assert Counter(p.category for p in pairs) == VLRB_SPLIT


def test_mmrb_and_mmrlhf_categories():
    assert mmrb_category("pairs_12", "safety") == "safety/bias"
    assert mmrb_category("PAIRS_12", "safety") == "safety/bias"
    assert mmrb_category("hateful_3", "safety") == "safety/toxicity"
    assert mmrb_category("math_1", "reasoning") == "reasoning/math"
    assert mmrb_category("code_1", "reasoning") == "reasoning/coding"
    assert mmrb_category("vqa_1", "vqa") == "vqa"
    assert mmrb_category("pairs_occupation_12", "safety") == "safety/bias"
    assert mmrb_category("PAIRS-race-3", "safety") == "safety/bias"
    assert mmrb_category("hateful_memes_9", "safety") == "safety/toxicity"
    assert mmrb_category("mathvista_4", "reasoning") == "reasoning/math"
    assert mmrb_category("EMMA-Coding_2", "reasoning") == "reasoning/coding"
    assert mmrb_category("pairs_1", "knowledge") == "knowledge"
    assert mmrb_category("x", "safety/bias") == "safety/bias"
    assert mmrlhf_category("mcq/1.png") == "mcq"
    assert mmrlhf_category("data/short/long_x.png") == "long"  # first in mcq, long, short, ... order
    assert mmrlhf_category("video/clip") == "video"
    assert mmrlhf_category("elsewhere/x.png") == "other"


# ---------------------------------------------------------------- round trips

def test_vlrewardbench_hf_parquet_embedded_bytes(tmp_path):
    rows = [
        {"id": "RLAIF_1", "query": "What is it?", "response": ["a cat", "a dog"], "human_ranking": [1, 0],
         "image": {"bytes": png_bytes((0, 255, 0)), "path": "x.png"}, "query_source": "rlaif",
         "models": ["m1", "m2"], "judge": "human", "rationale": "r", "ground_truth": "a dog"},
        {"id": "mmmu_7", "query": "Q2", "response": ["right", "wrong"], "human_ranking": [0, 1],
         "image": {"bytes": png_bytes(), "path": None}, "query_source": "mmmu", "models": ["a", "b"],
         "judge": None, "rationale": None, "ground_truth": None},
    ]
    path = tmp_path / "vl.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = load_benchmark("vlrewardbench", path)
    a, b = result.pairs
    assert (a.id, a.label, a.category, a.source) == ("RLAIF_1", 2, "hallucination", "vlrewardbench")
    assert (a.response_1, a.response_2, a.chosen) == ("a cat", "a dog", "a dog")
    assert a.meta["query_source"] == "rlaif" and a.meta["models"] == ["m1", "m2"]
    assert a.images[0].open().getpixel((0, 0)) == (0, 255, 0)
    assert (b.label, b.category) == (1, "reasoning")
    assert result.skipped == [] and result.warnings == []


def test_vlrewardbench_r1_jsonl_relative_paths(tmp_path):
    write_png(tmp_path / "imgs/vl_reward/img/image_0.jpg")
    path = write_jsonl(tmp_path / "data.jsonl", [
        {"id": "wildvision_3", "prompt": "Q", "chosen": "good", "rejected": "bad",
         "image": "vl_reward/img/image_0.jpg", "chosen_reason": "", "rejected_reason": ""}])
    pair = load_benchmark("vlrewardbench", path, image_root=tmp_path / "imgs").pairs[0]
    assert (pair.label, pair.response_1, pair.category) == (1, "good", "general")
    assert pair.images[0].path == str((tmp_path / "imgs/vl_reward/img/image_0.jpg").resolve())
    assert pair.images[0].open().size == (4, 3)


def test_vlrewardbench_hf_from_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({
        "id": ["hallucination_pair-1"], "query": ["Q"], "response": [["x", "y"]], "human_ranking": [[0, 1]],
        "image": [{"bytes": png_bytes(), "path": None}]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    pair = load_benchmark("vlrewardbench", tmp_path / "ds").pairs[0]
    assert (pair.label, pair.category) == (1, "hallucination")
    assert pair.images[0].open().size == (4, 3)


def test_mmrb_json_list(tmp_path):
    write_png(tmp_path / "data/images/a.png")
    rows = [
        {"ID": "pairs_1", "Text": "Q1", "Image": "data/images/a.png", "Output1": "o1", "Output2": "o2",
         "Better": "Output2", "Meta": {"Category": "safety", "Source": "pairs"}},
        {"ID": "math_2", "Text": "Q2", "Image": "data/images/a.png", "Output1": "o1", "Output2": "o2",
         "Better": "Output1", "Meta": {"Category": "reasoning"}},
        {"ID": "vqa_3", "Text": "Q3", "Image": "data/images/a.png", "Output1": "o1", "Output2": "o2",
         "Better": "Output1", "Meta": {"Category": "general_correctness"}},
    ]
    (tmp_path / "all_data.json").write_text(json.dumps(rows, indent=1))
    pairs = load_benchmark("mmrb", tmp_path / "all_data.json").pairs
    assert [(p.label, p.category) for p in pairs] == [
        (2, "safety/bias"), (1, "reasoning/math"), (1, "general_correctness")]
    assert pairs[0].meta["mmrb_meta"]["Source"] == "pairs" and pairs[0].source == "mmrb"
    assert pairs[0].images[0].open().size == (4, 3)


def test_mmrlhf_groups_and_video_frames(tmp_path):
    write_png(tmp_path / "mcq/1.png")
    for i in range(12):
        write_png(tmp_path / f"video/clip/{i:03d}.png", color=(i, 0, 0))
    row = {"id": "g1", "image": "mcq/1.png", "prompt": "Q", "chosen": "c", "rejected": "r"}
    path = write_jsonl(tmp_path / "mm.jsonl", [
        row, {**row, "rejected": "r2"}, {"id": "v1", "video": "video/clip", "prompt": "Q", "chosen": "c",
                                          "rejected": "r"}])
    pairs = load_benchmark("mmrlhf", path).pairs
    assert [p.id for p in pairs] == ["g1#0", "g1#1", "v1#0"]
    assert [p.meta["group_id"] for p in pairs] == ["g1", "g1", "v1"]
    assert [p.meta["group_size"] for p in pairs] == [2, 2, 1]
    assert [p.category for p in pairs] == ["mcq", "mcq", "video"]
    assert all(p.label == 1 and p.chosen == "c" for p in pairs)
    frames = pairs[2].images
    assert len(frames) == 8 and frames[0].open().getpixel((0, 0)) == (0, 0, 0)
    assert frames[-1].open().getpixel((0, 0)) == (11, 0, 0)


R1_TEXT = ("You are a highly skilled and impartial evaluator ...\n\n###### **Input:**  \n"
           "###### [Question]:\n{q}  \n\n###### [Response 1]:\n{a}  \n\n###### [Response 2]:\n{b}  \n\n"
           "###### **Output Format (strictly follow):**  \n<think>Your detailed comparative analysis goes here"
           "</think><answer>1/2</answer>")


def r1_row(image_path: str, answer="<answer>2</answer>", q="Describe it.", a="A cake.\n\nTwo lines.",
           b="A print of a cake shop."):
    message = [{"role": "user", "content": [{"type": "text", "text": R1_TEXT.format(q=q, a=a, b=b)},
                                            {"type": "image", "image": image_path}]}]
    return {"message": json.dumps(message), "question": q, "answer": [answer]}


def test_r1reward_recovers_question_responses_label(tmp_path):
    img = write_png(tmp_path / "imgs/cake.png")
    path = tmp_path / "rl.json"
    path.write_text(json.dumps([r1_row(str(img)), r1_row(str(img), answer="<answer>1</answer>")]))
    a, b = load_benchmark("r1reward", path).pairs
    assert (a.question, a.response_1, a.response_2, a.label) == (
        "Describe it.", "A cake.\n\nTwo lines.", "A print of a cake shop.", 2)
    assert b.label == 1 and a.id == "r1reward-0" and b.id == "r1reward-1"
    assert a.images[0].open().size == (4, 3)


def test_pairs_with_column_map_and_label(tmp_path):
    write_png(tmp_path / "i.png")
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"uid": 5, "prompt": "Q", "win": "w", "lose": "l", "img": "i.png"}])
    pair = load_benchmark("pairs", path, column_map={"id": "uid", "question": "prompt", "chosen": "win",
                                                     "rejected": "lose", "image": "img"}).pairs[0]
    assert (pair.id, pair.response_1, pair.label, pair.source) == ("5", "w", 1, "pairs")
    path2 = write_jsonl(tmp_path / "q.jsonl", [
        {"id": "a", "question": "Q", "response_1": "x", "response_2": "y", "label": 2, "category": "c"}])
    pair2 = load_benchmark("pairs", path2).pairs[0]
    assert (pair2.label, pair2.chosen, pair2.category, pair2.images) == (2, "y", "c", [])


def test_pairs_reads_egt_written_file(tmp_path):
    from egt.core.records import ImageRef, PreferencePair, write_pairs

    pair = PreferencePair("x", [ImageRef(data=png_bytes())], "Q", "a", "b", 2, "synth", "cat", {"k": 1})
    for name in ("out.parquet", "out.jsonl"):
        back = load_benchmark("pairs", write_pairs([pair], tmp_path / name)).pairs[0]
        assert (back.label, back.meta, back.category, back.source) == (2, {"k": 1}, "cat", "synth")
        assert back.images[0].open().size == (4, 3)


# ---------------------------------------------------------------- bad input

def _ok_row(i, image="i.png"):
    return {"id": f"g{i}", "image": image, "prompt": "Q", "chosen": "c", "rejected": "r"}


BAD_CASES = {
    # name: (rows or raw bytes, field in the error, text in the reason)
    "invalid_json": (b'{"id": "x", \n', None, "invalid JSON"),
    "non_utf8": (b'{"id": "\xff\xfe"}\n', None, "not valid UTF-8"),
    "missing_field": ([{"id": "b", "image": "i.png", "prompt": "Q", "chosen": "c"}], "rejected", "missing"),
    "wrong_type": ([{**_ok_row(0), "id": "b", "chosen": 3}], "chosen", "expected str, got int"),
    "empty_response": ([{**_ok_row(0), "id": "b", "chosen": "  "}], "response_1", "empty"),
    "image_missing": ([_ok_row(0, "nope.png") | {"id": "b"}], "image", "not found"),
    "image_undecodable": ([_ok_row(0, "bad.png") | {"id": "b"}], "image", "cannot be decoded"),
    "image_escapes_root": ([_ok_row(0, "../outside.png") | {"id": "b"}], "image", "leaves the image root"),
}


def _make_bad_file(tmp_path: Path, content) -> Path:
    root = tmp_path / "root"
    write_png(root / "i.png")
    (root / "bad.png").write_bytes(b"not an image at all")
    write_png(tmp_path / "outside.png")
    path = root / "mm.jsonl"
    good = "".join(json.dumps(_ok_row(i)) + "\n" for i in range(2)).encode()
    bad = content if isinstance(content, bytes) else "".join(json.dumps(r) + "\n" for r in content).encode()
    path.write_bytes(good + bad)  # bad record on line 3
    return path


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_fail_and_skip(tmp_path, case):
    content, field, reason = BAD_CASES[case]
    path = _make_bad_file(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_benchmark("mmrlhf", path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 3, field)
    assert reason in err.value.reason and str(path) + ":3" in str(err.value)
    result = load_benchmark("mmrlhf", path, on_error="skip")
    assert len(result.pairs) == 2
    assert len(result.skipped) == 1
    assert result.skipped[0]["line"] == 3 and result.skipped[0]["field"] == field
    assert reason in result.skipped[0]["reason"]


def test_label_out_of_range_both_modes(tmp_path):
    rows = [{"ID": "a", "Text": "Q", "Image": "i.png", "Output1": "x", "Output2": "y", "Better": "Output1",
             "Meta": {"Category": "vqa"}},
            {"ID": "b", "Text": "Q", "Image": "i.png", "Output1": "x", "Output2": "y", "Better": "Output3",
             "Meta": {"Category": "vqa"}}]
    write_png(tmp_path / "i.png")
    (tmp_path / "all.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match="'Output1' or 'Output2'") as err:
        load_benchmark("mmrb", tmp_path / "all.json")
    assert (err.value.line, err.value.field) == (1, "Better")  # 0-based row index in a JSON array
    result = load_benchmark("mmrb", tmp_path / "all.json", on_error="skip")
    assert [p.id for p in result.pairs] == ["a"] and result.skipped[0]["field"] == "Better"
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "a", "question": "Q", "response_1": "x", "response_2": "y", "label": 3}])
    with pytest.raises(DataError, match="label 1 or 2"):
        load_benchmark("pairs", path)
    assert load_benchmark("pairs", path, on_error="skip").skipped[0]["field"] == "label"


def test_duplicate_id_both_modes(tmp_path):
    row = {"id": "a", "question": "Q", "response_1": "x", "response_2": "y", "label": 1}
    path = write_jsonl(tmp_path / "p.jsonl", [row, row])
    with pytest.raises(DataError, match="duplicate id 'a' \\(first at line 1\\)") as err:
        load_benchmark("pairs", path)
    assert err.value.line == 2
    result = load_benchmark("pairs", path, on_error="skip")
    assert len(result.pairs) == 1 and result.skipped[0]["line"] == 2


def test_identical_responses_warn_and_keep(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "a", "question": "Q", "response_1": "same", "response_2": "same ", "label": 1}])
    for mode in ("fail", "skip"):
        result = load_benchmark("pairs", path, on_error=mode)
        assert len(result.pairs) == 1 and "identical responses" in result.warnings[0]


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_empty_file_and_wrong_format_stop_in_both_modes(tmp_path, mode):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_benchmark("mmrlhf", tmp_path / "empty.jsonl", on_error=mode)
    rows = [{"ID": "a", "Text": "Q", "Image": "i.png", "Output1": "x", "Output2": "y", "Better": "Output1",
             "Meta": {"Category": "vqa"}}]
    (tmp_path / "all.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match="not a mmrlhf file: expected fields .*--format mmrb"):
        load_benchmark("mmrlhf", tmp_path / "all.json", on_error=mode)
    with pytest.raises(DataError, match="column-map"):
        load_benchmark("pairs", tmp_path / "all.json", on_error=mode)
    with pytest.raises(DataError, match="image root is not a folder"):
        load_benchmark("mmrb", tmp_path / "all.json", image_root=tmp_path / "nope", on_error=mode)
    with pytest.raises(DataError, match="input file not found"):
        load_benchmark("mmrb", tmp_path / "nope.json", on_error=mode)


def test_r1reward_bad_answer_and_prompt(tmp_path):
    img = write_png(tmp_path / "c.png")
    bad_prompt = r1_row(str(img))
    bad_prompt["message"] = json.dumps([{"role": "user", "content": [{"type": "text", "text": "no sections"}]}])
    path = write_jsonl(tmp_path / "rl.jsonl", [r1_row(str(img), answer="<answer>3</answer>"), bad_prompt])
    with pytest.raises(DataError, match="<answer>1</answer>") as err:
        load_benchmark("r1reward", path)
    assert (err.value.line, err.value.field) == (1, "answer")
    result = load_benchmark("r1reward", path, on_error="skip")
    assert [s["field"] for s in result.skipped] == ["answer", "message"] and not result.pairs


def test_pairs_without_id_column_and_column_map_checks(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "w", "rejected": "l"}] * 2)
    pairs = load_benchmark("pairs", path, column_map={"question": "prompt"}).pairs
    assert [p.id for p in pairs] == ["pairs-1", "pairs-2"] and pairs[0].chosen == "w"
    with pytest.raises(DataError, match="unknown field\\(s\\) \\['qestion'\\]"):
        load_benchmark("pairs", path, column_map={"qestion": "prompt"})
    with pytest.raises(DataError, match="only to --format pairs"):
        load_benchmark("mmrlhf", path, column_map={"question": "prompt"})
    with pytest.raises(DataError, match="field 'uid' missing"):  # a mapped id column must exist
        load_benchmark("pairs", path, column_map={"question": "prompt", "id": "uid"})


# ---------------------------------------------------------------- repeated ids

def _vlrb_hf_row(pair_id: str, responses=("x", "y"), ranking=(0, 1), image=None) -> dict:
    return {"id": pair_id, "query": "Q", "response": list(responses), "human_ranking": list(ranking),
            "image": {"bytes": image or png_bytes(), "path": None}}


def test_vlrewardbench_repeated_id_with_other_content_keeps_every_row(tmp_path):
    # The public release repeats ids such as 'mathverse_2279': same question, other responses and image.
    rows = [_vlrb_hf_row("mathverse_2279", ("a", "b")), _vlrb_hf_row("wildvision_1"),
            _vlrb_hf_row("mathverse_2279", ("c", "d"), (1, 0), png_bytes((0, 255, 0))),
            _vlrb_hf_row("mathverse_2279", ("e", "f"))]
    path = tmp_path / "vl.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = load_benchmark("vlrewardbench", path)
    assert [p.id for p in result.pairs] == ["mathverse_2279#0", "wildvision_1", "mathverse_2279#1",
                                            "mathverse_2279#2"]
    assert [p.meta["original_id"] for p in result.pairs] == ["mathverse_2279", "wildvision_1",
                                                             "mathverse_2279", "mathverse_2279"]
    assert [p.response_1 for p in result.pairs] == ["a", "x", "c", "e"] and result.pairs[2].label == 2
    assert all(p.category == "reasoning" for i, p in enumerate(result.pairs) if i != 1)
    repeats = [w for w in result.warnings if "shared by" in w]
    assert len(repeats) == 1 and "1 id(s) are shared by 3 rows" in repeats[0] and "rows 0, 2, 3" in repeats[0]
    assert result.skipped == []


def test_vlrewardbench_r1_jsonl_repeated_id_and_the_cli(tmp_path, capsys):
    from egt.cli import main
    from egt.core.records import read_pairs

    write_png(tmp_path / "a.png")
    row = {"id": "RLAIF_7", "prompt": "Q", "chosen": "good", "rejected": "bad", "image": "a.png"}
    path = write_jsonl(tmp_path / "vl.jsonl", [row, {**row, "rejected": "worse"}, {**row, "id": "RLHF_1"}])
    assert main(["data", "convert", "--format", "vlrewardbench", "--input", str(path),
                 "--output", str(tmp_path / "out.parquet")]) == 0
    out = capsys.readouterr().out
    assert "converted 3 pairs" in out and out.count("shared by 2 rows") == 1
    pairs = read_pairs(tmp_path / "out.parquet")
    assert [p.id for p in pairs] == ["RLAIF_7#0", "RLAIF_7#1", "RLHF_1"]
    assert [p.rejected for p in pairs] == ["bad", "worse", "bad"]


def test_identical_duplicate_rows_are_refused_or_skipped(tmp_path):
    write_png(tmp_path / "a.png")
    row = {"id": "RLAIF_7", "prompt": "Q", "chosen": "good", "rejected": "bad", "image": "a.png"}
    path = write_jsonl(tmp_path / "vl.jsonl", [row, {**row, "rejected": "worse"}, row])
    with pytest.raises(DataError, match="identical duplicate of line 1") as err:
        load_benchmark("vlrewardbench", path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 3, "id")
    assert str(err.value).startswith(f"{path}:3: field 'id'")
    result = load_benchmark("vlrewardbench", path, on_error="skip")
    assert [p.id for p in result.pairs] == ["RLAIF_7#0", "RLAIF_7#1"]
    assert [(s["line"], s["field"]) for s in result.skipped] == [(3, "id")]
    assert "identical duplicate of line 1" in result.skipped[0]["reason"]


def test_other_readers_keep_rows_that_share_an_id(tmp_path):
    write_png(tmp_path / "i.png")
    mmrb = [{"ID": "vqa_3", "Text": "Q", "Image": "i.png", "Output1": "o1", "Output2": "o2", "Better": "Output1",
             "Meta": {"Category": "general_correctness"}}]
    mmrb.append({**mmrb[0], "Output2": "o3"})
    (tmp_path / "all.json").write_text(json.dumps(mmrb))
    pairs = load_benchmark("mmrb", tmp_path / "all.json").pairs
    assert [(p.id, p.meta["original_id"]) for p in pairs] == [("vqa_3#0", "vqa_3"), ("vqa_3#1", "vqa_3")]
    img = write_png(tmp_path / "imgs/cake.png")
    r1 = [{**r1_row(str(img)), "id": 9}, {**r1_row(str(img), answer="<answer>1</answer>"), "id": 9}]
    (tmp_path / "rl.json").write_text(json.dumps(r1))
    assert [p.id for p in load_benchmark("r1reward", tmp_path / "rl.json").pairs] == ["9#0", "9#1"]
    generic = write_jsonl(tmp_path / "p.jsonl", [
        {"uid": "a", "question": "Q", "chosen": "x", "rejected": "y"},
        {"uid": "a", "question": "Q", "chosen": "x", "rejected": "z"}])
    pairs = load_benchmark("pairs", generic, column_map={"id": "uid"}).pairs
    assert [(p.id, p.meta["original_id"]) for p in pairs] == [("a#0", "a"), ("a#1", "a")]
