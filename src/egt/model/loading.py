"""Load a judge: a checkpoint folder of any family in egt.model.families (a tiny judge, an SFT or RL output, a hub download).

    model, processor = load_judge("runs/sft/model", device="cpu", dtype="auto")

The judge's batches are built by egt.model.encoding; the embedded tiny judge is built by
egt.tiny.build (`egt model tiny`). `dtype` names are checked when a config is loaded
(`TorchDtype`, used by `egt score` and `egt eval`), so a typo is a config error
naming the key rather than a failure after the data is read.

Image-size caps. Every command that builds a processor (sft, rl, score, eval, judge, rerank, distill's
local teacher) takes `processor_max_pixels` / `processor_min_pixels` (None: the checkpoint's own
settings). A Qwen processor's default lets one large image cost thousands of visual tokens (up to
12.8 MP: 16,384 tokens for Qwen2.5-VL); the cap resizes each image into the range first. What a cap
sets depends on the family (egt.model.families.IMAGE_SIZE_CAPS): max/min pixels for the Qwen
families, the tile count for InternVL, the longest edge for SmolVLM, the grid resolutions for
LLaVA-OneVision; Gemma 3 resizes every image to one size, so a cap there is an error. `egt sft` saves
its processor with the caps into `<output>/model`, so every later stage (and vLLM, which reads the
checkpoint's preprocessor_config.json) sees the same image sizes without repeating them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from egt.core.errors import ConfigError, EgtError, MissingDependency
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


MAX_PIXELS_HELP = ("cap on the pixels of one image before the processor (None: the checkpoint's own; "
                   "egt.model.loading: max_pixels for Qwen, tiles for InternVL, ...)")
MIN_PIXELS_HELP = "Qwen families: images below this many pixels are enlarged (None: the checkpoint's own)"


def processor_size_kwargs(path: str | Path, max_pixels: int | None = None, min_pixels: int | None = None,
                          for_vllm: bool = False) -> dict:
    """AutoProcessor.from_pretrained keyword arguments that cap the image size of the model at `path` (module doc);
    `for_vllm`: vLLM's mm_processor_kwargs instead (max_pixels / min_pixels for the Qwen families)."""
    if max_pixels is None and min_pixels is None:
        return {}
    if max_pixels is not None and min_pixels is not None and min_pixels > max_pixels:
        raise ConfigError(f"processor_min_pixels={min_pixels} is above processor_max_pixels={max_pixels}")
    from transformers import AutoConfig, AutoImageProcessor

    from egt.model.families import family_of

    family = family_of(AutoConfig.from_pretrained(str(path)))
    if min_pixels is not None and family.image_size != "pixels":
        raise ConfigError(f"processor_min_pixels applies to the Qwen families only; {family.title} processors "
                          f"have no minimum size")
    if family.image_size == "fixed":
        raise ConfigError(f"processor_max_pixels: a {family.title} processor resizes every image to one size, so "
                          f"there is nothing to cap (leave it unset)")
    if family.image_size == "pixels" and for_vllm:
        return {k: v for k, v in (("max_pixels", max_pixels), ("min_pixels", min_pixels)) if v is not None}
    current = AutoImageProcessor.from_pretrained(str(path))
    size = {k: v for k, v in dict(current.size or {}).items() if v is not None}
    if family.image_size == "pixels":   # `size` (min_pixels= / max_pixels= are deprecated in transformers 5.2x)
        return {"size": {"shortest_edge": min_pixels if min_pixels is not None else size["shortest_edge"],
                         "longest_edge": max_pixels if max_pixels is not None else size["longest_edge"]}}
    if family.image_size == "tiles":
        tile = (size.get("height") or 448) * (size.get("width") or 448)
        return {"max_patches": max(1, max_pixels // tile)}
    if family.image_size == "longest_edge":
        tile = dict(current.max_image_size)["longest_edge"]
        return {"size": {"longest_edge": max(tile, math.isqrt(max_pixels) // tile * tile)}}
    pinpoints = [list(p) for p in current.image_grid_pinpoints]   # "pinpoints"
    kept = [p for p in pinpoints if p[0] * p[1] <= max_pixels] or [min(pinpoints, key=lambda p: p[0] * p[1])]
    return {"image_grid_pinpoints": kept}


FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def check_attention(attn_implementation: str | None) -> None:
    """One-line error, before any model loads, for a flash attention that cannot run here: the package (the extra
    `flash`) is not installed, or there is no CUDA GPU."""
    module = FLASH_PACKAGES.get(attn_implementation or "")
    if module is None:
        return
    import importlib.util

    import torch

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(module.replace("_", "-"), "flash", f"attn_implementation={attn_implementation}",
                                "or set attn_implementation: sdpa")
    if not torch.cuda.is_available():
        raise ConfigError(f"attn_implementation={attn_implementation} needs a CUDA GPU and this machine has none; "
                          f"set attn_implementation: sdpa")


def load_processor(path: str | Path, max_pixels: int | None = None, min_pixels: int | None = None, **kwargs):
    """AutoProcessor of `path` with the image-size caps (processor_size_kwargs); `kwargs` go to from_pretrained."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path), **processor_size_kwargs(path, max_pixels, min_pixels), **kwargs)


def model_load_error(path: str | Path, exc: BaseException) -> EgtError:
    """One line for a model that cannot be loaded: truncated or corrupt weights, a bad config, ..."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return EgtError(f"{path}: cannot load the model ({type(exc).__name__}: {first}) "
                    f"(its files may be truncated or corrupt: rebuild or copy the model again)")


def load_model_and_processor(path: str | Path, max_pixels: int | None = None, min_pixels: int | None = None,
                             **model_kwargs):
    """AutoModelForImageTextToText + AutoProcessor of `path` (image-size caps: processor_size_kwargs); any failure
    is one EgtError naming it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    check_model_folder(path)
    check_dependencies(path)
    check_attention(model_kwargs.get("attn_implementation"))
    size_kwargs = processor_size_kwargs(path, max_pixels, min_pixels)   # a ConfigError before the weights load
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(path), **model_kwargs)
        processor = AutoProcessor.from_pretrained(str(path), **size_kwargs)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # safetensors, json, tokenizers and OS errors all mean: these files are bad
        raise model_load_error(path, exc) from exc
    return model, processor


def load_judge(path: str | Path, device: str = "cpu", dtype: str = "auto", max_pixels: int | None = None,
               min_pixels: int | None = None):
    """(model, processor) of a saved judge, model in eval mode on `device` (image-size caps: processor_size_kwargs)."""
    import torch

    try:
        dtype = canonical_dtype(dtype)
    except ValueError as exc:
        raise ConfigError(f"dtype: {exc} (got {dtype!r})") from None
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model, processor = load_model_and_processor(path, max_pixels, min_pixels, dtype=torch_dtype)
    model.to(device)
    model.eval()
    return model, processor


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
