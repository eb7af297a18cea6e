"""A trained judge as the reward of policy RL: `JudgeReward`, a TRL reward function.

    from egt.judge.trl_reward import JudgeReward
    reward = JudgeReward("runs/sft/model", mode="reference", reference_column="reference")
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], train_dataset=dataset, args=GRPOConfig(...))

The policy is any VLM trained with TRL's GRPOTrainer on rows with a `prompt`, `images` (or
`image`), and for `mode="reference"` a reference answer. TRL calls the reward with
`(prompts, completions, completion_ids, **columns)` (TRL's reward-function convention) and
JudgeReward returns one float per completion:

- `mode="reference"`: each completion is compared with its row's reference answer
  (`reference_column`); the reward is the completion's win probability, its vote share in that
  comparison (egt.judge.api: both orders by default, `samples` judgements per order): 1 = the judge
  always prefers it, 0.5 = a tie, 0 = never (a judgement without a verdict counts for neither).
- `mode="round_robin"`: no reference; within each group of completions for one prompt (TRL
  puts a prompt's `num_generations` completions next to each other: a group is a run of rows
  with the same prompt and question, or `group_size` rows) every two completions meet once and
  a completion's reward is its mean vote share against its group-mates.

The question shown to the judge is the row's `question_column` when the dataset has it, else
the text of the prompt's last user message. Judgements are seeded by content (egt.judge.api), so
the same completion against the same reference always gets the same reward. Each call logs,
through TRL's `log_metric`, `judge_reward/orders_agree` (share of comparisons whose two orders
agree), `judge_reward/no_verdict` (share of judgements without one) and, when available,
`judge_reward/max_entropy` (mean max-token entropy, nats).

`ServedJudgeReward` is the same reward over HTTP, from an `egt serve` service (docs/serve.md):

    from egt.judge.trl_reward import ServedJudgeReward
    reward = ServedJudgeReward("http://127.0.0.1:8100", mode="reference")     # or mode="round_robin"

Its reward is the service's answer probability, not a vote share: `reference` mode gives
P(completion better than the reference), both orders averaged (POST /v1/score); `round_robin`
gives each completion's mean probability of beating its group-mates (POST /v1/rank). A reward the
judge could not read is None (TRL leaves that row out of the group statistics); `on_abstain`
says what an abstained pair gets: "keep" its probability (default), "none", or a number. Each
call logs `<name>/orders_agree`, `<name>/abstain` and `<name>/answer_forced` through log_metric.
Images (PIL, bytes, paths) are sent inline; the client retries a busy or restarting service
(egt.judge.serve_client).

Departure: the paper trains the judge; using it as a policy's reward is egt's.
"""

from __future__ import annotations

from typing import Any, Literal

from egt.judge.api import Judge, make_pair
from egt.stages.rewards import completion_text


