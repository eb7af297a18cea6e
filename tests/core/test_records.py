"""The record type and its files: round trips, validation, errors with file:line."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from egt.core.errors import DataError
from egt.core.records import ImageRef, PreferencePair, read_pairs, read_rows, write_pairs, write_rows


def png(color=(1, 2, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), color).save(buf, "PNG")
    return buf.getvalue()


def make_pair(i=0, **kw) -> PreferencePair:
    fields = dict(id=f"p{i}", images=[ImageRef(data=png())], question="Q?", response_1="a", response_2="b",
                  label=2, source="synth", category="count", meta={"difficulty": 0.5, "scene": {"n": 3}})
    fields.update(kw)
    return PreferencePair(**fields)


@pytest.mark.parametrize("name", ["pairs.parquet", "pairs.jsonl"])
def test_round_trip_with_extra_columns(tmp_path, name):
    img = tmp_path / "img/x.png"
    img.parent.mkdir()
    img.write_bytes(png((9, 9, 9)))
    pairs = [make_pair(0, extra={"trace": "<think>t</think><answer>2</answer>", "attempts": 2}),
             make_pair(1, images=[ImageRef(path="img/x.png")], label=1, extra={"trace": "x", "attempts": 1})]
    back = read_pairs(write_pairs(pairs, tmp_path / name))
    assert [(p.id, p.label, p.meta, p.extra) for p in back] == [(p.id, p.label, p.meta, p.extra) for p in pairs]
    assert back[0].images[0].data == png()
    # relative paths resolve against the pairs file's folder
    assert back[1].images[0].path == str(img.resolve())
    assert back[1].open_images()[0].getpixel((0, 0)) == (9, 9, 9)


def test_chosen_rejected_and_swapped():
    pair = make_pair(label=2)
    assert (pair.chosen, pair.rejected) == ("b", "a")
    swapped = pair.swapped()
    assert (swapped.id, swapped.response_1, swapped.label, swapped.chosen) == ("p0::swap", "b", 1, "b")
    assert swapped.meta["swapped_from"] == "p0" and "swapped_from" not in pair.meta


def test_swapped_synthetic_pair_keeps_its_truth_and_the_oracle_follows(synth_pairs_list):
    """meta.true_label names a position, so the swapped copy's truth flips with its label; the
    oracle teacher then writes a trace for the order the prompt shows (it reads true_label)."""
    from egt.core.prompts import parse_verdict
    from egt.data.synth import oracle_trace

    for pair in synth_pairs_list[:6]:
        swapped = pair.swapped()
        assert swapped.meta["true_label"] == 3 - pair.meta["true_label"]
        assert swapped.meta["noisy"] == pair.meta["noisy"]
        assert swapped.chosen == pair.chosen  # the same response is preferred, only its position moved
        assert parse_verdict(oracle_trace(swapped)).verdict == swapped.meta["true_label"]
        correct = swapped.response_1 if swapped.meta["true_label"] == 1 else swapped.response_2
        assert pair.meta["scene"]["claim"] in correct


@pytest.mark.parametrize("change, field, reason", [
    ({"id": ""}, "id", "non-empty"),
    ({"response_1": "  "}, "response_1", "empty"),
    ({"response_2": 5}, "response_2", "must be a string"),
    ({"label": 3}, "label", "1 or 2"),
    ({"label": True}, "label", "1 or 2"),
    ({"meta": []}, "meta", "object"),
])
def test_validate_errors(change, field, reason):
    with pytest.raises(DataError) as err:
        make_pair(**change).validate("f.jsonl", 7)
    assert (err.value.field, err.value.line) == (field, 7) and reason in err.value.reason
    assert str(err.value).startswith("f.jsonl:7:")


def test_identical_responses_warn():
    assert "identical responses" in make_pair(response_2="a ").validate("f", 1)[0]


def test_read_errors_name_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: invalid JSON"):
        read_rows(path)
    path.write_bytes(b'{"id": "a"}\n"\xff"\n')
    with pytest.raises(DataError, match="p.jsonl:2: line is not valid UTF-8"):
        read_rows(path)
    row = make_pair().to_row()
    del row["label"]
    path.write_text(json.dumps({**row, "images": []}) + "\n")
    with pytest.raises(DataError, match="p.jsonl:1: field 'label' missing required field"):
        read_pairs(path)
    with pytest.raises(DataError, match="file not found"):
        read_rows(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_rows(tmp_path / "bad.parquet")


def test_image_ref_errors(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        ImageRef(path=str(tmp_path / "none.png")).open()
    with pytest.raises(DataError, match="cannot be decoded"):
        ImageRef(data=b"garbage").open()
    assert ImageRef(data=png()).open().mode == "RGB"


def test_write_rows_is_atomic_and_plain(tmp_path):
    rows = [{"a": 1, "meta": {"k": [1, 2]}}, {"a": 2, "meta": {}}]
    for name in ("r.parquet", "r.jsonl"):
        assert read_rows(write_rows(rows, tmp_path / name)) == rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_extra_column_clash():
    with pytest.raises(ValueError, match="clashes"):
        make_pair(extra={"label": 1}).to_row()


def test_parquet_keeps_columns_missing_from_the_first_row(tmp_path):
    rows = [{"a": 1}, {"a": 2, "b": "x"}]
    assert read_rows(write_rows(rows, tmp_path / "r.parquet")) == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_read_pairs_error_line_counts_blank_lines(tmp_path):
    good = json.dumps({**make_pair().to_row(), "images": []})
    bad = json.dumps({**make_pair(1).to_row(), "images": [], "label": 5})
    path = tmp_path / "p.jsonl"
    path.write_text(f"{good}\n\n{bad}\n")
    with pytest.raises(DataError, match=r"p.jsonl:3: field 'label'"):
        read_pairs(path)
    (tmp_path / "p.parquet").write_bytes(b"")
    write_rows([{**make_pair().to_row(), "images": []}, {**make_pair(1).to_row(), "images": [], "label": 5}],
               tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p.parquet:1: field 'label'"):  # 0-based Parquet row index
        read_pairs(tmp_path / "p.parquet")


# ---------------------------------------------------------------- image root

@pytest.mark.parametrize("path, ok", [("a/b.png", True), ("a/../b.png", True), ("../b.png", False),
                                      ("a/../../b.png", False), ("/root/data/x.png", True),
                                      ("/root/datax/y.png", False), ("/etc/passwd", False), ("~/x.png", True)])
def test_resolve_image_path_stays_inside_the_root(path, ok):
    from egt.core.records import ImagePathRefused, resolve_image_path

    if ok:
        assert resolve_image_path(path, "/root/data").startswith("/root/data/")
    else:
        with pytest.raises(ImagePathRefused):
            resolve_image_path(path, "/root/data")
        assert resolve_image_path(path, "/root/data", allow_absolute=True) if path.startswith("/") else True
    assert resolve_image_path("/srv/imgs/x.png", "/root/data", recorded_root="/srv/imgs") == "/srv/imgs/x.png"


def test_refused_paths_fail_when_opened_and_say_nothing_about_existence(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.png").write_bytes(png())
    rows = [{"id": f"p{i}", "images": [{"path": p}], "question": "Q", "response_1": "a", "response_2": "b",
             "label": 1} for i, p in enumerate(["../secret.png", "../missing.png", str(tmp_path / "secret.png"),
                                                str(tmp_path / "missing.png")])]
    path = data / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_pairs(path)        # reading is fine: only opening the image is refused
    messages = []
    for pair in pairs:
        with pytest.raises(DataError) as err:
            pair.open_images()
        with pytest.raises(DataError):
            pair.check_images()
        messages.append(str(err.value).split(": field ", 1)[1].replace("secret", "X").replace("missing", "X"))
    assert messages[0] == messages[1] and messages[2] == messages[3]      # exists or not: the same words
    assert messages[0].startswith("'images' image path '../X.png' leaves the image root")
    assert "is outside the image root" in messages[2]
    allowed = read_pairs(path, allow_absolute_paths=True)
    assert allowed[2].open_images()[0].size == (5, 4)
    with pytest.raises(DataError, match="leaves the image root"):    # `..` stays refused
        allowed[0].open_images()
    assert read_pairs(path, image_root=tmp_path)[2].open_images()[0].size == (5, 4)   # inside that root


def test_parquet_files_record_the_folder_of_their_images(tmp_path):
    from egt.core.records import recorded_image_root

    images = tmp_path / "data" / "pool_images"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(png())
    source = write_pairs([make_pair(0, images=[ImageRef(path="pool_images/a.png")])], tmp_path / "data" / "pool.parquet")
    assert recorded_image_root(source) is None                        # relative paths: nothing to record
    derived = write_pairs(read_pairs(source), tmp_path / "runs" / "score" / "scores.parquet")
    assert recorded_image_root(derived) == str(images)
    assert read_pairs(derived)[0].open_images()[0].size == (5, 4)     # read from another folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(DataError, match="is outside the image root"):  # an explicit root replaces the record
        read_pairs(derived, image_root=elsewhere)[0].open_images()
    jsonl = write_pairs(read_pairs(source), tmp_path / "runs" / "x.jsonl")
    with pytest.raises(DataError, match="is outside the image root"):  # JSONL records nothing
        read_pairs(jsonl)[0].open_images()
    assert read_pairs(jsonl, image_root=tmp_path / "data")[0].open_images()[0].size == (5, 4)


def test_symlinks_out_of_the_root_are_refused_without_saying_if_the_target_exists(tmp_path):
    """A link inside the root that points out of it reads what an absolute path may not: refused like one
    (same words whether the target exists), allowed with allow_absolute_paths; links inside the root, and a
    root reached through a link, are fine."""
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "in.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png((7, 7, 7)))
    (data / "img" / "out.png").symlink_to(tmp_path / "secret.png")
    (data / "img" / "dangling.png").symlink_to(tmp_path / "missing.png")
    (data / "img" / "alias.png").symlink_to(data / "img" / "in.png")
    (data / "outdir").symlink_to(tmp_path)                                 # a linked folder out of the root
    (data / "zero.png").symlink_to("/dev/zero")
    names = ["img/out.png", "img/dangling.png", "outdir/secret.png", "outdir/missing.png", "zero.png",
             "img/alias.png", str(data / "img" / "out.png")]
    rows = [{"id": f"p{i}", "images": [{"path": p}], "question": "Q", "response_1": "a", "response_2": "b",
             "label": 1} for i, p in enumerate(names)]
    path = data / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_pairs(path)
    messages = []
    for pair in pairs[:5] + pairs[6:]:
        with pytest.raises(DataError, match="leads out of the image root .* through a symbolic link") as err:
            pair.open_images()
        messages.append(err.value.reason.split("'")[2])
    assert len(set(messages)) == 1                                          # exists or not: the same words
    assert pairs[5].open_images()[0].size == (5, 4)                         # a link inside the root
    allowed = read_pairs(path, allow_absolute_paths=True)
    assert allowed[0].open_images()[0].getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(DataError, match="not a regular file"):             # allowed, but never read
        allowed[4].open_images()
    linked_root = tmp_path / "link_to_data"
    linked_root.symlink_to(data)
    assert read_pairs(linked_root / "pairs.jsonl")[5].open_images()[0].size == (5, 4)
    assert read_pairs(path, image_root=tmp_path)[6].open_images()[0].size == (5, 4)  # inside that root
