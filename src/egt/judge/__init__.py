"""Use a trained judge: the `Judge` API with local and endpoint backends, `egt judge` (verdicts on a
pairs file), `egt rerank` (best-of-N), and the TRL reward (`JudgeReward`).

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
           "make_pair", "JudgeReward"]


def __getattr__(name: str):
    """`JudgeReward` (egt.judge.trl_reward) on first use: it imports TRL."""
    if name == "JudgeReward":
        from egt.judge.trl_reward import JudgeReward

        return JudgeReward
    raise AttributeError(f"module 'egt.judge' has no attribute {name!r}")
