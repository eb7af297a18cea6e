"""egt view: the page data (layout, colours, thumbnails, curation), its errors, and the page in real headless Chromium.

Browser tests need chromium, chromedriver and selenium. Outside CI they are skipped with the reason when
those are missing; with the environment variable CI set (as .ci/run sets it, after installing them) they
fail instead, so a CI machine never passes by skipping them. `EGT_VIEW_SCREENSHOT=path.png` also writes
the screenshot of `test_token_colours_answer_token_and_sentences` there (docs/view_screenshot.png).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egt.cli import main
from egt.core.errors import DataError, EgtError
from egt.core.records import PreferencePair, read_rows, write_rows
from egt.model.entropy import pair_entropies, response_entropies, token_layout
from egt.reporting.view import (
    COLOUR_STOPS,
    TOKENS_HOWTO,
    build_view_data,
    entropy_colour,
    nice_ceiling,
    read_view_data,
    render_html,
    view_link,
    write_view,
)

# Two hand-made judgements. Think text "The circle is blue. Response 1 says blue: yes." has two sentences;
# " Response" starts with the space that ends sentence 1, so sentence 2 starts at token 7 (" 1").
PIECES_1 = ["<think>", "The", " circle", " is", " blue", ".", " Response", " 1", " says", " blue", ":", " yes", ".",
            "</think>", "<answer>", "1", "</answer>"]
H_1 = [0.0, 0.05, 0.2, 0.01, 1.25, 0.0, 0.3, 0.02, 0.1, 0.6, 0.0, 2.5, 0.0, 0.0, 0.001, 0.693, 0.0]
PIECES_2 = ["<think>", "Response", " 2", " is", " right", "!", "</think>", "<answer>", "2", "</answer>"]
H_2 = [0.0, 0.4, 1.0, 0.05, 0.8, 0.0, 0.0, 0.0, 0.35, 0.0]
# A character outside the BMP (2 UTF-16 units in the page) and an empty piece (a byte-level token that ends inside a
# multi-byte character); pair v11's second judgement.
PIECES_3 = ["<think>", "A", " cat", " \U0001F431", "", "!", "</think>", "<answer>", "1", "</answer>"]
N_PAIRS, PAGE = 12, 5
CATEGORIES = ("colour", "count", "spatial")


def _scale(h, i):  # pair i's entropies: multiples of 0.001 nats, growing with i
    return [round(v * (0.5 + 0.1 * i), 3) for v in h]


def judgements_of(i):
    second = (PIECES_1, [round(v * (0.3 + 0.05 * i), 3) for v in H_1]) if i % 3 else (PIECES_2, _scale(H_2, i))
    if i == 11:
        second = (PIECES_3, _scale(H_2, i))
    return [(PIECES_1, _scale(H_1, i)), second]


def spans_of(pieces):
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return spans


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    """scores.parquet + tokens.parquet as `egt score dump_tokens=true` writes them, PNG images, a curate manifest."""
    root = tmp_path_factory.mktemp("view")
    images = root / "images"
    images.mkdir()
    rows, tokens = [], []
    for i in range(N_PAIRS):
        pair_id = f"v{i:02d}"
        if i == 9:  # a large image: downscaled to the thumbnail size
            Image.new("RGB", (400, 300), (30, 120, 200)).save(images / f"{pair_id}.png")
        elif i < 10:
            image = Image.new("RGB", (64, 64), (128, 128, 128))
            image.paste((20 * i, 200, 40), (8 + 3 * i, 10, 30 + 3 * i, 40))
            image.save(images / f"{pair_id}.png")
        else:  # v10 and v11: the same bytes, one thumbnail
            shutil.copy(images / "v00.png", images / f"{pair_id}.png")
        judged = judgements_of(i)
        responses = [response_entropies("".join(p), spans_of(p), h) for p, h in judged]
        label = 2 if i % 4 == 3 else 1
        meta = {"noisy": i in (3, 7), "true_label": 3 - label if i in (3, 7) else label, "note": "<b>not html</b>"}
        pair = PreferencePair(id=pair_id, images=[], question=f"What colour is shape {i}?", response_1="Blue.",
                              response_2="Red.", label=label, source="synth" if i < 10 else "other",
                              category=CATEGORIES[i % 3], meta=meta)
        row = pair.to_row()
        row["images"] = [{"path": str(images / f"{pair_id}.png"), "bytes": None}]
        row["completions"] = ["".join(p) for p, _ in judged]
        row.update(pair_entropies(responses, label))
        row.update(format_ok_rate=1.0, truncated=0)
        rows.append(row)
        tokens += [{"id": pair_id, "sample": k, "token_ids": list(range(len(p))), "tokens": p,
                    "token_entropies_nats": h} for k, (p, h) in enumerate(judged)]
    write_rows(rows, root / "scores.parquet")
    write_rows(tokens, root / "tokens.parquet")
    assert main(["curate", str(root / "scores.parquet"), "--strategy", "lowest", "--metric", "max", "--n", "5",
                 "--output", str(root / "max_low")]) == 0
    return root


@pytest.fixture(scope="module")
def view_file(fixture_dir):
    return write_view(fixture_dir / "scores.parquet", fixture_dir / "view.html",
                      manifests=[fixture_dir / "max_low" / "manifest.json"], page_size=PAGE, scale_max=2.0,
                      title="egt view — 12 hand-made pairs (tests/reporting/test_view.py)")


def u16(b64):
    return np.frombuffer(base64.b64decode(b64), dtype="<u2").tolist()


# ------------------------------------------------------------------ page data (no browser)

def test_packed_judgements_follow_the_scoring_layout(fixture_dir):
    data = build_view_data(fixture_dir / "scores.parquet", manifests=[fixture_dir / "max_low" / "manifest.json"])
    rows = read_rows(fixture_dir / "scores.parquet")
    assert data["tokens"]["judgements"] == 2 * N_PAIRS and data["tokens_note"] is None
    for i, row in enumerate(rows):
        for k, (pieces, h) in enumerate(judgements_of(i)):
            text, verdict, lens, ent, answer, starts, lo, hi, means, values = data["det"][i]["j"][k]
            assert text == row["completions"][k] and verdict == row["verdicts"][k]
            assert u16(lens) == [len(p.encode("utf-16-le")) // 2 for p in pieces]   # what JS strings count
            assert u16(ent) == [round(v * 1000) for v in h]
            layout = token_layout(text, spans_of(pieces))
            assert answer == layout.answer_token == len(pieces) - 2      # the digit after <answer>
            assert (lo, hi) == (min(layout.region), max(layout.region) + 1)
            scores = response_entropies(text, spans_of(pieces), h)
            assert values == pytest.approx([scores.answer_nats, scores.sentence_nats, scores.mean_token_nats,
                                            scores.max_token_nats], abs=1e-4)
            if pieces is PIECES_1:
                assert starts == [1, 7] and (lo, hi) == (1, 13)
                assert means == pytest.approx([np.mean(h[1:7]), np.mean(h[7:13])], abs=1e-4)
            else:
                assert starts == [1] and means == pytest.approx([np.mean(h[1:6])], abs=1e-4)
        # the judgements' values average to the pair's score columns
        per_judgement = np.array([j[9] for j in data["det"][i]["j"]], dtype=float)
        assert per_judgement[:, 3].mean() == pytest.approx(row["max_token_entropy_nats"], abs=1e-4)
    assert data["col"]["m"]["max"] == pytest.approx([r["max_token_entropy_nats"] for r in rows], abs=1e-4)
    manifest = json.loads((fixture_dir / "max_low" / "manifest.json").read_text())
    (m,) = data["manifests"]
    assert m["name"] == "max_low" and m["same_input"] and m["selected"] == 5
    assert [data["col"]["id"][i] for i in np.argsort(m["kept"]) if m["kept"][i] >= 0] == manifest["selected_ids"]
    assert data["col"]["noisy"] == [int(i in (3, 7)) for i in range(N_PAIRS)]
    assert data["col"]["idr"] == list(range(N_PAIRS))


def test_thumbnails_deduplicated_downscaled_and_missing_images_reported(fixture_dir, tmp_path, capsys):
    data = build_view_data(fixture_dir / "scores.parquet", thumb_px=48)
    assert data["col"]["img"][10] == data["col"]["img"][11] == data["col"]["img"][0]
    assert len(data["images"]) == 10                   # 12 pairs, v10 and v11 share v00's bytes
    big = data["images"][data["col"]["img"][9][0]]
    header, payload = big.split(",", 1)
    assert header.startswith("data:image/")
    from io import BytesIO
    assert Image.open(BytesIO(base64.b64decode(payload))).size == (48, 36)
    rows = read_rows(fixture_dir / "scores.parquet")
    rows[2]["images"] = [{"path": str(tmp_path / "gone.png"), "bytes": None}]
    write_rows(rows, tmp_path / "scores.parquet")
    data = build_view_data(tmp_path / "scores.parquet", tokens=fixture_dir / "tokens.parquet")
    assert data["missing_images"] == 1 and data["col"]["img"][2] == [f"{tmp_path / 'gone.png'}: image file not found"]
    assert "1 images cannot be shown" in capsys.readouterr().err


def test_entropy_colour_scale():
    assert entropy_colour(0.0, 2.0) == COLOUR_STOPS[0][1] == (255, 255, 255)
    assert entropy_colour(2.0, 2.0) == entropy_colour(7.0, 2.0) == COLOUR_STOPS[-1][1]
    assert entropy_colour(-1.0, 2.0) == (255, 255, 255) and entropy_colour(math.nan, 2.0) == (200, 200, 200)
    assert entropy_colour(0.25, 1.0) == COLOUR_STOPS[1][1]
    assert entropy_colour(0.125, 1.0) == (255, 246, 208)  # halfway between white and (255, 237, 160), rounded
    luminance = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in (entropy_colour(h, 2.0) for h in np.linspace(0, 2, 41))]
    assert all(a > b for a, b in zip(luminance, luminance[1:]))  # strictly darker as entropy rises
    assert [nice_ceiling(v) for v in (0.0, 0.3, 0.693, 1.0, 1.2, 2.2, 4.0, 30)] == [1.0, 0.5, 1.0, 1.0, 2.0, 2.5, 5.0, 50.0]


def test_view_link_quotes_ids():
    assert view_link("view.html", "a b/c#1&x", "max") == "view.html#id=a%20b%2Fc%231%26x&sort=max"
    assert view_link("../v.html", "p1") == "../v.html#id=p1"


def test_without_tokens_it_says_how_to_get_them(fixture_dir, tmp_path):
    shutil.copy(fixture_dir / "scores.parquet", tmp_path / "scores.parquet")
    out = write_view(tmp_path / "scores.parquet")
    assert out == tmp_path / "view.html"
    data = build_view_data(tmp_path / "scores.parquet")
    assert data["tokens"] is None and data["tokens_note"] == TOKENS_HOWTO and "dump_tokens=true" in TOKENS_HOWTO
    first = read_rows(tmp_path / "scores.parquet")[0]
    assert data["det"][0]["j"] == [[text, v] for text, v in zip(first["completions"], first["verdicts"])]
    assert read_view_data(out)["tokens_note"] == TOKENS_HOWTO
    plain = render_html(data, compress=False)                    # the data as plain JSON in the page
    assert "dump_tokens=true" in plain and "<b>not html</b>" not in plain and "\\u003cb>not html" in plain
    (tmp_path / "plain.html").write_text(plain)
    assert read_view_data(tmp_path / "plain.html") == read_view_data(out) == json.loads(json.dumps(data))


def test_errors_name_file_row_and_field(fixture_dir, tmp_path, capsys):
    tokens = read_rows(fixture_dir / "tokens.parquet")
    tokens[3]["tokens"] = tokens[3]["tokens"][:-1] + ["</answ>"]
    write_rows(tokens, tmp_path / "bad_tokens.parquet")
    with pytest.raises(DataError, match=r"bad_tokens.parquet:3: field 'tokens' pair 'v01' judgement 1: the tokens do not "
                                        r"spell that completion"):
        build_view_data(fixture_dir / "scores.parquet", tmp_path / "bad_tokens.parquet")
    tokens = read_rows(fixture_dir / "tokens.parquet")
    tokens[5]["token_entropies_nats"] = tokens[5]["token_entropies_nats"][:-1]
    write_rows(tokens, tmp_path / "short.parquet")
    with pytest.raises(DataError, match=r"short.parquet:5: field 'token_entropies_nats' expected one entropy per token"):
        build_view_data(fixture_dir / "scores.parquet", tmp_path / "short.parquet")
    write_rows(read_rows(fixture_dir / "tokens.parquet")[:3] + read_rows(fixture_dir / "tokens.parquet")[2:3],
               tmp_path / "twice.parquet")
    with pytest.raises(DataError, match=r"twice.parquet:3: field 'sample' pair 'v01' judgement 0 appears twice"):
        build_view_data(fixture_dir / "scores.parquet", tmp_path / "twice.parquet")
    write_rows([{"id": "v00"}], tmp_path / "cols.parquet")
    with pytest.raises(DataError, match=r"cols.parquet:0: field 'sample' missing column"):
        build_view_data(fixture_dir / "scores.parquet", tmp_path / "cols.parquet")
    (tmp_path / "m.json").write_text(json.dumps({"selected_ids": ["x1", "x2"]}))
    with pytest.raises(DataError, match=r"m.json: field 'selected_ids' none of its 2 ids is a pair of the score file"):
        build_view_data(fixture_dir / "scores.parquet", manifests=[tmp_path / "m.json"])
    (tmp_path / "m.json").write_text(json.dumps({"selected": []}))
    with pytest.raises(DataError, match="expected a list of pair ids"):
        build_view_data(fixture_dir / "scores.parquet", manifests=[tmp_path / "m.json"])
    write_rows([{"id": "a", "label": 1}], tmp_path / "pairs.parquet")
    code = main(["view", str(tmp_path / "pairs.parquet"), "--output", str(tmp_path / "x.html")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "pairs.parquet:0: field 'majority_verdict' missing column" in err
    assert not (tmp_path / "x.html").exists()


def test_cli_writes_the_page(fixture_dir, tmp_path, capsys):
    out = tmp_path / "page.html"
    code = main(["view", str(fixture_dir / "scores.parquet"), "--output", str(out), "--manifest",
                 str(fixture_dir / "max_low" / "manifest.json"), "page_size=7", "--title", "my <view>"])
    assert code == 0 and str(out) in capsys.readouterr().out
    html = out.read_text()
    assert "<title>my &lt;view&gt;</title>" in html and "http://" not in html and "https://" not in html
    data = read_view_data(out)
    assert data["page_size"] == 7 and len(data["manifests"]) == 1 and data["title"] == "my <view>"


def test_images_follow_the_image_root_rule_of_every_command(fixture_dir, tmp_path, capsys):
    """An image outside the root (absolute, `..`, a link out of it, /etc/passwd) is never embedded nor read, with
    the same words whether it exists; image_root lets it in; a decompression bomb
    is listed as too large (downscale_images shrinks it), never an internal error."""
    from helpers import bomb_png

    run = tmp_path / "run"
    run.mkdir()
    Image.new("RGB", (8, 8), (250, 1, 2)).save(tmp_path / "private.png")
    (run / "link.png").symlink_to(tmp_path / "private.png")
    (run / "bomb.png").write_bytes(bomb_png(13_000, 13_000))
    paths = [str(tmp_path / "private.png"), str(tmp_path / "missing.png"), "../private.png", "../missing.png",
             "/etc/passwd", "link.png", str(run / "bomb.png")]
    rows = read_rows(fixture_dir / "scores.parquet")[:len(paths)]
    for row, path in zip(rows, paths):
        row["images"] = [{"path": path, "bytes": None}]
    write_rows(rows, run / "scores.jsonl")                    # JSONL records no image root: the root is run/
    private = base64.b64encode((tmp_path / "private.png").read_bytes()).decode()
    data = build_view_data(run / "scores.jsonl")
    assert data["images"] == [] and not any(private in url for url in data["images"])
    shown = [images[0] for images in data["col"]["img"]]
    assert all(isinstance(text, str) for text in shown) and data["missing_images"] == len(paths)
    words = [text.split(": ", 1)[1].replace("private", "X").replace("missing", "X") for text in shown]
    assert words[0] == words[1] and "is outside the image root" in words[0]          # exists or not: same words
    assert words[2] == words[3] and "leaves the image root" in words[2]
    assert "is outside the image root" in words[4]
    assert "through a symbolic link" in words[5]
    assert "13000 x 13000 = 169,000,000 pixels, above max_image_pixels" in words[6]
    allowed = build_view_data(run / "scores.jsonl", image_root=tmp_path)
    assert any(private in url for url in allowed["images"])
    shrunk = build_view_data(run / "scores.jsonl", image_root=tmp_path,
                             limits=__import__("egt.core.images", fromlist=["x"]).ImageLimits(4_000_000, True))
    assert isinstance(shrunk["col"]["img"][6][0], int)        # the bomb, shrunk, then thumbnailed
    code = main(["view", str(run / "scores.jsonl"), "--output", str(run / "v.html"), "--image_root", str(tmp_path),
                 "--max_image_pixels", "1000000"])
    assert code == 0
    assert "169,000,000 pixels, above max_image_pixels=1,000,000" in read_view_data(run / "v.html")["col"]["img"][6][0]


# ------------------------------------------------------------------ the page in headless Chromium

@pytest.fixture(scope="module")
def browser():
    from egt.reporting.browser import browser_binaries, headless_chromium

    try:
        browser_binaries()
    except EgtError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set: browser tests must run, .ci/run installs chromium)")
        pytest.skip(str(exc))
    with headless_chromium(1400, 950) as driver:
        yield driver


def open_page(driver, path: Path, fragment: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    from egt.reporting.browser import console_errors

    driver.get("about:blank")
    console_errors(driver)  # clear the log
    driver.get(path.resolve().as_uri() + fragment)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    assert console_errors(driver) == []


def visible_ids(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#rows tbody tr')].map(r => r.dataset.id)")


def all_filtered_ids(driver) -> list[str]:
    """Every page of the current view, by clicking through the pager."""
    driver.find_element("id", "first").click()
    ids = visible_ids(driver)
    while driver.find_element("id", "next").is_enabled():
        driver.find_element("id", "next").click()
        ids += visible_ids(driver)
    return ids


def choose(driver, select_id: str, value: str):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def test_page_loads_sorts_filters_and_paginates(browser, view_file, fixture_dir):
    from egt.reporting.browser import console_errors

    open_page(browser, view_file)
    rows = read_rows(fixture_dir / "scores.parquet")
    by_max = sorted(rows, key=lambda r: (-r["max_token_entropy_nats"], r["id"]))
    assert visible_ids(browser) == [r["id"] for r in by_max[:PAGE]]          # default: max entropy, descending
    assert browser.find_element("id", "count").text == f"{N_PAIRS} of {N_PAIRS} pairs"
    assert all_filtered_ids(browser) == [r["id"] for r in by_max]            # pages of 5, 5, 2
    assert browser.find_element("id", "page").text == "page 3 of 3"
    browser.find_element("id", "dir").click()
    assert all_filtered_ids(browser) == [r["id"] for r in by_max][::-1]
    choose(browser, "sort", "answer")
    by_answer = sorted(rows, key=lambda r: (r["answer_entropy_nats"], r["id"]))
    assert all_filtered_ids(browser) == [r["id"] for r in by_answer]

    choose(browser, "f-cat", "1")                                            # categories sorted: colour, count, spatial
    assert set(all_filtered_ids(browser)) == {r["id"] for r in rows if r["category"] == "count"}
    assert browser.find_element("id", "count").text == f"4 of {N_PAIRS} pairs"
    choose(browser, "f-cat", "")
    manifest = json.loads((fixture_dir / "max_low" / "manifest.json").read_text())
    choose(browser, "f-man", "0:kept")
    assert sorted(all_filtered_ids(browser)) == sorted(manifest["selected_ids"])
    choose(browser, "f-man", "0:dropped")
    assert sorted(all_filtered_ids(browser)) == sorted(set(r["id"] for r in rows) - set(manifest["selected_ids"]))
    choose(browser, "f-man", "")
    choose(browser, "f-maj", "wrong")
    assert set(all_filtered_ids(browser)) == {r["id"] for r in rows if r["majority_verdict"] != r["label"]} != set()
    choose(browser, "f-maj", "")
    choose(browser, "f-noisy", "noisy")
    assert set(all_filtered_ids(browser)) == {"v03", "v07"}
    choose(browser, "f-noisy", "")
    browser.find_element("id", "search").send_keys("v1")
    assert set(all_filtered_ids(browser)) == {"v10", "v11"}
    assert console_errors(browser) == []


def test_token_colours_answer_token_and_sentences(browser, view_file, tmp_path):
    open_page(browser, view_file, "#id=v05&sort=max")
    assert browser.find_element("css selector", "#detail h2").text.startswith("v05")
    assert browser.find_element("css selector", "#rows tr.sel").get_attribute("data-id") == "v05"
    judgements = browser.find_elements("css selector", "#detail .judgement")
    assert len(judgements) == 2
    for judgement, (pieces, h) in zip(judgements, judgements_of(5)):
        tokens = browser.execute_script(
            "return [...arguments[0].querySelectorAll('.tok')].map(t => [t.textContent, t.dataset.h, "
            "getComputedStyle(t).backgroundColor, t.classList.contains('ans'), t.classList.contains('out')])", judgement)
        assert [t[0] for t in tokens] == pieces
        assert [float(t[1]) for t in tokens] == pytest.approx(h)
        assert [t[2] for t in tokens] == ["rgb({}, {}, {})".format(*entropy_colour(v, 2.0)) for v in h]
        assert [t[3] for t in tokens] == [k == len(pieces) - 2 for k in range(len(pieces))]
        region = range(1, pieces.index("</think>"))
        assert [t[4] for t in tokens] == [k not in region for k in range(len(pieces))]
        # colours follow the entropies: the page's colours are darker where the entropy is higher (below saturation)
        lum = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in
               (map(int, re.findall(r"\d+", t[2])) for t in tokens)]
        pairs = [(la, lb, b - a) for a, la in zip(h, lum) for b, lb in zip(h, lum) if a < b <= 2.0]
        assert pairs and all(la >= lb for la, lb, _ in pairs)
        assert all(la > lb for la, lb, gap in pairs if gap >= 0.02)
    open_page(browser, view_file, "#id=v11")
    texts = browser.execute_script("return [...document.querySelectorAll('#detail .judgement')].map(j => "
                                   "[...j.querySelectorAll('.tok')].map(t => t.textContent))")
    assert texts == [pieces for pieces, _ in judgements_of(11)]     # slices by UTF-16 length, empty token kept
    open_page(browser, view_file, "#id=v05&sort=max")
    judgements = browser.find_elements("css selector", "#detail .judgement")
    first_markers = browser.execute_script(
        "return [...arguments[0].querySelectorAll('.sb')].map(m => m.nextElementSibling.dataset.t)", judgements[0])
    assert first_markers == ["7"]                                            # sentence 2 starts at " 1"
    shot = tmp_path / "view.png"
    assert browser.save_screenshot(str(shot))
    image = Image.open(shot)
    assert image.format == "PNG" and image.size[0] >= 1000
    if os.environ.get("EGT_VIEW_SCREENSHOT"):  # the README's copy: 256 colours keep it small
        image.convert("RGB").quantize(colors=256).save(os.environ["EGT_VIEW_SCREENSHOT"], optimize=True)


def test_page_without_tokens_shows_pairs_and_the_howto(browser, fixture_dir, tmp_path):
    shutil.copy(fixture_dir / "scores.parquet", tmp_path / "scores.parquet")
    page = write_view(tmp_path / "scores.parquet", compress=False)   # also: the page reads plain JSON
    open_page(browser, page, "#id=v02")
    assert "dump_tokens=true" in browser.find_element("id", "note").text
    assert browser.find_elements("css selector", "#detail .tok") == []
    boxes = browser.find_elements("css selector", "#detail .judgement .box")
    assert [b.text for b in boxes] == read_rows(tmp_path / "scores.parquet")[2]["completions"]


def test_analyze_links_quintile_pairs_into_its_viewer(browser, fixture_dir, tmp_path):
    out = tmp_path / "analysis"
    assert main(["analyze", str(fixture_dir / "scores.parquet"), "--output", str(out), "--metrics", "max,vote",
                 "--view"]) == 0
    report = (out / "report.md").read_text()
    analysis = json.loads((out / "analysis.json").read_text())
    rows = read_rows(fixture_dir / "scores.parquet")
    by_max = sorted(rows, key=lambda r: (r["max_token_entropy_nats"], r["id"]))
    examples = analysis["view"]["examples"]["max"]
    # 12 distinct values in quintiles of rank quantiles: ranks 1-2, 3-5, 6-7, 8-10, 11-12
    assert [e["least"]["id"] for e in examples] == [by_max[k]["id"] for k in (0, 2, 5, 7, 10)]
    assert [e["most"]["id"] for e in examples] == [by_max[k]["id"] for k in (1, 4, 6, 9, 11)]
    link = f"[{by_max[-1]['id']}](view.html#id={by_max[-1]['id']}&sort=max)"
    assert link in report and "## Pairs to look at" in report
    open_page(browser, out / "view.html", f"#id={by_max[-1]['id']}&sort=max")
    assert browser.find_element("css selector", "#detail h2").text.startswith(by_max[-1]["id"])
    assert browser.find_element("id", "sort").get_attribute("value") == "max"


def test_analyze_without_view_is_unchanged(fixture_dir, tmp_path):
    assert main(["analyze", str(fixture_dir / "scores.parquet"), "--output", str(tmp_path / "a")]) == 0
    assert not (tmp_path / "a" / "view.html").exists()
    assert "view" not in json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert "view.html" not in (tmp_path / "a" / "report.md").read_text()


def test_ids_and_labels_with_bidi_controls_are_isolated(browser, fixture_dir, tmp_path):
    """A right-to-left override (U+202E) in an id, a category, a source or a manifest name must not reorder the
    text around it: each is shown isolated (<bdi>), so the badges after the id keep their order."""
    rows = read_rows(fixture_dir / "scores.parquet")
    evil = "v00\u202eevil"
    rows[0].update(id=evil, category="col\u202eour", source="syn\u202eth")
    write_rows(rows, tmp_path / "scores.parquet")
    tokens = [t for t in read_rows(fixture_dir / "tokens.parquet") if t["id"] != "v00"]
    write_rows(tokens, tmp_path / "tokens.parquet")
    page = write_view(tmp_path / "scores.parquet", tmp_path / "view.html")
    open_page(browser, page, "#" + __import__("urllib.parse", fromlist=["x"]).urlencode({"id": evil}))
    # the id's text, then the category badge, then the source badge: left to right
    lefts = browser.execute_script(
        "const h = document.querySelector('#detail h2'), r = document.createRange(); r.selectNodeContents(h.firstChild);"
        "return [r.getBoundingClientRect().left, ...[...h.querySelectorAll('span.badge')].map("
        "e => e.getBoundingClientRect().left)]")
    assert lefts[0] < lefts[1] < lefts[2], lefts
    open_page(browser, page, "#" + __import__("urllib.parse", fromlist=["x"]).urlencode({"id": "no\u202epe"}))
    note = browser.execute_script(
        "const p = document.querySelector('#detail p.note'), b = p.querySelector('bdi'), r = document.createRange();"
        "r.selectNodeContents(p.lastChild); return [b !== null, b && b.getBoundingClientRect().right,"
        " r.getBoundingClientRect().left, p.textContent]")
    assert note[0] and note[1] <= note[2] + 0.5 and note[3].endswith(" in this file."), note


def test_html_in_the_data_is_shown_as_text_and_never_runs(browser, fixture_dir, tmp_path):
    rows = read_rows(fixture_dir / "scores.parquet")
    attack = '<img src=x onerror="window.egtRan=1"><script>window.egtRan=1</script>'
    rows[0].update(id="v00" + attack, question=attack, category=attack, response_1=attack + "</script>")
    write_rows(rows, tmp_path / "scores.parquet")
    page = write_view(tmp_path / "scores.parquet", tmp_path / "view.html", title=attack)
    open_page(browser, page, "#" + __import__("urllib.parse", fromlist=["x"]).urlencode({"id": rows[0]["id"]}))
    assert browser.execute_script("return window.egtRan === undefined && document.querySelectorAll("
                                  "'#detail img[src=\"x\"], #rows img[src=\"x\"]').length === 0")
    assert attack in browser.find_element("css selector", "#detail h2").text
    assert browser.title == attack


@pytest.mark.slow
def test_reads_what_egt_score_dump_tokens_writes(tiny_model_dir, synth_pairs, tmp_path):
    from egt.stages.score import Config, run

    out = run(Config(model=str(tiny_model_dir), pairs=synth_pairs, output=tmp_path / "score", samples=2,
                     max_new_tokens=12, batch_size=8, shard_size=8, seed=1, dump_tokens=True, progress=False))
    data = build_view_data(out / "scores.parquet")
    rows = read_rows(out / "scores.parquet")
    assert data["tokens"]["judgements"] == 2 * len(rows) and 0 < len(data["images"]) <= len(rows)
    assert all(len(refs) == 1 and isinstance(refs[0], int) for refs in data["col"]["img"])
    for i, row in enumerate(rows):
        values = np.array([j[9] for j in data["det"][i]["j"]], dtype=float)
        for n, column in enumerate(["answer_entropy_nats", "sentence_entropy_nats", "mean_token_entropy_nats",
                                    "max_token_entropy_nats"]):
            defined = values[:, n][~np.isnan(values[:, n])]
            expected = row[column]
            assert (math.isnan(expected) and defined.size == 0) or defined.mean() == pytest.approx(expected, abs=2e-4)
        assert [j[1] for j in data["det"][i]["j"]] == row["verdicts"]
