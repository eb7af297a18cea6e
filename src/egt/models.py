"""Load a judge: any Qwen2-VL-family checkpoint folder (the tiny judge, an SFT or RL output, a hub download).

    model, processor = load_judge("runs/sft/model", device="cpu", dtype="auto")

The judge's batches are built by egt.encode; the embedded tiny judge is built by
egt.tiny (`egt model tiny`).
"""

from __future__ import annotations

from pathlib import Path

from egt.errors import EgtError


def load_judge(path: str | Path, device: str = "cpu", dtype: str = "auto"):
    """(model, processor) of a saved judge, model in eval mode on `device`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(path)
    if path.exists() and not (path / "config.json").exists():
        raise EgtError(f"{path}: not a model folder (no config.json); build one with `egt model tiny --output {path}`")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch_dtype)
    processor = AutoProcessor.from_pretrained(str(path))
    model.to(device)
    model.eval()
    return model, processor


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
