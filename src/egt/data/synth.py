"""The synthetic multimodal preference benchmark and its oracle teacher.

Every pair is a 64x64 PIL-drawn scene (shapes with a colour, a size, a
position, a count, background clutter), a short question about it, a correct
response and a flawed one. Difficulty has a *known cause*, stored per pair:

- flaw obviousness (`meta.flaw_kind`): a wrong shape or a far hue is easy to
  see; a neighbouring hue, an off-by-one count or a near-vertical left/right
  split is subtle;
- perception limits: objects near the resolution limit (a patch is 8 px), low
  saturation (low contrast to the grey background), occlusion between copies,
  hues sampled between two named hues (where the "right" name itself is
  ambiguous).

`meta.ambiguity` in [0, 1] measures how unclear the ground truth is for the
attribute the two responses disagree on (1 = a coin flip even for a perfect
eye); `meta.difficulty = 1 - (1 - ambiguity) * (1 - subtlety(flaw_kind))`.

Label noise (`noise`): `none`; `uniform:P` flips every label with probability
P; `ambiguity:P` flips with a probability proportional to ambiguity (capped at
0.5, where annotators are split), mean rate P, as with human annotators who
disagree on ambiguous pairs. Ground truth is kept in `meta.true_label` and
`meta.noisy`.

`oracle_trace` writes a judge completion from the scene's ground truth that
checks each response in turn; `faithful=False` writes a trace that misreads
the scene and picks the other response (work for the fidelity filter).

Run:  egt data synth --split train --n 2000 --seed 0 --noise ambiguity:0.2 --output runs/x/train.parquet
Images go to `<output stem>_images/` beside the file, referenced by relative paths.
Pair i of (split, seed) is the same whatever n is (per-pair random streams).
"""

from __future__ import annotations

import colorsys
import io
import math
import random
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from egt.core.config import StageConfig
from egt.core.errors import ConfigError
from egt.core.files import atomic_write_bytes
from egt.core.prompts import format_judgement
from egt.core.records import ImageRef, PreferencePair, write_pairs

IMAGE_SIZE_PX = 64
SHAPES = ("circle", "square", "triangle")
# HSV hue centre (degrees) of each colour name, in hue order: neighbours are adjacent.
HUES = {"red": 0.0, "orange": 30.0, "yellow": 58.0, "green": 120.0, "blue": 225.0, "purple": 285.0}
COLOURS = tuple(HUES)
QUESTION_KINDS = ("describe", "colour", "count", "spatial")
FLAWS_BY_KIND = {
    "describe": ("shape", "colour_far", "colour_near"),
    "colour": ("colour_far", "colour_near"),
    "count": ("count_off1", "count_off2"),
    "spatial": ("side",),
}
# How hard a flaw is to spot on a perfectly clear image (0 = glaring).
SUBTLETY = {"shape": 0.15, "colour_far": 0.0, "colour_near": 0.45,
            "count_off1": 0.4, "count_off2": 0.2, "side": 0.3}


class Config(StageConfig):
    split: Literal["train", "pool", "test"] = "train"
    n: int = Field(1000, ge=1, description="number of pairs")
    seed: int = 0
    noise: str = Field("none", description="none | uniform:P | ambiguity:P (mean flip rate P)")
    output: Path = Field(..., description="pairs file (.parquet or .jsonl); PNGs go to <stem>_images/")
    question_kinds: list[str] = Field(list(QUESTION_KINDS), description="subset of describe, colour, count, spatial")
    hard_fraction: float = Field(0.25, ge=0.0, le=1.0,
                                 description="how often each difficulty cause (small, pale, boundary hue, ...) is drawn")

    @field_validator("noise")
    @classmethod
    def _check_noise(cls, value: str) -> str:
        parse_noise(value)
        return value

    @field_validator("question_kinds")
    @classmethod
    def _check_kinds(cls, value: list[str]) -> list[str]:
        bad = [k for k in value if k not in QUESTION_KINDS]
        if bad or not value:
            raise ValueError(f"question kinds must be a non-empty subset of {list(QUESTION_KINDS)}, got {value}")
        return value


def parse_noise(spec: str) -> tuple[str, float]:
    """'none' -> ('none', 0); 'uniform:0.2' -> ('uniform', 0.2); 'ambiguity:0.25' likewise."""
    if spec in ("none", "", None):
        return "none", 0.0
    kind, _, rate = str(spec).partition(":")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if kind not in ("uniform", "ambiguity") or not 0.0 <= value <= 0.5:
        raise ConfigError(f"noise '{spec}': expected none, uniform:P or ambiguity:P with 0 <= P <= 0.5")
    return kind, value


