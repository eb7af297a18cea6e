"""The configs shipped with egt, wherever egt is installed: `egt configs list | show NAME | copy NAME DEST`.

    egt configs list                                   # names, with the stage each is for
    egt configs show qwen2.5-vl-7b/score.yaml          # print one
    egt configs copy qwen2.5-vl-7b/score.yaml my.yaml  # copy one file, or a folder, or `all`:
    egt configs copy all configs                       # ./configs as in a clone (accelerate's config points at
                                                       # configs/deepspeed/zero3.json, a path from the current folder)
    egt score --config egt:qwen2.5-vl-7b/score.yaml    # `egt:NAME` is a shipped config, for every command

Where they are. The repository's configs/ folder is installed as the package `egt.configs` (pyproject.toml maps
it), so a wheel holds them and an editable install reads the clone's; run from a source tree without
installing (PYTHONPATH=src), the clone's configs/ is used. A symlink would not do: it is not a folder on every
platform, and not in a wheel.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pydantic import Field

from egt.core.config import StageConfig
from egt.core.errors import ConfigError

PREFIX = "egt:"
_SUFFIXES = (".yaml", ".yml", ".json")


def root() -> Path:
    """The folder that holds the shipped configs."""
    try:
        import importlib.resources

        return Path(str(importlib.resources.files("egt.configs")))
    except ModuleNotFoundError:   # a source tree on PYTHONPATH: src/egt -> the clone's configs/
        return Path(__file__).resolve().parents[3] / "configs"


def names() -> list[str]:
    """Every shipped config file, relative to root() ('qwen2.5-vl-7b/score.yaml', ...)."""
    base = root()
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                  if p.is_file() and p.suffix in _SUFFIXES and "__pycache__" not in p.parts)


def resolve(name: str) -> Path:
    """The shipped file or folder `name` (an `egt:` prefix is allowed); ConfigError listing what there is."""
    name = name.removeprefix(PREFIX).strip("/")
    path = root() / name
    if not name or ".." in Path(name).parts or not path.exists():
        raise ConfigError(f"no shipped config '{name}' (egt configs list shows them: {', '.join(names())})")
    return path


def config_path(path: str | Path) -> Path:
    """A --config value as a file: `egt:NAME` is a shipped config, anything else a path."""
    text = str(path)
    return resolve(text) if text.startswith(PREFIX) else Path(path)


def stage_of(path: Path) -> str | None:
    """The stage a config is for (its `# egt: <stage>` line), 'accelerate' or 'deepspeed' by folder, else None."""
    rel = path.relative_to(root()).parts
    if rel[0] in ("accelerate", "deepspeed"):
        return f"{rel[0]} launcher config" if rel[0] == "accelerate" else "DeepSpeed config"
    match = re.search(r"^#\s*egt:\s*(.+?)\s*$", path.read_text(), re.M)
    return f"egt {match[1]}" if match else None


# ---------------------------------------------------------------- the commands

class ListConfig(StageConfig):
    pass


class ShowConfig(StageConfig):
    name: str = Field(..., description="a shipped config, e.g. qwen2.5-vl-7b/score.yaml (egt configs list)")


class CopyConfig(StageConfig):
    name: str = Field(..., description="a shipped config file or folder (qwen2.5-vl-7b), or `all`")
    dest: Path = Field(..., description="where to copy it: a file name, or a folder (created)")
    overwrite: bool = Field(False, description="replace files that exist at dest")


def list_configs(cfg: ListConfig) -> None:
    for name in names():
        print(f"{name:<42} {stage_of(root() / name) or ''}".rstrip())
    print(f"({root()}; use one with --config egt:NAME, or copy it with egt configs copy NAME DEST)")


def show_config(cfg: ShowConfig) -> None:
    path = resolve(cfg.name)
    if path.is_dir():
        raise ConfigError(f"'{cfg.name}' is a folder: egt configs list shows its files")
    print(path.read_text(), end="")


def copy_config(cfg: CopyConfig) -> Path:
    """Copy a shipped file, folder or `all` to cfg.dest; refuses to replace files unless overwrite."""
    source = root() if cfg.name == "all" else resolve(cfg.name)
    dest = Path(cfg.dest)
    if source.is_file():
        target = dest / source.name if dest.is_dir() else dest
        pairs = [(source, target)]
    else:
        base = dest if cfg.name == "all" or not dest.exists() else dest / source.name
        pairs = [(f, base / f.relative_to(source)) for f in sorted(source.rglob("*"))
                 if f.is_file() and f.suffix in _SUFFIXES]
    existing = [str(t) for _, t in pairs if t.exists()]
    if existing and not cfg.overwrite:
        raise ConfigError(f"{existing[0]} exists ({len(existing)} file(s) would be replaced): give overwrite=true or "
                          f"another dest")
    for src, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return dest if source.is_dir() else pairs[0][1]
