"""Use a trained judge: which of two responses is better, how sure it is, and when not to trust it.

    import egt
    judge = egt.Judge.from_pretrained("runs/demo/sft/model")                 # a local checkpoint
    judge = egt.Judge.from_pretrained("http://localhost:8000/v1", api_key_env="JUDGE_KEY")  # `vllm serve`
    c = judge.compare("cat.png", "What is shown?", "A cat.", "A dog.", samples=1, orders="both")
    c.verdict, c.vote_share, c.confidence, c.orders_agree, c.entropies["max"], c.traces
    results = judge.compare_many([pair, {"images": [...], "question": ..., "response_1": ..., "response_2": ...}])

A comparison judges the pair in both orders (`orders="both"`: response 1 shown first, then
second; `"given"`: as given only), `samples` judgements per order (1 = greedy; K > 1 samples at
`temperature`). Each judgement's verdict names a position; its *choice* is the response it picks
in the caller's numbering. The comparison combines every judgement of both orders:

- `vote_share` = (share of judgements choosing response 1, share choosing response 2); a
  judgement without a verdict counts in the denominator and for neither response;
- `verdict` = the response with the larger share, None on a tie; `confidence` = the larger share;
- `orders_agree` = the per-order pluralities pick the same response (None with one order);
- `entropies` (nats): `answer`, `sentence`, `mean`, `max` are the means over all the judgements
  of egt.model.entropy's per-response values (None where undefined), `vote` is the entropy of the
  choices (no verdict being an outcome of its own: order disagreement alone gives ln 2).

Backends. A local checkpoint folder generates with egt.model.generation.judge (THE generation path:
per-judgement seeded Gumbel sampling, full-vocabulary entropies from the raw logits): entropies
are exact (`entropy_kind="exact"`). An http(s) URL is an OpenAI-compatible chat-completions
server (egt.judge.endpoint): entropies come from the top `top_logprobs` log-probabilities per
token, so they are only bounded (egt.model.entropy.topk_entropy_bounds); `entropies` holds the UPPER
bounds (the values abstention uses) and `entropies_lower` the lower ones
(`entropy_kind="upper_bound"`). A server that returns no log-probs gives entropies None
(`entropy_kind=None`); the vote share and vote entropy still work.

Reproducibility. Judgement k of an oriented pair is seeded with
`judgement_seed(seed, content_key(pair), k)`: the content (question, responses in the order
shown, images), never the batch, its neighbours or an id. So `compare` gives the same result
alone or inside `compare_many`, and judging (A, B) in the swapped order is exactly judging
(B, A) as given.

Images are decoded through egt.core.images within the options' `max_image_pixels` (a larger image is a
DataError naming it, or shrunk with `downscale_images`), whatever the caller passed.

Departures: the paper uses the judge for training only; this API, the both-order vote and
entropy-based abstention (`egt judge`, `egt eval`) are egt's.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

from pydantic import Field

from egt.core.config import StageConfig
from egt.core.errors import ConfigError
from egt.core.images import ImageOptions
from egt.core.records import ORDERS, ImageRef, Order, PreferencePair
from egt.model.loading import MAX_PIXELS_HELP, MIN_PIXELS_HELP, TorchDtype

if TYPE_CHECKING:
    from egt.model.entropy import ScoredJudgement

ENTROPY_METRICS = ("answer", "sentence", "mean", "max")  # per judgement; `vote` is per comparison


class JudgeOptions(StageConfig, ImageOptions):
    """How a judge is loaded and decodes (shared by `egt judge`, `egt rerank` and `Judge.from_pretrained`)."""

    model: str = Field(..., description="judge checkpoint folder, or the http(s) URL of an OpenAI-compatible "
                                        "server (e.g. http://localhost:8000/v1 for `vllm serve`)")
    samples: int = Field(1, ge=1, description="judgements per order; 1 = greedy, K > 1 samples at temperature")
    orders: Literal["both", "given"] = Field("both", description="both: each pair in both orders; given: as given")
    temperature: float = Field(1.0, gt=0, description="sampling temperature when samples > 1")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling when samples > 1")
    max_new_tokens: int = Field(1024, ge=1, description="a cut-off judgement usually has no verdict")
    batch_size: int = Field(16, ge=1, description="judgements per generate call (local) or per chunk (endpoint)")
    seed: int = Field(0, description="seeds the sampled judgements (with the pair's content)")
    sentence_agg: Literal["mean", "max"] = Field("mean", description="sentence entropy: mean or max over sentences")
    device: str = Field("auto", description="local: auto (cuda if available), cpu, cuda, cuda:1, ...")
    dtype: TorchDtype = Field("auto", description="local: auto, bfloat16, float16, float32 (or bf16, fp16, fp32)")
    processor_max_pixels: int | None = Field(None, ge=1, description="local: " + MAX_PIXELS_HELP)
    processor_min_pixels: int | None = Field(None, ge=1, description="local: " + MIN_PIXELS_HELP)
    served_model: str | None = Field(None, description="endpoint: the model name; None = the one the server lists")
    api_key_env: str | None = Field(None, description="endpoint: environment variable holding the API key")
    top_logprobs: int = Field(20, ge=0, le=20, description="endpoint: log-probs per token for entropy bounds "
                                                          "(vLLM serves up to 20; 0 = ask for none)")
    vocab_size: int = Field(152064, ge=2, description="endpoint: the judge's vocabulary size (its config.json "
                                                      "vocab_size), for the upper bound; larger only loosens it")
    concurrency: int = Field(8, ge=1, description="endpoint: requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="endpoint: per-request timeout")
    max_retries: int = Field(2, ge=0, description="endpoint: retries of a failed request")


def is_endpoint(model: str | Path) -> bool:
    return str(model).startswith(("http://", "https://"))


# ---------------------------------------------------------------- judgements and comparisons

def response_values(entropy) -> dict[str, float | None] | None:
    """{answer, sentence, mean, max} of a ResponseEntropy, None for undefined values; None without one."""
    if entropy is None:
        return None
    raw = {"answer": entropy.answer_nats, "sentence": entropy.sentence_nats, "mean": entropy.mean_token_nats,
           "max": entropy.max_token_nats}
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in raw.items()}


@dataclass
class Trace:
    order: Order               # "given" (response 1 shown first) or "swapped" (PreferencePair.in_order)
    sample: int
    text: str
    verdict: int | None        # the position the judge named (1 = shown first)
    choice: int | None         # the response it picked, in the caller's numbering
    format_ok: bool
    n_tokens: int
    truncated: bool
    entropies: dict[str, float | None] | None = None
    entropies_lower: dict[str, float | None] | None = None


@dataclass
class Comparison:
    verdict: int | None                       # 1 or 2 (caller's numbering); None: tie or no verdict
    vote_share: tuple[float, float]           # judgements choosing response 1 / 2, over all judgements
    confidence: float                         # the larger vote share
    orders_agree: bool | None                 # both orders' pluralities pick the same response (None: one order)
    entropies: dict[str, float | None]        # answer, sentence, mean, max, vote (nats); upper bounds (endpoint)
    entropy_kind: str | None                  # "exact", "upper_bound", or None (no log-probs)
    traces: list[Trace] = field(default_factory=list)
    entropies_lower: dict[str, float | None] | None = None

    @property
    def n_judgements(self) -> int:
        return len(self.traces)

    def win_probability(self, response: int) -> float:
        """The vote share of response 1 or 2: the judge's estimate that it is the better one."""
        if response not in (1, 2):
            raise ValueError(f"response must be 1 or 2, got {response!r}")
        return self.vote_share[response - 1]

    def to_dict(self, traces: bool = True) -> dict:
        out = asdict(self)
        out["vote_share"] = list(self.vote_share)
        out["n_judgements"] = self.n_judgements
        if not traces:
            del out["traces"]
        return out


