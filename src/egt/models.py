"""Load a judge: a checkpoint folder of any family in egt.families (a tiny judge, an SFT or RL output, a hub download).

    model, processor = load_judge("runs/sft/model", device="cpu", dtype="auto")

The judge's batches are built by egt.encode; the embedded tiny judge is built by
egt.tiny (`egt model tiny`). `dtype` names are checked when a config is loaded
(`TorchDtype`, used by `egt score` and `egt eval`), so a typo is a config error
naming the key rather than a failure after the data is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from egt.errors import ConfigError, EgtError
from egt.families import check_dependencies

DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def canonical_dtype(name: str) -> str:
    """'auto', 'float32', 'bfloat16' or 'float16' (aliases fp32, bf16, fp16); ValueError otherwise."""
    canonical = DTYPE_ALIASES.get(name, name)
    if canonical not in DTYPES:
        raise ValueError(f"must be one of {', '.join(DTYPES)} (or {', '.join(DTYPE_ALIASES)})")
    return canonical


TorchDtype = Annotated[str, AfterValidator(canonical_dtype)]


def load_judge(path: str | Path, device: str = "cpu", dtype: str = "auto"):
    """(model, processor) of a saved judge, model in eval mode on `device`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        dtype = canonical_dtype(dtype)
    except ValueError as exc:
        raise ConfigError(f"dtype: {exc} (got {dtype!r})") from None
    path = Path(path)
    if path.exists() and not (path / "config.json").exists():
        raise EgtError(f"{path}: not a model folder (no config.json); build one with `egt model tiny --output {path}`")
    check_dependencies(path)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch_dtype)
    processor = AutoProcessor.from_pretrained(str(path))
    model.to(device)
    model.eval()
    return model, processor


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
