"""A judge served behind an OpenAI-compatible chat-completions endpoint (`vllm serve`, SGLang, a hosted API).

    vllm serve runs/sft/model --port 8000 --api-key "$JUDGE_KEY" --max-logprobs 20
    judge = egt.Judge.from_pretrained("http://localhost:8000/v1", api_key_env="JUDGE_KEY", vocab_size=152064)

Each judgement is one request: the judge prompt of egt.core.prompts (image parts first, as
`judge_messages` orders them, images as base64 data URLs), `max_tokens`, and for K > 1
samples `temperature`, `top_p` and the judgement's own `seed` (egt.model.generation.judgement_seed;
vLLM honours per-request seeds); a greedy judgement (K = 1) asks for temperature 0.

Entropies. The request asks for `logprobs` and `top_logprobs` (k <= 20). A server returns the
top-k log-probabilities only, so the full-vocabulary entropy of each step is bounded, never
estimated (egt.model.entropy.topk_entropy_bounds, with the judge's `vocab_size`); the per-response
values (answer, sentence, mean, max) are computed from the upper bounds (`entropy`, what
abstention uses) and from the lower bounds (`entropy_lower`). vLLM returns log-probs of the raw
logits (its default `logprobs_mode`), i.e. at temperature 1 whatever the sampling temperature.
Which characters each token wrote comes from the tokens' raw `bytes`
(egt.model.spans.spans_from_token_bytes). The judgement's text is the decoded token stream,
cut to the message content when the content is its prefix (a stop token such as `<|im_end|>`
is dropped); a server that moves the reasoning into `reasoning_content` is read from the stream.
A reply without log-probs (or without the top-k alternatives at some step) gives a judgement
without entropies.

Errors are one line: a refused request (401, 403, 404) stops the run naming the URL and the
key's variable (never the key); other failures are retried by the client `max_retries` times
and then stop the run (a rerun of `egt judge` resumes).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from egt.core.errors import ConfigError, EgtError
from egt.model.entropy import ScoredJudgement


class EndpointBackend:
    def __init__(self, base_url: str, served_model: str | None = None, api_key_env: str | None = None,
                 top_logprobs: int = 20, vocab_size: int = 152064, concurrency: int = 8, timeout_s: float = 120.0,
                 max_retries: int = 2, sentence_agg: str = "mean"):
        import openai

        api_key = "EMPTY"
        if api_key_env:
            if os.environ.get(api_key_env) is None:
                raise ConfigError(f"judge endpoint: environment variable {api_key_env} (api_key_env) is not set")
            api_key = os.environ[api_key_env]
        self.openai = openai
        self.base_url, self.api_key_env = base_url, api_key_env
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
        self.top_logprobs, self.vocab_size = top_logprobs, vocab_size
        self.concurrency, self.sentence_agg = concurrency, sentence_agg
        self.entropy_kind = "upper_bound" if top_logprobs else None
        self.model = served_model or self._only_model()
        self.name = f"{base_url} ({self.model})"

    # ------------------------------------------------------------ errors

    def _fail(self, exc: Exception) -> EgtError:
        openai = self.openai
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)):
            key = f", and {self.api_key_env}" if self.api_key_env else ""
            return EgtError(f"judge endpoint {self.base_url} refused the request (HTTP {exc.status_code}): "
                            f"check the URL, served_model{key}")
        if isinstance(exc, openai.APIStatusError):
            message = " ".join(str(getattr(exc, "message", "") or "").split())[:200]
            return EgtError(f"judge endpoint {self.base_url}: HTTP {exc.status_code} ({message})")
        return EgtError(f"judge endpoint {self.base_url}: {type(exc).__name__} after retries")

    def _only_model(self) -> str:
        try:
            names = [m.id for m in self.client.models.list()]
        except self.openai.APIError as exc:
            raise self._fail(exc) from None
        if len(names) != 1:
            raise ConfigError(f"judge endpoint {self.base_url} serves {len(names)} models "
                              f"({', '.join(names[:5]) or 'none'}): name one with served_model")
        return names[0]

    # ------------------------------------------------------------ requests

    def messages(self, pair) -> list[dict]:
        from egt.core.prompts import judge_prompt_text

        content = [{"type": "image_url", "image_url": {"url": _data_url(ref)}} for ref in pair.images]
        content.append({"type": "text", "text": judge_prompt_text(pair.question, pair.response_1, pair.response_2)})
        return [{"role": "user", "content": content}]

    def _request(self, request, temperature: float, top_p: float, max_new_tokens: int) -> dict:
        kwargs = {"model": self.model, "messages": self.messages(request.pair), "max_tokens": max_new_tokens}
        if request.seed is None:
            kwargs["temperature"] = 0.0
        else:
            kwargs.update(temperature=temperature, top_p=top_p, seed=int(request.seed))
        if self.top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=self.top_logprobs)
        return kwargs

    def judge_one(self, request, temperature: float, top_p: float, max_new_tokens: int) -> ScoredJudgement:
        try:
            response = self.client.chat.completions.create(**self._request(request, temperature, top_p,
                                                                            max_new_tokens))
        except self.openai.APIError as exc:
            raise self._fail(exc) from None
        return self.read_choice(response)

    def read_choice(self, response) -> ScoredJudgement:
        from egt.core.prompts import parse_verdict
        from egt.model.entropy import response_entropies

        choice = response.choices[0]
        content = choice.message.content or ""
        reasoning = getattr(choice.message, "reasoning_content", None) or getattr(choice.message, "reasoning", None)
        if isinstance(reasoning, str) and reasoning.strip() and "<think>" not in content:
            content = f"<think>{reasoning.strip()}</think>{content}"
        truncated = choice.finish_reason == "length"
        tokens = list(getattr(choice.logprobs, "content", None) or []) if choice.logprobs is not None else []
        if not tokens or not all(getattr(t, "top_logprobs", None) for t in tokens):
            # No log-probs, or only the chosen tokens' (not the top k): no bound holds for every step.
            usage = getattr(response, "usage", None)
            n_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            return ScoredJudgement(content, parse_verdict(content), n_tokens, truncated)
        text, spans, upper, lower = self.token_entropies(tokens, content)
        return ScoredJudgement(text, parse_verdict(text), len(upper), truncated,
                               response_entropies(text, spans, upper, self.sentence_agg),
                               response_entropies(text, spans, lower, self.sentence_agg))

    def token_entropies(self, tokens: Sequence, content: str) -> tuple[str, list, list, list]:
        """(text, token spans, per-token upper bounds, lower bounds) from a reply's log-probs (module doc)."""
        import torch

        from egt.model.entropy import topk_entropy_bounds
        from egt.model.spans import spans_from_token_bytes

        raw = [bytes(t.bytes) if getattr(t, "bytes", None) is not None else (t.token or "").encode("utf-8")
               for t in tokens]
        text, spans = spans_from_token_bytes(raw)
        if text != content and text.startswith(content) and content:
            keep = next((i for i, (start, _) in enumerate(spans) if start >= len(content)), len(spans))
            tokens, raw = tokens[:keep], raw[:keep]
            text, spans = spans_from_token_bytes(raw)
        lower, upper = [], []
        for token in tokens:
            top = sorted((lp.logprob for lp in token.top_logprobs), reverse=True)
            lo, up = topk_entropy_bounds(torch.tensor(top[:self.top_logprobs or None], dtype=torch.float64),
                                         self.vocab_size)
            lower.append(float(lo))
            upper.append(float(up))
        return text, spans, upper, lower

    def run(self, requests, *, temperature: float, top_p: float, max_new_tokens: int,
            on_batch: Callable[[int], None] | None = None) -> list[ScoredJudgement]:
        def one(request):
            result = self.judge_one(request, temperature, top_p, max_new_tokens)
            if on_batch is not None:
                on_batch(1)
            return result

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, requests))


def _data_url(ref) -> str:
    """Base64 data URL of an image within the ref's pixel cap (egt.core.images.encoded_image): the file's
    own bytes when web-safe, else PNG; the image root is checked by the ref."""
    import base64

    data, mime = ref.encoded()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