def prompt_question(prompt: Any) -> str:
    """The text of a prompt: a string, or the text parts of the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        if users:
            return completion_text([users[-1]])
    return completion_text(prompt)


def group_bounds(keys: list, group_size: int | None = None) -> list[tuple[int, int]]:
    """[start, end) of each group: runs of equal keys, or consecutive blocks of `group_size`."""
    if group_size:
        return [(s, min(s + group_size, len(keys))) for s in range(0, len(keys), group_size)]
    bounds, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            bounds.append((start, i))
            start = i
    return bounds


class JudgeReward:
    """TRL reward function scoring policy completions with a trained judge (module docstring)."""

    def __init__(self, judge: Judge | str, *, mode: Literal["reference", "round_robin"] = "reference",
                 reference_column: str = "reference", question_column: str = "question",
                 samples: int | None = None, orders: str | None = None, group_size: int | None = None,
                 name: str = "judge_reward", **options):
        if mode not in ("reference", "round_robin"):
            raise ValueError(f"mode must be 'reference' or 'round_robin', got {mode!r}")
        self.judge = judge if isinstance(judge, Judge) else Judge.from_pretrained(judge, **options)
        self.mode, self.reference_column, self.question_column = mode, reference_column, question_column
        self.samples, self.orders, self.group_size = samples, orders, group_size
        self.__name__ = name  # TRL logs rewards/<name>/mean and /std

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float]:
        n = len(completions)
        texts = [completion_text(c) for c in completions]
        questions = columns.get(self.question_column) or [prompt_question(p) for p in prompts]
        images = columns.get("images") or [([i] if i is not None else []) for i in columns.get("image") or [None] * n]
        if self.mode == "reference":
            if self.reference_column not in columns:
                raise ValueError(f"JudgeReward(mode='reference') needs a '{self.reference_column}' column; "
                                 f"the dataset has {sorted(k for k in columns if k not in ('trainer_state',))}")
            pairs = [make_pair(images[i], questions[i], texts[i], columns[self.reference_column][i]) for i in range(n)]
            results = self.judge.compare_many(pairs, samples=self.samples, orders=self.orders)
            rewards = [c.vote_share[0] for c in results]
        else:
            keys = [(repr(p), q) for p, q in zip(prompts, questions)]
            matches = [(i, j) for start, end in group_bounds(keys, self.group_size)
                       for i in range(start, end) for j in range(i + 1, end)]
            pairs = [make_pair(images[i], questions[i], texts[i], texts[j]) for i, j in matches]
            results = self.judge.compare_many(pairs, samples=self.samples, orders=self.orders)
            won = [[] for _ in range(n)]
            for (i, j), c in zip(matches, results):
                won[i].append(c.vote_share[0])
                won[j].append(c.vote_share[1])
            rewards = [sum(w) / len(w) if w else 0.5 for w in won]  # a group of one has nobody to beat
        self._log(columns.get("log_metric"), results)
        return [float(r) for r in rewards]

    @staticmethod
    def _log(log_metric, results) -> None:
        if not callable(log_metric) or not results:
            return
        agree = [c.orders_agree for c in results if c.orders_agree is not None]
        if agree:
            log_metric("judge_reward/orders_agree", sum(agree) / len(agree))
        traces = [t for c in results for t in c.traces]
        log_metric("judge_reward/no_verdict", sum(t.verdict is None for t in traces) / max(len(traces), 1))
        entropies = [c.entropies["max"] for c in results if c.entropies.get("max") is not None]
        if entropies:
            log_metric("judge_reward/max_entropy", sum(entropies) / len(entropies))


class ServedJudgeReward:
    """TRL reward function that asks an `egt serve` service (module docstring)."""

    def __init__(self, url: str | None = None, *, mode: Literal["reference", "round_robin"] = "reference",
                 reference_column: str = "reference", question_column: str = "question",
                 group_size: int | None = None, on_abstain: Literal["keep", "none"] | float = "keep",
                 chunk_size: int = 64, name: str = "served_judge", client=None, **client_options):
        from egt.judge.serve_client import ServeClient

        if mode not in ("reference", "round_robin"):
            raise ValueError(f"mode must be 'reference' or 'round_robin', got {mode!r}")
        if not (on_abstain in ("keep", "none") or isinstance(on_abstain, (int, float))):
            raise ValueError(f"on_abstain must be 'keep', 'none' or a number, got {on_abstain!r}")
        self.client = client or ServeClient(url, **client_options)
        self.mode, self.reference_column, self.question_column = mode, reference_column, question_column
        self.group_size, self.on_abstain, self.chunk_size = group_size, on_abstain, chunk_size
        self.__name__ = name  # TRL logs rewards/<name>/mean and /std

    def _value(self, reward: float | None, abstain: bool) -> float | None:
        if reward is None or not abstain or self.on_abstain == "keep":
            return reward
        return None if self.on_abstain == "none" else float(self.on_abstain)

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float | None]:
        n = len(completions)
        texts = [completion_text(c) for c in completions]
        questions = columns.get(self.question_column) or [prompt_question(p) for p in prompts]
        images = columns.get("images") or [([i] if i is not None else []) for i in columns.get("image") or [None] * n]
        results: list[dict] = []
        if self.mode == "reference":
            if self.reference_column not in columns:
                raise ValueError(f"ServedJudgeReward(mode='reference') needs a '{self.reference_column}' column; "
                                 f"the dataset has {sorted(k for k in columns if k not in ('trainer_state',))}")
            references = columns[self.reference_column]
            rewards: list[float | None] = []
            for start in range(0, n, self.chunk_size):
                rows = range(start, min(n, start + self.chunk_size))
                answer = self.client.score([{"images": images[i], "question": questions[i], "response": texts[i],
                                             "reference": references[i]} for i in rows])
                results += answer["results"]
                rewards += [self._value(r, res["abstain"]) for r, res in zip(answer["rewards"], answer["results"])]
        else:
            rewards = [0.5] * n  # a group of one has nobody to beat
            keys = [(repr(p), q) for p, q in zip(prompts, questions)]
            for start, end in group_bounds(keys, self.group_size):
                if end - start > 1:
                    rewards[start:end] = self.client.rank(questions[start], texts[start:end], images[start])["rewards"]
        self._log(columns.get("log_metric"), results)
        return rewards

    def _log(self, log_metric, results: list[dict]) -> None:
        if not callable(log_metric) or not results:
            return
        for key in ("orders_agree", "abstain"):
            log_metric(f"{self.__name__}/{key}", sum(bool(r[key]) for r in results) / len(results))
        log_metric(f"{self.__name__}/answer_forced", sum(r["answer_forced"] for r in results) / len(results))