def _plurality(choices: Sequence[int | None]) -> int | None:
    ones, twos = sum(c == 1 for c in choices), sum(c == 2 for c in choices)
    return None if ones == twos else (1 if ones > twos else 2)


def _pair_means(entropies: list) -> dict[str, float | None]:
    """Means over judgements of the defined per-response values: egt.model.entropy.pair_entropies' rule."""
    from egt.core.score_columns import METRIC_COLUMNS
    from egt.model.entropy import pair_entropies

    if not entropies or any(e is None for e in entropies):
        return {m: None for m in ENTROPY_METRICS}
    row = pair_entropies(entropies, label=1)
    return {m: (None if math.isnan(row[METRIC_COLUMNS[m]]) else float(row[METRIC_COLUMNS[m]]))
            for m in ENTROPY_METRICS}


def combine(orders: Sequence[str], judged: Sequence[Sequence[ScoredJudgement]], entropy_kind: str | None) -> Comparison:
    """The comparison from the judgements of each order (judged[i]: the samples of orders[i])."""
    from egt.model.entropy import vote_entropy

    traces: list[Trace] = []
    for order, group in zip(orders, judged):
        for k, j in enumerate(group):
            v = j.verdict.verdict
            choice = v if order == "given" or v is None else 3 - v
            traces.append(Trace(order, k, j.text, v, choice, bool(j.verdict.format_ok), int(j.n_tokens),
                                bool(j.truncated), response_values(j.entropy), response_values(j.entropy_lower)))
    choices = [t.choice for t in traces]
    n = len(choices)
    share = (sum(c == 1 for c in choices) / n, sum(c == 2 for c in choices) / n) if n else (0.0, 0.0)
    verdict = None if share[0] == share[1] else (1 if share[0] > share[1] else 2)
    agree = None
    if len(orders) == 2:
        per_order = [_plurality([t.choice for t in traces if t.order == o]) for o in orders]
        agree = per_order[0] is not None and per_order[0] == per_order[1]
    flat = [j for group in judged for j in group]
    entropies = _pair_means([j.entropy for j in flat])
    entropies["vote"] = vote_entropy(choices) + 0.0 if n else None  # + 0.0: no -0.0
    has_entropy = all(j.entropy is not None for j in flat) and bool(flat)
    lower = None
    if has_entropy and all(j.entropy_lower is not None for j in flat):
        lower = _pair_means([j.entropy_lower for j in flat])
        lower["vote"] = entropies["vote"]
    return Comparison(verdict, share, max(share), agree, entropies, entropy_kind if has_entropy else None,
                      traces, lower)


