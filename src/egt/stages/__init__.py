"""The EGT stages, each `run(cfg) -> Path` with its `Config`: distill, sft, score, analyze,
curate (+ curriculum), rl (+ rewards), evaluate (+ metrics, abstention)."""
