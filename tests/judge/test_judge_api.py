"""egt.judge.api: the both-order vote and entropies on hand-made judgements, inputs, and the tiny judge end to end."""

from __future__ import annotations

import io
import math

import pytest

from egt.core.errors import ConfigError
from egt.core.prompts import format_judgement, parse_verdict
from egt.judge.api import Judge, combine, content_key, image_refs, make_pair
from egt.model.entropy import ResponseEntropy, ScoredJudgement


def scored(verdict, answer=None, max_=1.0, mean=0.5, entropy=True):
    text = format_judgement("t.", verdict) if verdict else "<think>t.</think>"
    e = ResponseEntropy(parse_verdict(text).verdict, answer, mean, mean, max_, 4) if entropy else None
    return ScoredJudgement(text, parse_verdict(text), 4, False, e)


def test_combine_counts_votes_over_both_orders():
    # given order: 1, 1 -> response 1 twice; swapped: position 2 = response 1, then no verdict
    c = combine(("given", "swapped"), [[scored(1, 0.1, 1.0), scored(1, None, 2.0)],
                                      [scored(2, 0.3, 3.0), scored(None, None, 4.0)]], "exact")
    assert c.verdict == 1 and c.vote_share == (0.75, 0.0) and c.confidence == 0.75
    assert c.orders_agree is True
    assert [t.choice for t in c.traces] == [1, 1, 1, None] and [t.verdict for t in c.traces] == [1, 1, 2, None]
    assert [t.order for t in c.traces] == ["given", "given", "swapped", "swapped"]
    assert c.entropies["answer"] == pytest.approx(0.2)      # mean of the defined values
    assert c.entropies["max"] == pytest.approx(2.5)
    assert c.entropies["vote"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert c.entropy_kind == "exact" and c.entropies_lower is None
    assert c.n_judgements == 4 and c.win_probability(1) == 0.75 and c.win_probability(2) == 0.0
    d = c.to_dict()
    assert d["vote_share"] == [0.75, 0.0] and len(d["traces"]) == 4 and "traces" not in c.to_dict(traces=False)


def test_combine_position_bias_is_a_tie_and_disagreement():
    # "1" in both orders: response 1, then response 2
    c = combine(("given", "swapped"), [[scored(1)], [scored(1)]], "exact")
    assert c.verdict is None and c.vote_share == (0.5, 0.5) and c.orders_agree is False
    assert c.entropies["vote"] == pytest.approx(math.log(2))
    one = combine(("given",), [[scored(2)]], "exact")
    assert one.verdict == 2 and one.orders_agree is None and one.entropies["vote"] == 0.0
    assert math.copysign(1, one.entropies["vote"]) == 1  # never -0.0


def test_combine_without_entropies_keeps_the_vote():
    c = combine(("given", "swapped"), [[scored(1, entropy=False)], [scored(2, entropy=False)]], "upper_bound")
    assert c.verdict == 1 and c.orders_agree is True and c.entropy_kind is None
    assert all(c.entropies[m] is None for m in ("answer", "sentence", "mean", "max")) and c.entropies["vote"] == 0.0


def test_inputs_and_content_keys(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (8, 8), (10, 200, 30))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    path = tmp_path / "a.png"
    path.write_bytes(buffer.getvalue())
    refs = image_refs([str(path), buffer.getvalue(), img])
    assert refs[0].path == str(path) and refs[1].data == buffer.getvalue() and refs[2].open().size == (8, 8)
    assert image_refs(None) == [] and len(image_refs(path)) == 1
    with pytest.raises(TypeError):
        image_refs([3])
    a = make_pair(path, "q", "x", "y", pair_id="one")
    b = make_pair(path, "q", "x", "y", pair_id="two")
    assert content_key(a) == content_key(b)                           # ids do not matter
    assert content_key(a.in_order("swapped")) == content_key(make_pair(path, "q", "y", "x"))
    assert content_key(a) != content_key(make_pair(path, "q", "y", "x"))
    assert content_key(a) != content_key(make_pair(buffer.getvalue(), "q", "x", "y"))


def test_from_pretrained_rejects_unknown_options(tiny_model_dir):
    with pytest.raises(ConfigError, match="sampels"):
        Judge.from_pretrained(tiny_model_dir, sampels=2)


@pytest.mark.slow
def test_tiny_judge_compare_is_reproducible_and_debiased(tiny_model_dir, synth_pairs_list):
    import egt
    from egt.model.entropy import judgement_entropies
    from egt.model.generation import JudgeRequest
    from egt.model.generation import judge as generate

    judge = egt.Judge.from_pretrained(tiny_model_dir, max_new_tokens=10, batch_size=5, device="cpu")
    p, others = synth_pairs_list[0], synth_pairs_list[1:4]
    alone = judge.compare(p.images, p.question, p.response_1, p.response_2, samples=2)
    batched = judge.compare_many([*others[:2], p, others[2]], samples=2)[2]
    assert [t.text for t in alone.traces] == [t.text for t in batched.traces]
    assert alone.vote_share == batched.vote_share and alone.verdict == batched.verdict
    # the logits themselves can differ in the last bits with the batch's padding (egt.model.generation)
    for metric, value in alone.entropies.items():
        assert (value is None and batched.entropies[metric] is None) or \
            value == pytest.approx(batched.entropies[metric], rel=1e-4), metric
    assert alone.n_judgements == 4 and [t.order for t in alone.traces] == ["given"] * 2 + ["swapped"] * 2
    # judging (A, B) swapped is judging (B, A) as given
    mirror = judge.compare(p.images, p.question, p.response_2, p.response_1, samples=2)
    assert [t.text for t in mirror.traces[:2]] == [t.text for t in alone.traces[2:]]
    assert mirror.vote_share == alone.vote_share[::-1]
    # greedy: the traces and entropies are generation.judge's
    greedy = judge.compare(p.images, p.question, p.response_1, p.response_2)
    direct = generate(judge.backend.model, judge.backend.processor,
                      [JudgeRequest(p, None), JudgeRequest(p.in_order("swapped"), None)],
                      max_new_tokens=10, with_entropy=True, progress=False)
    assert [t.text for t in greedy.traces] == [d.text for d in direct]
    tok = judge.backend.processor.tokenizer
    for trace, d in zip(greedy.traces, direct):
        assert trace.entropies["mean"] == pytest.approx(sum(d.token_entropies_nats) / len(d.token_ids))
        assert trace.entropies["max"] == pytest.approx(judgement_entropies(d, tok)[0].max_token_nats)
    assert greedy.entropy_kind == "exact"
    assert greedy.entropies["max"] == pytest.approx(sum(t.entropies["max"] for t in greedy.traces) / 2)