# ---------------------------------------------------------------- scene sampling

def _ramp(value: float, lo: float, hi: float) -> float:
    """0 at lo, 1 at hi, linear between (lo > hi allowed for decreasing ramps)."""
    t = (value - lo) / (hi - lo)
    return min(1.0, max(0.0, t))


def _sample_colour(rng: random.Random, hard: float) -> dict:
    """A named colour drawn at a hue off its centre; near the midpoint the name is ambiguous."""
    name = rng.choice(COLOURS)
    idx = COLOURS.index(name)
    side = rng.choice((-1, 1))
    neighbour = COLOURS[(idx + side) % len(COLOURS)]
    gap = (HUES[neighbour] - HUES[name]) % 360 if side == 1 else (HUES[name] - HUES[neighbour]) % 360
    # fraction of the way to the midpoint between the two names
    frac = rng.uniform(0.55, 1.0) if rng.random() < hard else rng.uniform(0.0, 0.45)
    hue = (HUES[name] + side * frac * gap / 2) % 360
    sat = rng.uniform(0.22, 0.55) if rng.random() < hard else rng.uniform(0.7, 1.0)
    val = rng.uniform(0.75, 1.0)
    return {"name": name, "lean": neighbour, "hue_deg": round(hue, 2), "sat": round(sat, 3), "val": round(val, 3),
            "amb_hue": round(_ramp(frac, 0.5, 1.0), 4), "amb_contrast": round(_ramp(sat, 0.6, 0.22), 4)}


def _far_colour(rng: random.Random, name: str) -> dict:
    """A clearly drawn colour that is neither `name` nor one of its hue neighbours."""
    while True:
        colour = _sample_colour(rng, 0.0)
        if min((COLOURS.index(colour["name"]) - COLOURS.index(name)) % 6,
               (COLOURS.index(name) - COLOURS.index(colour["name"])) % 6) >= 2:
            return colour


def _sample_radius(rng: random.Random, hard: float, big: tuple[int, int], small: tuple[int, int]) -> int:
    return rng.randint(*small) if rng.random() < hard else rng.randint(*big)


def _amb_size(radius_px: int) -> float:
    return _ramp(radius_px, 8.5, 3.0)


def _place(rng: random.Random, r: int, x_range=(0, IMAGE_SIZE_PX)) -> tuple[int, int]:
    lo, hi = max(r + 1, x_range[0]), min(IMAGE_SIZE_PX - r - 2, x_range[1])
    return rng.randint(lo, max(lo, hi)), rng.randint(r + 1, IMAGE_SIZE_PX - r - 2)


def _other(rng: random.Random, options, exclude):
    return rng.choice([o for o in options if o != exclude])


