"""`egt data inspect`: counts, label balance per source, image sizes from headers, lengths (chars, tokens),
duplicates, missing / unreadable images. Hand-made pairs and images (no external rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from egt.cli import main
from egt.core.records import ImageRef, PreferencePair, write_pairs
from egt.data import inspection


def _image(path: Path, size) -> ImageRef:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (size[0] % 256, 40, 90)).save(path)
    return ImageRef(path=str(path))


def _pairs_file(tmp_path: Path) -> Path:
    small, big = _image(tmp_path / "img/small.png", (16, 12)), _image(tmp_path / "img/big.png", (40, 30))
    # header intact, pixel data cut off: the size is readable, decoding fails
    data = (tmp_path / "img/big.png").read_bytes()
    (tmp_path / "img/cut.png").write_bytes(data[:len(data) // 2])
    cut = ImageRef(path=str(tmp_path / "img/cut.png"))
    gone = _image(tmp_path / "img/gone.png", (8, 8))
    (tmp_path / "img/gone.png").unlink()
    pairs = [
        PreferencePair("two", [small, big], "Which is bigger?", "The second.", "The first one, clearly.", 1, "a", "x"),
        PreferencePair("copy", [small, big], "Which is bigger?", "The second.", "The first one, clearly.", 1, "a", "x"),
        PreferencePair("same-prompt", [small, big], "Which is bigger?", "Neither.", "The second.", 2, "a", "x"),
        PreferencePair("text-only", [], "Is 7 prime?", "Yes.", "Yes.", 2, "b", "y"),
        PreferencePair("cut", [cut], "What is it?", "A square.", "A circle.", 1, "b", "y"),
        PreferencePair("gone", [gone], "What is it?", "A dot.", "A line.", 1, "b", "y"),
    ]
    return write_pairs(pairs, tmp_path / "pairs.parquet")


def test_inspect_reports_images_lengths_duplicates_and_problems(tmp_path, capsys):
    path = _pairs_file(tmp_path)
    out = inspection.run(inspection.Config(input=path, summary=tmp_path / "s.json", large_image_megapixels=0.001,
                                           progress=False))
    summary = json.loads(out.read_text())
    assert summary["by_source"] == {"a": 3, "b": 3}
    assert summary["label_by_source"] == {"a": {"1": 2, "2": 1}, "b": {"1": 2, "2": 1}}
    assert summary["images_per_pair"] == {"0": 1, "1": 2, "2": 3}
    images = summary["image_sizes"]
    # 8 references, 4 distinct files; 3 headers readable (small, big, cut), 1 missing
    assert (images["n_references"], images["n_distinct"], images["n_readable"]) == (8, 4, 3)
    assert images["width"]["min"] == 16 and images["width"]["max"] == 40 and images["height"]["median"] == 30
    assert images["megapixels"]["max"] == 0.0012 and images["n_large"] == 2        # big and cut: 40 x 30
    assert (images["smallest"], images["largest"]) == ("16x12", "40x30")
    assert [(p["id"], p["reason"]) for p in summary["unreadable_images"]] == [("gone", "image file not found")]
    assert summary["duplicates"] == {"exact_duplicate_pairs": 1, "prompts_in_several_pairs": 1,
                                     "pairs_sharing_a_prompt": 3, "largest_prompt_group": 3,
                                     "identical_responses": 1}
    assert summary["rejected_chars"]["max"] == len("The first one, clearly.")
    assert summary["question_chars"] == {"min": 11, "median": 13.5, "mean": 13.5, "max": 16}
    printed = capsys.readouterr().out
    for text in ("label balance", "images: 8 references, 4 distinct, 3 readable", "smallest 16x12, largest 40x30 (width x height); images above 0.001 MP: 2",
                 "exact duplicate pairs:        1", "missing or unreadable images: 1", "gone image 0"):
        assert text in printed, text


def test_check_images_decodes_and_exits_1(tmp_path, capsys):
    path = _pairs_file(tmp_path)
    assert main(["data", "inspect", str(path), "--progress", "false"]) == 0    # headers only: a report, exit 0
    code = main(["data", "inspect", str(path), "--check-images", "--progress", "false"])
    captured = capsys.readouterr()
    assert code == 1 and "image check: 2 problem(s)" in captured.out               # cut (undecodable) and gone
    assert "cut image 0" in captured.out and "Traceback" not in captured.err


def test_swapped_copies_are_not_duplicates(tmp_path):
    pair = PreferencePair("p", [], "Q?", "a", "b", 1, "s")
    path = write_pairs([pair, pair.swapped()], tmp_path / "p.jsonl")
    summary = inspection.summarize(inspection.read_pairs(path))
    assert summary["duplicates"]["prompts_in_several_pairs"] == 0 and summary["by_label"] == {"1": 1, "2": 1}


def test_token_lengths_with_a_model_folder(tmp_path, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    path = _pairs_file(tmp_path)
    summary = json.loads(inspection.run(inspection.Config(input=path, tokenizer=tiny_model_dir, progress=False,
                                                          summary=tmp_path / "s.json")).read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chosen = [len(tokenizer(t, add_special_tokens=False)["input_ids"])
              for t in ("The second.", "The second.", "The second.", "Yes.", "A square.", "A dot.")]
    assert summary["chosen_tokens"]["max"] == max(chosen) and summary["chosen_tokens"]["min"] == min(chosen)
    assert summary["judge_prompt_tokens"]["min"] > summary["question_tokens"]["max"]
    assert "chosen (tokens)" in capsys.readouterr().out
    with pytest.raises(Exception, match="no tokenizer could be loaded"):
        inspection.run(inspection.Config(input=path, tokenizer=tmp_path / "img", progress=False))


def test_images_above_the_pixel_cap_are_counted_from_headers(tmp_path, capsys):
    """The cap every command applies (max_image_pixels): inspect counts what they would refuse, without
    decoding; --check-images lists them as problems unless downscale_images shrinks them."""
    path = _pairs_file(tmp_path)
    summary = inspection.summarize(inspection.read_pairs(path), limits=inspection.ImageLimits(max_pixels=500))
    assert summary["image_sizes"]["n_above_max_image_pixels"] == 2            # big and cut (40 x 30), not 16 x 12
    assert main(["data", "inspect", str(path), "--max-image-pixels", "500", "--progress", "false"]) == 0
    assert "images above max_image_pixels=500: 2 (refused by every command)" in capsys.readouterr().out
    assert main(["data", "inspect", str(path), "--check-images", "--max-image-pixels", "500", "--progress",
                 "false"]) == 1
    assert "image check: 5 problem(s)" in capsys.readouterr().out   # big (above the cap) in 3 pairs, cut, gone
    assert main(["data", "inspect", str(path), "--check-images", "--max-image-pixels", "500",
                 "--downscale-images", "--progress", "false"]) == 1
    assert "image check: 2 problem(s)" in capsys.readouterr().out             # big is shrunk: cut and gone remain