# ---------------------------------------------------------------- inputs

def _image_ref(image) -> ImageRef:
    if isinstance(image, ImageRef):
        return image
    if isinstance(image, (str, Path)):
        return ImageRef(path=str(Path(image).resolve()))
    if isinstance(image, (bytes, bytearray)):
        return ImageRef(data=bytes(image))
    if isinstance(image, dict):
        return ImageRef.from_row(image)
    if hasattr(image, "save"):  # a PIL image
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        return ImageRef(data=buffer.getvalue())
    raise TypeError(f"an image must be a path, bytes, a PIL image or an ImageRef, got {type(image).__name__}")


def image_refs(images) -> list[ImageRef]:
    if images is None:
        return []
    if isinstance(images, (str, Path, bytes, bytearray, ImageRef, dict)) or hasattr(images, "save"):
        images = [images]
    return [_image_ref(i) for i in images]


def make_pair(images, question: str, response_1: str, response_2: str, pair_id: str = "") -> PreferencePair:
    """A pair to judge (label 1 is a placeholder: the judge never sees it)."""
    return PreferencePair(pair_id, image_refs(images), question, response_1, response_2, 1)


def _as_pair(item) -> PreferencePair:
    if isinstance(item, PreferencePair):
        return item
    if isinstance(item, dict):
        missing = [k for k in ("question", "response_1", "response_2") if k not in item]
        if missing:
            raise ValueError(f"a pair to compare needs {', '.join(missing)}")
        return make_pair(item.get("images", item.get("image")), item["question"], item["response_1"],
                         item["response_2"], str(item.get("id", "")))
    if isinstance(item, (tuple, list)) and len(item) == 4:
        return make_pair(*item)
    raise TypeError("compare_many takes PreferencePairs, dicts (images, question, response_1, response_2) "
                    "or (images, question, response_1, response_2) tuples")


def content_key(pair: PreferencePair) -> str:
    """A digest of what the judge sees: question, responses in order, images (bytes, or path when on disk)."""
    digest = hashlib.sha256()
    for text in (pair.question, pair.response_1, pair.response_2):
        digest.update(text.encode("utf-8") + b"\x1f")
    for ref in pair.images:
        digest.update((hashlib.sha256(ref.data).hexdigest() if ref.data is not None else ref.path or "").encode()
                      + b"\x1e")
    return digest.hexdigest()[:32]


def orders_for(orders: str) -> tuple[Order, ...]:
    if orders == "both":
        return ORDERS
    if orders == "given":
        return ("given",)
    raise ConfigError(f"orders must be 'both' or 'given', got {orders!r}")


# ---------------------------------------------------------------- local backend

class LocalBackend:
    """A checkpoint folder judged with egt.model.generation.judge; exact full-vocabulary entropies."""

    entropy_kind = "exact"

    def __init__(self, path: str | Path, device: str = "auto", dtype: str = "auto", batch_size: int = 16,
                 sentence_agg: str = "mean", max_pixels: int | None = None, min_pixels: int | None = None):
        from egt.model.loading import load_judge

        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.processor = load_judge(path, device=device, dtype=dtype, max_pixels=max_pixels,
                                                min_pixels=min_pixels)
        self.batch_size, self.sentence_agg = batch_size, sentence_agg
        self.name = str(path)

    def scored(self, judgement) -> ScoredJudgement:
        from egt.model.entropy import ScoredJudgement, judgement_entropies

        entropy = None
        if judgement.token_entropies_nats is not None:
            entropy = judgement_entropies(judgement, self.processor.tokenizer, self.sentence_agg)[0]
        return ScoredJudgement(judgement.text, judgement.verdict, len(judgement.token_ids), judgement.truncated,
                               entropy)

    def run(self, requests, *, temperature: float, top_p: float, max_new_tokens: int,
            on_batch: Callable[[int], None] | None = None) -> list[ScoredJudgement]:
        from egt.model.generation import judge

        judgements = judge(self.model, self.processor, requests, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, batch_size=self.batch_size, with_entropy=True,
                           progress=False, on_batch=on_batch)
        return [self.scored(j) for j in judgements]


