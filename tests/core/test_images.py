"""egt.core.images: the pixel count is checked from the header before decoding; bombs are refused naming the row,
or shrunk where asked; only regular files are read; every command takes the same two config keys."""

from __future__ import annotations

import io
import os

import pytest
from helpers import bomb_png
from PIL import Image

from egt.core.errors import DataError
from egt.core.images import (
    DECODE_CEILING_PIXELS,
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageLimits,
    ImageOptions,
    check_image,
    encoded_image,
    fitted_size,
    image_size,
    open_image,
    read_image_bytes,
)
from egt.core.records import ImageRef, PreferencePair, read_pairs, write_pairs


def encoded(size=(40, 30), fmt="PNG", color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def test_a_bomb_is_refused_from_its_header_naming_the_row_and_the_image(tmp_path):
    """13,000 x 13,000 one-bit: 169 M pixels decoded from a ~20 KB file. Refused before any pixel is decoded."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(13_000, 13_000))
    assert path.stat().st_size < 100_000 and image_size(path) == (13_000, 13_000)
    with pytest.raises(DataError) as err:
        open_image(path, where=("pairs.parquet", 7))
    assert (err.value.file, err.value.line, err.value.field) == ("pairs.parquet", 7, "images")
    assert str(path) in err.value.reason and "13000 x 13000 = 169,000,000 pixels" in err.value.reason
    assert "max_image_pixels=67,108,864" in err.value.reason and "downscale_images=true" in err.value.reason
    with pytest.raises(DataError, match="169,000,000 pixels"):
        check_image(path, where=("pairs.parquet", 7))
    # beyond PIL's own limit Image.open raises DecompressionBombError: the same kind of error, naming the row
    with pytest.raises(DataError, match=r"pairs.parquet:3: field 'images' image <embedded bytes>: more than "
                                        r"178,956,970 pixels, PIL's decompression-bomb limit"):
        open_image(bomb_png(20_000, 20_000), where=("pairs.parquet", 3), downscale=True)


def test_downscale_shrinks_to_the_cap_keeping_the_aspect_ratio():
    for fmt in ("PNG", "JPEG", "WEBP"):   # JPEG decodes at reduced scale (draft), the others in full
        image = open_image(encoded((400, 300), fmt), max_pixels=10_000, downscale=True)
        assert image.mode == "RGB" and image.size[0] * image.size[1] <= 10_000
        assert image.size == fitted_size(400, 300, 10_000) == (115, 86)
        assert image.getpixel((50, 40))[0] > 150   # still the red image
    bomb = open_image(bomb_png(6_000, 3_000), max_pixels=20_000, downscale=True)
    assert bomb.size == (200, 100) and bomb.getpixel((0, 0)) == (0, 0, 0)
    assert open_image(encoded((40, 30)), max_pixels=1200).size == (40, 30)     # at the cap: as it is
    with pytest.raises(DataError, match="40 x 30 = 1,200 pixels, above max_image_pixels=1,199"):
        open_image(encoded((40, 30)), max_pixels=1199)
    assert fitted_size(1, 10_000, 100) == (1, 100)


def test_only_regular_files_are_read(tmp_path):
    """A link to /dev/zero would be read forever and a FIFO would block: both are refused before they are opened
    (each read runs in a thread, so that a regression fails here instead of hanging the suite)."""
    import threading

    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for path in (zero, fifo, tmp_path):
        for read in (open_image, image_size, read_image_bytes):
            errors = []

            def attempt():
                try:
                    read(path, where=("p.jsonl", 2))
                except DataError as exc:
                    errors.append(exc)
            worker = threading.Thread(target=attempt, daemon=True)
            worker.start()
            worker.join(10)
            assert not worker.is_alive(), f"{read.__name__}({path.name}) did not return"
            assert errors and "not a regular file" in str(errors[0])
    with pytest.raises(DataError, match=r"p.jsonl:2: field 'images' image .*missing.png: image file not found"):
        open_image(tmp_path / "missing.png", where=("p.jsonl", 2))
    with pytest.raises(DataError, match="cannot be decoded"):
        open_image(b"not an image")
    truncated = encoded((64, 64), "PNG", (1, 2, 3))[:-40]
    with pytest.raises(DataError, match="cannot be decoded"):
        open_image(truncated + b"\0" * 10)


def test_encoded_image_keeps_web_formats_and_shrinks_bombs(tmp_path):
    png = encoded((40, 30))
    assert encoded_image(png) == (png, "image/png")
    data, mime = encoded_image(encoded((40, 30), "BMP"))
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == (40, 30)
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(8_000, 4_000))
    with pytest.raises(DataError, match="32,000,000 pixels, above max_image_pixels=1,000,000"):
        encoded_image(path, max_pixels=1_000_000)
    data, mime = encoded_image(path, max_pixels=1_000_000, downscale=True)
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == fitted_size(8_000, 4_000, 1_000_000)


def test_image_refs_carry_their_row_and_limits_but_compare_by_content(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bomb.png").write_bytes(bomb_png(3_000, 3_000))
    (tmp_path / "img" / "ok.png").write_bytes(encoded())
    pairs = [PreferencePair(f"p{i}", [ImageRef(path=f"img/{name}")], "Q", "a", "b", 1)
             for i, name in enumerate(["ok.png", "bomb.png"])]
    path = write_pairs(pairs, tmp_path / "pairs.jsonl")
    small = ImageLimits(max_pixels=1_000_000)
    ok, bomb = read_pairs(path, limits=small)
    assert ok.images[0].where == (str(path), 1) and bomb.images[0].where == (str(path), 2)
    assert ok.open_images()[0].size == (40, 30)
    ok.check_images(sizes=True)
    with pytest.raises(DataError, match=r"pairs.jsonl:2: field 'images' image .*bomb.png: 3000 x 3000"):
        bomb.check_images(sizes=True)
    bomb.check_images()                                   # without sizes: only the root rule, nothing read
    with pytest.raises(DataError, match=r"pairs.jsonl:2: .*9,000,000 pixels"):
        bomb.open_images()
    shrunk = read_pairs(path, limits=ImageLimits(1_000_000, downscale=True))[1]
    assert shrunk.open_images()[0].size == (1000, 1000)
    assert shrunk.images[0] == bomb.images[0] == ImageRef(path=str(tmp_path / "img" / "bomb.png"))
    with pytest.raises(ValueError):
        ImageLimits(max_pixels=DECODE_CEILING_PIXELS + 1)


def test_parquet_bytes_column_bombs_name_their_row(tmp_path):
    pairs = [PreferencePair("p0", [ImageRef(data=encoded())], "Q", "a", "b", 1),
             PreferencePair("p1", [ImageRef(data=bomb_png(9_000, 9_000))], "Q", "a", "b", 2)]
    path = write_pairs(pairs, tmp_path / "pairs.parquet")
    ok, bomb = read_pairs(path)
    ok.open_images()
    with pytest.raises(DataError, match=r"pairs.parquet:1: field 'images' image <embedded bytes>: 9000 x 9000"):
        bomb.open_images()


def test_every_command_that_reads_images_takes_the_shared_keys():
    from egt.data import inspection
    from egt.judge import api, rerank, verdicts
    from egt.reporting import view
    from egt.stages import distill, evaluate, rl, score, sft

    for module in (score, evaluate, sft, rl, distill, verdicts, rerank, view, inspection, api):
        cfg = module.JudgeOptions if module is api else module.Config
        assert issubclass(cfg, ImageOptions), module.__name__
        assert cfg.model_fields["max_image_pixels"].default == DEFAULT_MAX_IMAGE_PIXELS
        assert cfg.model_fields["downscale_images"].default is False
    from egt.core.config import ConfigError, load_config

    assert load_config(view.Config, None, ["scores=s.parquet", "max_image_pixels=1000",
                                           "--downscale_images"]).image_limits == ImageLimits(1000, True)
    with pytest.raises(ConfigError, match="max_image_pixels"):
        load_config(view.Config, None, ["scores=s.parquet", "max_image_pixels=0"])


def test_a_bomb_is_one_line_naming_its_row_in_every_command(tmp_path, tiny_model_dir, capsys):
    """A 20,000 x 20,000 PNG (above PIL's own limit) in a Parquet bytes column: before, judge, eval and rerank
    stopped with "internal error: DecompressionBombError ... please report it", naming no file. Now every command
    that reads images stops before any work with one line naming the file and row (data inspect lists it)."""
    import json

    from egt.cli import main

    pairs = [PreferencePair(f"p{i}", [ImageRef(data=encoded())], "Q", "good", "bad", 1, extra={"trace": "t"})
             for i in range(2)]
    pairs[1].images = [ImageRef(data=bomb_png(20_000, 20_000))]
    data = write_pairs(pairs, tmp_path / "pairs.parquet")
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("".join(json.dumps({"id": p.id, "question": "Q", "candidates": ["a", "b"],
                                              "images": [{"bytes_base64": __import__("base64").b64encode(
                                                  p.images[0].data).decode()}]}) + "\n" for p in pairs))
    model, out = str(tiny_model_dir), str(tmp_path / "out")
    commands = {
        "score": ["score", f"model={model}", f"pairs={data}", f"output={out}/score"],
        "eval": ["eval", "--benchmark", "pairs", "--data", str(data), "--model", model, "--output", f"{out}/eval"],
        "sft": ["sft", f"traces={data}", f"model={model}", f"output={out}/sft"],
        "rl": ["rl", f"model={model}", f"train={data}", f"output={out}/rl", "num_generations=2",
               "per_device_train_batch_size=2"],
        "distill": ["distill", f"pairs={data}", f"output={out}/distill", "backend=openai",
                    "base_url=http://127.0.0.1:9/v1", "model=teacher"],
        "judge": ["judge", "--model", model, "--pairs", str(data), "--output", f"{out}/judge"],
        "rerank": ["rerank", "--model", model, "--candidates", str(candidates), "--output", f"{out}/rerank"],
        "data convert": ["data", "convert", "--format", "pairs", "--input", str(data), "--output", f"{out}/c.parquet"],
    }
    for name, args in commands.items():
        capsys.readouterr()
        assert main(args) == 1, name
        err = capsys.readouterr().err
        where = "candidates.jsonl:2" if name == "rerank" else "pairs.parquet:1"
        assert err.count("\n") == 1 and "internal error" not in err, (name, err)
        assert f"{where}: field " in err and "more than 178,956,970 pixels" in err, (name, err)
    assert main(["data", "inspect", str(data), "--check-images"]) == 1
    assert "p1 image 0: <embedded bytes>: more than 178,956,970 pixels" in capsys.readouterr().out
