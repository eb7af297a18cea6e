"""egt — Entropy-Guided Training of multimodal reasoning reward models.

The pipeline (arXiv 2602.01884): distill teacher traces with a fidelity filter
(`egt distill`), SFT the judge (`egt sft`), score the RL pool by the judge's own
entropy (`egt score`), analyse and curate it (`egt analyze`, `egt curate`), run
GRPO in low-to-high entropy order (`egt rl`), and evaluate on the reward
benchmarks (`egt eval`). `egt demo` runs all of it on a tiny local judge.
"""

__version__ = "0.1.0"

__all__ = ["Judge", "Comparison"]


def __getattr__(name: str):
    """`egt.Judge`, `egt.Comparison` (egt.judge.api), imported on first use so `import egt` stays light."""
    if name in __all__:
        from egt.judge import api

        return getattr(api, name)
    raise AttributeError(f"module 'egt' has no attribute {name!r}")
