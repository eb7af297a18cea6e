"""Load a judge: a checkpoint folder of any family in egt.model.families (a tiny judge, an SFT or RL output, a hub download).

    model, processor = load_judge("runs/sft/model", device="cpu", dtype="auto")

The judge's batches are built by egt.model.encoding; the embedded tiny judge is built by
egt.tiny.build (`egt model tiny`). `dtype` names are checked when a config is loaded
(`TorchDtype`, used by `egt score` and `egt eval`), so a typo is a config error
naming the key rather than a failure after the data is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from egt.core.errors import ConfigError, EgtError
from egt.model.families import check_dependencies

DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def canonical_dtype(name: str) -> str:
    """'auto', 'float32', 'bfloat16' or 'float16' (aliases fp32, bf16, fp16); ValueError otherwise."""
    canonical = DTYPE_ALIASES.get(name, name)
    if canonical not in DTYPES:
        raise ValueError(f"must be one of {', '.join(DTYPES)} (or {', '.join(DTYPE_ALIASES)})")
    return canonical


TorchDtype = Annotated[str, AfterValidator(canonical_dtype)]


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def check_model_folder(path: str | Path) -> None:
    """EgtError naming the folder when `path` is not a loadable model folder (a hub id passes)."""
    path = Path(path)
    if not path.exists():
        if _looks_like_hub_id(str(path)):
            return
        raise EgtError(f"{path}: model folder not found (give a checkpoint folder, e.g. one `egt sft` or "
                       f"`egt model tiny` wrote)")
    if not path.is_dir():
        raise EgtError(f"{path}: not a model folder, a file (give the folder that holds config.json)")
    if not (path / "config.json").exists():
        raise EgtError(f"{path}: not a model folder, no config.json (build one with `egt model tiny --output {path}`, "
                       f"or give the folder `egt sft` wrote)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any(path.glob("*.bin")):
        raise EgtError(f"{path}: model folder without weights, no *.safetensors or *.bin file "
                       f"(copy the model again, or give the folder `egt sft` wrote)")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EgtError(f"{path / 'config.json'}: not readable JSON ({type(exc).__name__}) "
                       f"(the file is truncated or corrupt: rebuild or copy the model again)") from None
    from safetensors import safe_open

    for file in weights:  # reads each header only: a truncated file fails here, before any work
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception as exc:  # SafetensorError is a bare Exception
            raise EgtError(f"{file}: not a readable safetensors file ({str(exc).splitlines()[0][:200]}) "
                           f"(the file is truncated or corrupt: rebuild or copy the model again)") from None


def model_load_error(path: str | Path, exc: BaseException) -> EgtError:
    """One line for a model that cannot be loaded: truncated or corrupt weights, a bad config, ..."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return EgtError(f"{path}: cannot load the model ({type(exc).__name__}: {first}) "
                    f"(its files may be truncated or corrupt: rebuild or copy the model again)")


def load_model_and_processor(path: str | Path, **model_kwargs):
    """AutoModelForImageTextToText + AutoProcessor of `path`; any failure is one EgtError naming it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    check_model_folder(path)
    check_dependencies(path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(path), **model_kwargs)
        processor = AutoProcessor.from_pretrained(str(path))
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # safetensors, json, tokenizers and OS errors all mean: these files are bad
        raise model_load_error(path, exc) from exc
    return model, processor


def load_judge(path: str | Path, device: str = "cpu", dtype: str = "auto"):
    """(model, processor) of a saved judge, model in eval mode on `device`."""
    import torch

    try:
        dtype = canonical_dtype(dtype)
    except ValueError as exc:
        raise ConfigError(f"dtype: {exc} (got {dtype!r})") from None
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model, processor = load_model_and_processor(path, dtype=torch_dtype)
    model.to(device)
    model.eval()
    return model, processor


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
