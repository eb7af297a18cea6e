"""Every YAML under configs/ must load: a stage config, or an accelerate config.

A stage file names its stage in a top-level comment line `# egt: <stage>`
(`# egt: sft`, `# egt: data convert`, `# egt: model tiny`); it is validated by
that stage's Config from egt.cli's registry, so unknown keys and wrong types
fail here. Keys a stage takes as positional arguments (e.g. `scores` of
analyze) may be left out of the file. Files under configs/accelerate/ are
accelerate configs and must parse with a `compute_environment` key. Any other
YAML without the marker fails.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from egt import cli
from egt.core.config import load_config
from egt.core.errors import EgtError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
_MARKER = re.compile(r"^#\s*egt:\s*(?P<stage>.+?)\s*$", re.M)
_STAGES = {s.name: s for s in cli.TOP + cli.DATA + cli.MODEL}
_STAGES.update({f"data {s.name}": s for s in cli.DATA})
_STAGES.update({f"model {s.name}": s for s in cli.MODEL})


def check_config_file(path: Path, configs_dir: Path = CONFIGS) -> None:
    """Raise AssertionError naming the file and the problem; return if the file loads."""
    text = path.read_text()
    rel = path.relative_to(configs_dir)
    if rel.parts[0] == "accelerate":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise AssertionError(f"{path}: invalid YAML: {exc}") from None
        assert isinstance(data, dict) and "compute_environment" in data, (
            f"{path}: an accelerate config needs a top-level 'compute_environment' key")
        return
    match = _MARKER.search(text)
    assert match, (f"{path}: no '# egt: <stage>' comment line; add one naming the stage this config is for "
                   f"(one of: {', '.join(sorted(_STAGES))})")
    stage = _STAGES.get(match["stage"])
    assert stage is not None, f"{path}: unknown stage '{match['stage']}' (known: {', '.join(sorted(_STAGES))})"
    try:
        module = importlib.import_module(stage.module)
    except ImportError as exc:
        raise AssertionError(f"{path}: stage module {stage.module} cannot be imported ({exc})") from None
    cfg_cls = getattr(module, stage.config)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        data = {}  # load_config reports it with the file name
    positional = {key: "POSITIONAL" for key in stage.positional if not isinstance(data, dict) or key not in data}
    try:
        load_config(cfg_cls, path, positional)
    except EgtError as exc:
        raise AssertionError(str(exc)) from None


def _yaml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


FILES = _yaml_files(CONFIGS) if CONFIGS.exists() else []


@pytest.mark.parametrize("path", FILES or [None], ids=[str(p.relative_to(CONFIGS)) for p in FILES] or ["none"])
def test_config_file_loads(path):
    if path is None:
        pytest.skip("configs/ has no YAML files yet")
    check_config_file(path)


# ---------------------------------------------------------------- the checker itself

def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_checker_accepts_good_files(tmp_path):
    check_config_file(_write(tmp_path, "demo/convert.yaml",
                             "# egt: data convert\nformat: mmrb\ninput: all_data.json\noutput: p.parquet\n"), tmp_path)
    check_config_file(_write(tmp_path, "demo/inspect.yaml", "# egt: inspect\ncheck_images: true\n"), tmp_path)
    check_config_file(_write(tmp_path, "accelerate/ddp.yaml",
                             "compute_environment: LOCAL_MACHINE\nnum_processes: 8\n"), tmp_path)


@pytest.mark.parametrize("rel, text, message", [
    ("demo/x.yaml", "format: mmrb\n", "no '# egt: <stage>' comment line"),
    ("demo/x.yaml", "# egt: nosuchstage\na: 1\n", "unknown stage 'nosuchstage'"),
    ("demo/x.yaml", "# egt: convert\nformat: mmrb\ninput: i\noutput: o\nbogus: 1\n", "unknown key 'bogus'"),
    ("demo/x.yaml", "# egt: convert\nformat: mmrb\ninput: i\noutput: o\nswap: maybe\n", "'swap'"),
    ("demo/x.yaml", "# egt: convert\nformat: [unclosed\n", "invalid YAML"),
    ("accelerate/x.yaml", "num_processes: 2\n", "compute_environment"),
])
def test_checker_rejects_bad_files(tmp_path, rel, text, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_config_file(_write(tmp_path, rel, text), tmp_path)


# ---------------------------------------------------------------- installed with the package, disk stated

def test_every_config_is_shipped_and_loads_by_its_egt_name():
    from egt.core import shipped

    assert shipped.names() == sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*")
                                     if p.suffix in (".yaml", ".yml", ".json"))
    for name in shipped.names():
        if name.endswith((".yaml", ".yml")) and not name.startswith("accelerate/"):
            stage = _STAGES[_MARKER.search((CONFIGS / name).read_text())["stage"]]
            cfg_cls = getattr(importlib.import_module(stage.module), stage.config)
            load_config(cfg_cls, f"egt:{name}", {key: "POSITIONAL" for key in stage.positional})


def test_the_package_list_names_every_package_and_data_folder():
    import tomllib

    pyproject = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(pyproject["packages"])
    src = CONFIGS.parent / "src"
    packages = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    data = {".".join(p.relative_to(src).parts) for p in (src / "egt" / "assets").iterdir() if p.is_dir()}
    config_dirs = {f"egt.configs.{p.name}" for p in CONFIGS.iterdir()
                   if p.is_dir() and p.name.isidentifier() and p.name != "__pycache__"}  # bytecode once imported
    assert packages | data | config_dirs | {"egt.configs"} == listed
    assert pyproject["package-dir"]["egt.configs"] == "configs"


def test_each_training_config_states_its_checkpoint_disk():
    import sys

    sys.path.insert(0, str(CONFIGS.parent / "benchmarks"))
    import checkpoint_disk

    stale = [name for name, disk in checkpoint_disk.rows()
             if checkpoint_disk.yaml_comment_lines()[name] != [checkpoint_disk.comment(disk)]]
    assert not stale, f"rewrite the `# Disk:` lines: python benchmarks/checkpoint_disk.py --write ({stale})"
    totals = {name: disk for name, disk in checkpoint_disk.rows() if disk is not None}
    assert set(totals) == {"sft_full_zero3.yaml", "sft_lora_1gpu.yaml", "rl_zero3_vllm.yaml"}
    assert 200e9 < totals["sft_full_zero3.yaml"]["total"] < 300e9   # 2 ZeRO-3 checkpoints of a 7B + model/