def build_backend(options: JudgeOptions, local_cls: type | None = None, endpoint_cls: type | None = None):
    """The backend of `options.model`; `local_cls` / `endpoint_cls` replace LocalBackend / EndpointBackend
    (subclasses taking the same arguments, e.g. egt.judge.probability's, which also read answer probabilities)."""
    if is_endpoint(options.model):
        from egt.judge.endpoint import EndpointBackend

        if options.processor_max_pixels is not None or options.processor_min_pixels is not None:
            raise ConfigError("processor_max_pixels / processor_min_pixels: a served judge resizes images on the "
                              "server (vLLM: --mm-processor-kwargs '{\"max_pixels\": N}'); leave them unset here")

        return (endpoint_cls or EndpointBackend)(
            options.model, served_model=options.served_model, api_key_env=options.api_key_env,
            top_logprobs=options.top_logprobs, vocab_size=options.vocab_size, concurrency=options.concurrency,
            timeout_s=options.timeout_s, max_retries=options.max_retries, sentence_agg=options.sentence_agg)
    return (local_cls or LocalBackend)(options.model, device=options.device, dtype=options.dtype,
                                       batch_size=options.batch_size, sentence_agg=options.sentence_agg,
                                       max_pixels=options.processor_max_pixels,
                                       min_pixels=options.processor_min_pixels)


# ---------------------------------------------------------------- the judge

class Judge:
    """A trained judge behind a local checkpoint or an OpenAI-compatible endpoint (module docstring)."""

    def __init__(self, backend, options: JudgeOptions):
        self.backend, self.options = backend, options

    @classmethod
    def from_pretrained(cls, path_or_endpoint: str | Path, **options) -> "Judge":
        """Load a checkpoint folder or connect to an http(s) endpoint; `options` are JudgeOptions' keys."""
        from egt.core.config import load_config

        cfg = load_config(JudgeOptions, None, {"model": str(path_or_endpoint), **options})
        return cls(build_backend(cfg), cfg)

    @property
    def entropy_kind(self) -> str | None:
        return getattr(self.backend, "entropy_kind", None)

    def compare(self, images, question: str, response_1: str, response_2: str, *, samples: int | None = None,
                orders: str | None = None) -> Comparison:
        """Which of two responses to `question` about `images` is better (a path, bytes, PIL image or a list)."""
        return self.compare_many([make_pair(images, question, response_1, response_2)], samples=samples,
                                 orders=orders)[0]

    def compare_many(self, pairs: Sequence, *, samples: int | None = None, orders: str | None = None,
                     progress: bool = False, on_batch: Callable[[int], None] | None = None) -> list[Comparison]:
        """compare() for many pairs at once (batched); results in input order."""
        from egt.model.generation import JudgeRequest, judgement_seed

        samples = self.options.samples if samples is None else int(samples)
        if samples < 1:
            raise ConfigError(f"samples must be >= 1, got {samples}")
        shown = orders_for(self.options.orders if orders is None else orders)
        limits = self.options.image_limits   # every image is decoded within the judge's pixel cap
        items = [replace(pair, images=[ref.with_limits(limits) for ref in pair.images])
                 for pair in map(_as_pair, pairs)]
        requests = []
        for pair in items:
            for order in shown:
                view = pair.in_order(order)
                key = content_key(view)
                requests += [JudgeRequest(view, None if samples == 1 else judgement_seed(self.options.seed, key, k))
                             for k in range(samples)]
        if not requests:
            return []
        callback = on_batch
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(requests), unit="judgement", desc="judge", dynamic_ncols=True)

            def callback(n):
                bar.update(n)
                if on_batch is not None:
                    on_batch(n)
        try:
            judged = self.backend.run(requests, temperature=self.options.temperature, top_p=self.options.top_p,
                                      max_new_tokens=self.options.max_new_tokens, on_batch=callback)
        finally:
            if bar is not None:
                bar.close()
        per_pair = samples * len(shown)
        return [combine(shown, [judged[i * per_pair + o * samples:i * per_pair + (o + 1) * samples]
                                for o in range(len(shown))], self.entropy_kind)
                for i in range(len(items))]
