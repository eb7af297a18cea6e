"""Multi-image and text-only pairs through every stage on the tiny Qwen2-VL judge.

egt supports, in every stage and mixed in one file: pairs with several images (kept in list order: one image
slot per image in the judge prompt, first to last, and every image sent to a teacher), pairs with one image
(given as a path or a one-element list: the same pair), and text-only pairs (no image, no image slot).

`test_two_image_pairs_through_every_stage_command` runs every stage command (convert, distill against a
fake teacher on loopback, sft, score, curate, rl, eval, judge) on a file of two 2-image pairs, a one-image
pair and a text-only pair: about 3 s once the tiny judge is built (one run, machine C, unloaded), so it stays
in `make test` (slow). Around it,
checks that the chain does not pin down: an image path vs a one-element list vs none, the teacher request's
images in order, one SFT batch and one GRPO generation that mix all three kinds, the Judge API's inputs.
All data here is hand-made (tiny PNGs); no external rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import FakeOpenAIServer, chat_completion
from PIL import Image

from egt.cli import main
from egt.core import prompts
from egt.core.records import read_pairs, read_rows
from egt.data import convert

KEY_ENV = "EGT_TEST_MULTI_IMAGE_KEY"


def _picture(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (28 + 4 * seed, 20), (40 * seed % 256, 90, 200 - 30 * seed % 200))
    img.putpixel((seed, seed), (255, 255, 255))
    img.save(path)
    return path.name


def pairs_file(root: Path, kinds: tuple[str, ...] = ("two", "two", "two", "two")) -> Path:
    """Convert hand-made rows to a pairs file: `two` = a list of 2 images, `list1` = a one-element list,
    `path` = a single path, `none` = text-only. Labels alternate 1, 2."""
    rows = []
    for i, kind in enumerate(kinds):
        a, b = _picture(root / f"img/{i}a.png", 2 * i + 1), _picture(root / f"img/{i}b.png", 2 * i + 2)
        images = {"two": [f"img/{a}", f"img/{b}"], "list1": [f"img/{a}"], "path": f"img/{a}", "none": None}[kind]
        row = {"id": f"{kind}-{i}", "question": f"Which picture is wider? q{i}", "response_1": f"The first one {i}.",
               "response_2": f"The second one {i}.", "label": 1 + i % 2}
        if images is not None:
            row["images"] = images
        rows.append(row)
    raw = root / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return convert.run(convert.Config(format="pairs", input=raw, output=root / "pairs.parquet"))


def _index(prompt: str) -> str:
    """The pair index written into the question (`... wider? q<i>`)."""
    return re.search(r"wider\? q(\d+)", prompt).group(1)


def _teacher(requests: list):
    def respond(method, path, headers, body):
        content = body["messages"][-1]["content"]
        requests.append(content)
        text = next(part["text"] for part in content if part["type"] == "text")
        label = 1 + int(_index(text)) % 2    # the teacher agrees with the label (the fidelity filter keeps it)
        return 200, chat_completion(prompts.format_judgement(f"Picture {label} is wider.", label), body["model"])
    return FakeOpenAIServer(respond)


# ---------------------------------------------------------------- fast: one check per stage

def test_images_as_a_list_a_path_or_none(tmp_path):
    pairs = read_pairs(pairs_file(tmp_path, ("two", "list1", "path", "none")))
    assert [len(p.images) for p in pairs] == [2, 1, 1, 0]
    assert [Path(r.path).name for r in pairs[0].images] == ["0a.png", "0b.png"]        # list order kept
    assert pairs[1].images[0].open().size == (28 + 4 * 3, 20) and pairs[2].images[0].open().size == (28 + 4 * 5, 20)
    slots = [sum(part["type"] == "image" for part in prompts.judge_messages("q", "a", "b", len(p.images))[0]["content"])
             for p in pairs]
    assert slots == [2, 1, 1, 0]


def test_distill_sends_every_image_to_the_teacher_in_order(tmp_path, monkeypatch):
    from egt.stages import distill

    path = pairs_file(tmp_path, ("two", "path", "none"))
    monkeypatch.setenv(KEY_ENV, "k")
    requests: list = []
    with _teacher(requests) as server:
        distill.run(distill.Config(pairs=path, output=tmp_path / "distill", backend="openai", base_url=server.base_url,
                                   model="t", api_key_env=KEY_ENV, max_attempts=1, concurrency=1, progress=False))
    sent = {_index(next(p["text"] for p in c if p["type"] == "text")):
            [p["image_url"]["url"] for p in c if p["type"] == "image_url"] for c in requests}
    from egt.stages.teacher import encode_image

    cfg = distill.Config(pairs=path, output=tmp_path / "unused", backend="openai", model="t")
    pairs = read_pairs(path)
    for i, pair in enumerate(pairs):
        expected = [encode_image(ref, cfg.teacher_max_image_side, cfg.teacher_max_image_pixels)[0] for ref in pair.images]
        assert sent[str(i)] == expected     # all of them, in order
    traces = read_pairs(tmp_path / "distill/traces.parquet")
    assert [len(p.images) for p in traces] == [2, 1, 0]


@pytest.mark.slow
def test_sft_batch_mixes_two_images_one_image_and_text_only(tmp_path, tiny_model_dir):
    import torch

    from egt.model.loading import load_judge
    from egt.stages.sft import collate_examples, encode_examples

    pairs = read_pairs(pairs_file(tmp_path, ("two", "path", "none")))
    model, processor = load_judge(tiny_model_dir)
    traces = [prompts.format_judgement("Picture 1 is wider.", 1)] * 3
    examples = encode_examples(processor, pairs, traces)
    assert [len(ex.get("image_grid_thw", [])) for ex in examples] == [2, 1, 0]
    batch = collate_examples(examples, processor.tokenizer.pad_token_id)
    assert batch["image_grid_thw"].shape[0] == 3
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.get_input_embeddings().weight.grad is not None


@pytest.mark.slow
def test_rl_generation_mixes_two_images_one_image_and_text_only(tmp_path, coin_judge_dir):
    from egt.core.records import write_pairs
    from egt.stages import rl

    pairs = read_pairs(pairs_file(tmp_path, ("two", "list1", "path", "none")))
    for order, pair in enumerate(pairs):
        pair.extra["order"] = order
    curated = write_pairs(pairs, tmp_path / "selected.parquet")
    dataset = rl.build_dataset(rl.curriculum_pairs(curated))
    assert [len(row["images"]) for row in dataset] == [2, 1, 1, 0]
    assert [sum(p["type"] == "image" for p in row["prompt"][0]["content"]) for row in dataset] == [2, 1, 1, 0]
    # one GRPO step whose batch holds all four prompts (2 completions each): the kinds mixed in one generation
    out = rl.run(rl.Config(model=coin_judge_dir, train=curated, output=tmp_path / "rl", max_steps=1,
                           num_generations=2, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                           max_completion_length=8, save_steps=100, both_orders=False, seed=0))
    [line] = rl.read_consumed(out / "consumed.jsonl")
    assert line["ids"] == [p.id for p in pairs] and line["group_sizes"] == [2, 2, 2, 2]


def test_judge_api_takes_a_list_a_path_or_no_image(tmp_path):
    from egt.judge.api import make_pair

    pairs = read_pairs(pairs_file(tmp_path, ("two", "path", "none")))
    two = make_pair([r.path for r in pairs[0].images], "q", "a", "b")
    one, one_list = make_pair(pairs[1].images[0].path, "q", "a", "b"), make_pair([pairs[1].images[0].path], "q", "a", "b")
    assert [len(p.images) for p in (two, one, one_list, make_pair(None, "q", "a", "b"))] == [2, 1, 1, 0]
    assert one.images == one_list.images


# ---------------------------------------------------------------- heavy: the chain of stage commands

@pytest.mark.slow
def test_two_image_pairs_through_every_stage_command(tmp_path, tiny_model_dir, monkeypatch):
    """convert -> distill -> sft -> score -> curate -> rl -> eval -> judge, each as a command, on two 2-image
    pairs, a one-image pair and a text-only pair (in that order)."""
    path = pairs_file(tmp_path, ("two", "two", "path", "none"))
    monkeypatch.setenv(KEY_ENV, "k")
    requests: list = []
    with _teacher(requests) as server:
        assert main(["distill", "--pairs", str(path), "--output", str(tmp_path / "distill"), "--backend", "openai",
                     "--base_url", server.base_url, "--model", "t", "--api_key_env", KEY_ENV, "--max_attempts", "1",
                     "--progress", "false"]) == 0
    sent = sorted((_index(next(p["text"] for p in c if p["type"] == "text")),
                   sum(p["type"] == "image_url" for p in c)) for c in requests)
    assert sent == [("0", 2), ("1", 2), ("2", 1), ("3", 0)]      # every image of every pair to the teacher
    traces = tmp_path / "distill/traces.parquet"
    assert [len(p.images) for p in read_pairs(traces)] == [2, 2, 1, 0]
    steps = [
        ["sft", "--traces", str(traces), "--model", str(tiny_model_dir), "--output", str(tmp_path / "sft"),
         "--max_steps", "2", "--per_device_train_batch_size", "2", "--save_steps", "100", "--torch_threads", "1",
         "--progress", "false"],
        ["score", "--model", str(tmp_path / "sft/model"), "--pairs", str(path), "--output", str(tmp_path / "score"),
         "--samples", "2", "--max_new_tokens", "6", "--batch_size", "4", "--progress", "false"],
        ["curate", str(tmp_path / "score/scores.parquet"), "--output", str(tmp_path / "curate"), "--n", "4"],
        ["rl", "--model", str(tmp_path / "sft/model"), "--train", str(tmp_path / "curate/selected.parquet"),
         "--output", str(tmp_path / "rl"), "--max_steps", "1", "--num_generations", "2",
         "--per_device_train_batch_size", "8", "--max_completion_length", "6", "--save_steps", "100",
         "--both_orders", "false"],
        ["eval", "--benchmark", "pairs", "--data", str(path), "--model", str(tmp_path / "rl/model"), "--output",
         str(tmp_path / "eval"), "--max_new_tokens", "6", "--batch_size", "8", "--progress", "false"],
        ["judge", "--model", str(tmp_path / "rl/model"), "--pairs", str(path), "--output", str(tmp_path / "judge"),
         "--max_new_tokens", "6", "--progress", "false"],
    ]
    for args in steps:
        assert main(args) == 0, args[0]
    scores = read_rows(tmp_path / "score/scores.parquet")
    assert [len(r["images"]) for r in scores] == [2, 2, 1, 0] and all(len(r["verdicts"]) == 2 for r in scores)
    assert sorted(len(p.images) for p in read_pairs(tmp_path / "curate/selected.parquet")) == [0, 1, 2, 2]
    [consumed] = read_rows(tmp_path / "rl/consumed.jsonl")
    assert len(consumed["ids"]) == 4                                  # all four kinds in one generation
    assert len(read_rows(tmp_path / "eval/predictions.jsonl")) == 4
    assert len(read_rows(tmp_path / "judge/verdicts.jsonl")) == 4