def _sample_scene(rng: random.Random, kind: str, hard: float) -> dict:
    """Objects, the true fact, the flawed fact and the ambiguity of the disputed attribute."""
    shape = rng.choice(SHAPES)
    colour = _sample_colour(rng, hard)
    background = rng.randint(70, 180)
    clutter = [(rng.randrange(IMAGE_SIZE_PX), rng.randrange(IMAGE_SIZE_PX), rng.randint(-40, 40))
               for _ in range(rng.randint(0, 6))]
    flaw = rng.choice(FLAWS_BY_KIND[kind])
    objects = []
    amb_occlusion = 0.0
    if kind in ("describe", "colour"):
        r = _sample_radius(rng, hard, (9, 14), (3, 7))
        objects.append({"shape": shape, "colour": colour, "x": 0, "y": 0, "r": r})
        objects[0]["x"], objects[0]["y"] = _place(rng, r)
        if kind == "colour":  # a distractor of another shape and colour
            r2 = rng.randint(6, 10)
            c2 = _far_colour(rng, colour["name"])
            objects.append({"shape": _other(rng, SHAPES, shape), "colour": c2, "x": 0, "y": 0, "r": r2})
            objects[1]["x"], objects[1]["y"] = _place(rng, r2)
        amb_size = _amb_size(r)
        true_count = 1
    elif kind == "count":
        true_count = rng.randint(1, 4)
        r = _sample_radius(rng, hard, (6, 8), (3, 5))
        occlude = true_count > 1 and rng.random() < hard
        for i in range(true_count):
            x, y = _place(rng, r)
            if occlude and i == 1:  # second copy overlaps the first
                d = rng.uniform(0.6, 1.4) * r
                x = int(min(IMAGE_SIZE_PX - r - 2, max(r + 1, objects[0]["x"] + d)))
                y = objects[0]["y"]
                amb_occlusion = _ramp(abs(x - objects[0]["x"]) / r, 1.6, 0.6)
            objects.append({"shape": shape, "colour": colour, "x": x, "y": y, "r": r})
        amb_size = _amb_size(r)
    else:  # spatial: a target and a reference object, named by their (far apart) colours
        r = _sample_radius(rng, hard, (7, 11), (3, 6))
        r2 = rng.randint(7, 11)
        dx = rng.randint(2, 9) if rng.random() < hard else rng.randint(18, 34)
        side = rng.choice(("left", "right"))
        xr = rng.randint(IMAGE_SIZE_PX // 2 - 6, IMAGE_SIZE_PX // 2 + 6)
        xt = xr - dx if side == "left" else xr + dx
        xt = min(IMAGE_SIZE_PX - r - 2, max(r + 1, xt))
        colour = _sample_colour(rng, 0.0)  # objects are named by colour: keep both colours clear
        ref = {"shape": rng.choice(SHAPES), "colour": _far_colour(rng, colour["name"]), "x": xr,
               "y": rng.randint(r2 + 1, IMAGE_SIZE_PX - r2 - 2), "r": r2}
        objects = [{"shape": shape, "colour": colour, "x": xt, "y": rng.randint(r + 1, IMAGE_SIZE_PX - r - 2), "r": r},
                   ref]
        amb_size = _amb_size(r)
        true_count = 1

    # Facts (what the trace says it sees) and claims (what a response asserts).
    c = colour["name"]
    if flaw == "shape":
        wrong_shape, wrong_colour = _other(rng, SHAPES, shape), c
    elif flaw == "colour_near":
        wrong_shape, wrong_colour = shape, colour["lean"]
    else:
        wrong_shape = shape
        near = {colour["lean"], COLOURS[(COLOURS.index(c) + 1) % 6], COLOURS[(COLOURS.index(c) - 1) % 6]}
        wrong_colour = rng.choice([x for x in COLOURS if x != c and x not in near])
    if kind == "describe":
        claim, wrong_claim = f"{c} {shape}", f"{wrong_colour} {wrong_shape}"
        fact, wrong_fact = f"{_a(claim)} {claim}", f"{_a(wrong_claim)} {wrong_claim}"
        question = "What object is shown?"
    elif kind == "colour":
        claim, wrong_claim = c, wrong_colour
        fact, wrong_fact = f"{_a(c)} {c} {shape}", f"{_a(wrong_colour)} {wrong_colour} {shape}"
        question = f"What colour is the {shape}?"
    elif kind == "count":
        step = 1 if flaw == "count_off1" else 2
        wrong = true_count + step if true_count - step < 1 or rng.random() < 0.5 else true_count - step
        claim, wrong_claim = str(true_count), str(wrong)
        plural = lambda k: f"{k} {shape}" + ("" if k == 1 else "s")  # noqa: E731
        fact, wrong_fact = plural(true_count), plural(wrong)
        question = f"How many {shape}s are there?"
    else:
        side = "left" if objects[0]["x"] < objects[1]["x"] else "right"
        other_side = "right" if side == "left" else "left"
        claim, wrong_claim = side, other_side
        ref = objects[1]["colour"]["name"]
        fact, wrong_fact = f"the {c} shape {side} of the {ref} shape", f"the {c} shape {other_side} of the {ref} shape"
        question = f"Is the {c} shape left or right of the {ref} shape?"

    amb_hue, amb_contrast = colour["amb_hue"], colour["amb_contrast"]
    ambiguity = {
        "shape": max(amb_size, 0.6 * amb_contrast),
        "colour_far": max(0.7 * amb_contrast, 0.4 * amb_size),
        "colour_near": max(amb_hue, amb_contrast, 0.6 * amb_size),
        "count_off1": max(amb_occlusion, 0.8 * amb_size),
        "count_off2": 0.5 * max(amb_occlusion, amb_size),
        "side": _ramp(abs(objects[0]["x"] - objects[1]["x"]) if kind == "spatial" else 99, 12.0, 1.0),
    }[flaw]
    return {
        "kind": kind, "flaw": flaw, "question": question, "background": background, "clutter": clutter,
        "objects": objects, "true_count": true_count, "fact": fact, "wrong_fact": wrong_fact,
        "claim": claim, "wrong_claim": wrong_claim, "ambiguity": round(ambiguity, 4),
        "causes": {"size": round(amb_size, 4), "contrast": amb_contrast, "hue": amb_hue,
                   "occlusion": round(amb_occlusion, 4)},
    }


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


RESPONSES = {
    "describe": "{}.",
    "colour": "It is {}.",
    "count": "I count {}.",
    "spatial": "It is on the {}.",
}


def _response(kind: str, claim: str) -> str:
    text = RESPONSES[kind].format(claim)
    return f"{_a(claim).capitalize()} {text}" if kind == "describe" else text


# ---------------------------------------------------------------- captions (perception pre-training)

def _where(obj: dict) -> str:
    """Coarse place of an object: a third of the image on each axis (columns 0-21, 22-42, 43-63)."""
    h = "left" if obj["x"] < 22 else "right" if obj["x"] > 42 else ""
    v = "top" if obj["y"] < 22 else "bottom" if obj["y"] > 42 else ""
    return f"at the {' '.join(t for t in (v, h) if t)}" if h or v else "in the centre"


def scene_caption(scene: dict) -> str:
    """What a perfect eye reports: each object's size, colour, shape and place (count scenes: how many),
    and for a spatial scene the side of the target. `egt model tiny` pre-trains perception on these."""
    objects = scene["objects"]
    size = lambda o: "large" if o["r"] >= 8 else "small"  # noqa: E731
    if scene["kind"] == "count":
        o, n = objects[0], len(objects)
        return f"I see {n} {size(o)} {o['colour']['name']} {o['shape']}{'' if n == 1 else 's'}."
    parts = [f"{_a(size(o))} {size(o)} {o['colour']['name']} {o['shape']} {_where(o)}" for o in objects]
    text = f"I see {' and '.join(parts)}."
    if scene["kind"] == "spatial":
        target, ref = objects
        side = "left" if target["x"] < ref["x"] else "right"
        text += (f" The {target['colour']['name']} {target['shape']} is {side} of "
                 f"the {ref['colour']['name']} {ref['shape']}.")
    return text


def caption_examples(start: int, n: int, seed: int, hard_fraction: float = 0.25) -> list[tuple]:
    """(PIL image, caption) for scenes start..start+n of the 'pretrain' stream (disjoint from the splits)."""
    out = []
    for i in range(start, start + n):
        scene = _sample_spec("pretrain", seed, i, list(QUESTION_KINDS), hard_fraction)["scene"]
        out.append((render_scene(scene), scene_caption(scene)))
    return out


VERIFY_QUESTION = "{question} Claim: {claim} Is the claim right?"
VERIFY_ANSWER = "I see {fact}. The claim says {said}, I see {seen}: {verdict}."


def verify_text(scene: dict, right: bool) -> tuple[str, str]:
    """(prompt, answer) of a single-claim check: one response to the scene's question, right or wrong.

    What an instruction-tuned VLM can do before it is ever a judge -- read the image and say whether one
    statement about it holds -- in words unlike the judge trace's (no "Response 1/2", no verdict tag)."""
    said = scene["claim"] if right else scene["wrong_claim"]
    prompt = VERIFY_QUESTION.format(question=scene["question"], claim=_response(scene["kind"], said))
    answer = VERIFY_ANSWER.format(fact=scene["fact"], said=said, seen=scene["claim"], verdict="yes" if right else "no")
    return prompt, answer


def verify_examples(start: int, n: int, seed: int, hard_fraction: float = 0.25) -> list[tuple]:
    """(PIL image, prompt, answer) single-claim checks for scenes start..start+n of the 'verify' stream
    (disjoint from the splits and the captions); the claim is right for half of them."""
    out = []
    for i in range(start, start + n):
        spec = _sample_spec("verify", seed, i, list(QUESTION_KINDS), hard_fraction)
        out.append((render_scene(spec["scene"]), *verify_text(spec["scene"], right=spec["true_label"] == 1)))
    return out


# ---------------------------------------------------------------- drawing

def _rgb(colour: dict) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(colour["hue_deg"] / 360.0, colour["sat"], colour["val"])
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def render_scene(scene: dict):
    """Draw the scene as a 64x64 RGB PIL image (deterministic)."""
    from PIL import Image, ImageDraw

    bg = scene["background"]
    img = Image.new("RGB", (IMAGE_SIZE_PX, IMAGE_SIZE_PX), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    for x, y, delta in scene["clutter"]:
        g = max(0, min(255, bg + delta))
        draw.rectangle([x, y, x + 1, y + 1], fill=(g, g, g))
    for obj in scene["objects"]:
        x, y, r, fill = obj["x"], obj["y"], obj["r"], _rgb(obj["colour"])
        if obj["shape"] == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif obj["shape"] == "square":
            h = max(1, int(round(r * 0.85)))
            draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
        else:
            pts = [(x + r * math.cos(math.radians(a)), y - r * math.sin(math.radians(a))) for a in (90, 210, 330)]
            draw.polygon(pts, fill=fill)
    return img


def _png_bytes(img) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# ---------------------------------------------------------------- pairs

def _flip_probabilities(ambiguities: list[float], kind: str, rate: float) -> list[float]:
    """Per-pair flip probability with mean `rate`; for 'ambiguity' proportional to ambiguity, capped at 0.5."""
    n = len(ambiguities)
    if kind == "none" or rate == 0.0 or n == 0:
        return [0.0] * n
    if kind == "uniform":
        return [rate] * n
    weights = [a + 0.01 for a in ambiguities]  # clear pairs keep a tiny chance (annotator slips)
    probs = [0.0] * n
    capped: set[int] = set()
    for _ in range(n):  # water-filling: scale the uncapped pairs until the mean matches
        budget = rate * n - 0.5 * len(capped)
        free = [i for i in range(n) if i not in capped]
        total = sum(weights[i] for i in free)
        if not free or total <= 0:
            break
        scale = budget / total
        newly = {i for i in free if weights[i] * scale > 0.5}
        for i in free:
            probs[i] = min(0.5, weights[i] * scale)
        if not newly:
            break
        capped |= newly
    return [round(p, 6) for p in probs]


def _sample_spec(split: str, seed: int, index: int, kinds: list[str], hard_fraction: float) -> dict:
    rng = random.Random(f"egt-synth:{split}:{seed}:{index}")
    kind = rng.choice(kinds)
    scene = _sample_scene(rng, kind, hard_fraction)
    true_label = rng.choice((1, 2))
    return {"scene": scene, "true_label": true_label}


def _pair_from_spec(spec: dict, pair_id: str, images: list[ImageRef]) -> PreferencePair:
    scene, true_label = spec["scene"], spec["true_label"]
    good, bad = _response(scene["kind"], scene["claim"]), _response(scene["kind"], scene["wrong_claim"])
    r1, r2 = (good, bad) if true_label == 1 else (bad, good)
    amb = scene["ambiguity"]
    difficulty = 1.0 - (1.0 - amb) * (1.0 - SUBTLETY[scene["flaw"]])
    meta = {"difficulty": round(difficulty, 4), "ambiguity": amb, "true_label": true_label, "noisy": False,
            "flip_prob": 0.0, "question_kind": scene["kind"], "flaw_kind": scene["flaw"], "scene": scene}
    return PreferencePair(id=pair_id, images=images, question=scene["question"], response_1=r1, response_2=r2,
                          label=true_label, source="synth", category=scene["kind"], meta=meta)


def generate_pairs(split: str, n: int, seed: int, noise: str = "none", image_dir: Path | None = None,
                   question_kinds: list[str] | None = None, hard_fraction: float = 0.25) -> list[PreferencePair]:
    """n pairs of one split. With image_dir, PNGs are written there (paths absolute); else embedded as bytes."""
    kinds = list(question_kinds or QUESTION_KINDS)
    noise_kind, rate = parse_noise(noise)
    specs = [_sample_spec(split, seed, i, kinds, hard_fraction) for i in range(n)]
    probs = _flip_probabilities([s["scene"]["ambiguity"] for s in specs], noise_kind, rate)
    if image_dir is not None:
        image_dir = Path(image_dir)
        image_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i, (spec, prob) in enumerate(zip(specs, probs)):
        pair_id = f"synth-{split}-{seed}-{i:06d}"
        png = _png_bytes(render_scene(spec["scene"]))
        if image_dir is not None:
            path = image_dir / f"{pair_id}.png"
            atomic_write_bytes(path, png, fsync=False)  # rebuilt by a rerun; the pairs file is the commit
            images = [ImageRef(path=str(path))]
        else:
            images = [ImageRef(data=png)]
        pair = _pair_from_spec(spec, pair_id, images)
        flip_rng = random.Random(f"egt-synth-noise:{split}:{seed}:{i}")
        flipped = flip_rng.random() < prob
        pair.meta["flip_prob"] = prob
        if flipped:
            pair.label = 3 - pair.label
            pair.meta["noisy"] = True
        pairs.append(pair)
    return pairs


def image_dir_for(output: Path) -> Path:
    """Where run() puts the PNGs of a pairs file: `<stem>_images/` beside it."""
    output = Path(output)
    return output.parent / f"{output.stem}_images"


def run(cfg: Config) -> Path:
    output = Path(cfg.output)
    image_dir = image_dir_for(output)
    pairs = generate_pairs(cfg.split, cfg.n, cfg.seed, cfg.noise, image_dir,
                           question_kinds=cfg.question_kinds, hard_fraction=cfg.hard_fraction)
    base = output.parent.resolve()
    for pair in pairs:  # relative paths so the folder can move
        pair.images = [ImageRef(path=str(Path(ref.path).resolve().relative_to(base))) for ref in pair.images]
    write_pairs(pairs, output)
    return output


# ---------------------------------------------------------------- oracle teacher

# Each response check restates what the judge saw right beside the response's claim
# ("Response 1 says blue, I see green: no"), so the yes/no compares two adjacent
# values. With the value read only once at the start ("Response 1 blue: no"), the
# tiny judge learns its checks more slowly (first check right 0.75 vs 0.92 after
# 1,500 steps in a probe; README, Benchmarks, tiny judge).
_TEMPLATES = (
    ("I see {fact}. Response 1 says {c1}, I see {seen}: {yn1}. Response 2 says {c2}, I see {seen}: {yn2}.",
     ("yes", "no")),
    ("The image shows {fact}. Response 1 says {c1}, the image shows {seen}: {yn1}. "
     "Response 2 says {c2}, the image shows {seen}: {yn2}.", ("yes", "no")),
    ("I see {fact}. Response 1, {c1} against {seen}, is {yn1}. Response 2, {c2} against {seen}, is {yn2}.",
     ("right", "wrong")),
    ("There is {fact}. Response 1 claims {c1} where I see {seen}, which is {yn1}. "
     "Response 2 claims {c2} where I see {seen}, which is {yn2}.", ("correct", "incorrect")),
)


def oracle_trace(pair: PreferencePair, faithful: bool = True, rng: random.Random | None = None) -> str:
    """A full judge completion from the scene's ground truth, checking each response in turn.

    faithful=True gives the verdict meta.true_label; faithful=False misreads the
    scene (sees the flawed fact) and gives the other response. rng=None uses the
    canonical phrasing; an rng picks among several phrasings.
    """
    scene, true_label = pair.meta["scene"], int(pair.meta["true_label"])
    verdict = true_label if faithful else 3 - true_label
    fact = scene["fact"] if faithful else scene["wrong_fact"]
    seen = scene["claim"] if faithful else scene["wrong_claim"]
    claims = {true_label: scene["claim"], 3 - true_label: scene["wrong_claim"]}
    template, (yes, no) = _TEMPLATES[0] if rng is None else rng.choice(_TEMPLATES)
    think = template.format(fact=fact, seen=seen, c1=claims[1], c2=claims[2],
                            yn1=yes if verdict == 1 else no, yn2=yes if verdict == 2 else no)
    return format_judgement(think, verdict)


def corpus_texts(n: int = 2000, seed: int = 12345) -> list[str]:
    """Questions, responses, oracle traces (all phrasings) and captions of n scenes: the tiny tokenizer's corpus."""
    texts = []
    for i in range(n):
        spec = _sample_spec("corpus", seed, i, list(QUESTION_KINDS), 0.25)
        pair = _pair_from_spec(spec, f"c{i}", [])
        texts += [pair.question, pair.response_1, pair.response_2]
        rng = random.Random(i)
        texts += [oracle_trace(pair, faithful=bool(i % 5), rng=rng if i % 2 else None), scene_caption(spec["scene"])]
        texts += list(verify_text(spec["scene"], right=bool(i % 2)))
    return texts
