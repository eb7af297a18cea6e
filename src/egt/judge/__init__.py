"""Use a trained judge: the `Judge` API with local and endpoint backends, `egt judge` (verdicts on a
pairs file), `egt rerank` (best-of-N), the TRL rewards (`JudgeReward` in process, `ServedJudgeReward` over HTTP) and
`egt serve` (the reward service: egt.judge.serve, its client egt.judge.serve_client).

    import egt
    judge = egt.Judge("runs/rl/model")                 # or an OpenAI-compatible endpoint URL
    comparison = judge.compare(image, question, response_1, response_2)
"""

from egt.judge.api import (
    Comparison,
    Judge,
    JudgeOptions,
    LocalBackend,
    build_backend,
    image_refs,
    is_endpoint,
    make_pair,
)

__all__ = ["Comparison", "Judge", "JudgeOptions", "LocalBackend", "build_backend", "image_refs", "is_endpoint",
           "make_pair", "JudgeReward", "ServedJudgeReward"]


def __getattr__(name: str):
    """`JudgeReward` (egt.judge.trl_reward) on first use: it imports TRL."""
    if name in ("JudgeReward", "ServedJudgeReward"):
        from egt.judge import trl_reward

        return getattr(trl_reward, name)
    raise AttributeError(f"module 'egt.judge' has no attribute {name!r}")
