"""`egt configs list | show | copy` and `--config egt:NAME`: the shipped configs, wherever egt is installed."""

from __future__ import annotations

import pytest

from egt.cli import main
from egt.core import shipped


def test_list_names_each_config_and_its_stage(capsys):
    assert main(["configs", "list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-vl-7b/score.yaml" in out and "egt score" in out
    assert "accelerate/zero3_8gpu.yaml" in out and "deepspeed/zero3.json" in out


def test_show_prints_the_file(capsys):
    assert main(["configs", "show", "qwen2.5-vl-7b/curate.yaml"]) == 0
    assert capsys.readouterr().out == (shipped.root() / "qwen2.5-vl-7b" / "curate.yaml").read_text()
    assert main(["configs", "show", "qwen2.5-vl-7b/nope.yaml"]) == 1
    assert "no shipped config 'qwen2.5-vl-7b/nope.yaml' (egt configs list" in capsys.readouterr().err


def test_copy_a_file_a_folder_and_all(tmp_path, capsys):
    assert main(["configs", "copy", "qwen2.5-vl-7b/score.yaml", str(tmp_path / "mine.yaml")]) == 0
    assert (tmp_path / "mine.yaml").read_text() == (shipped.root() / "qwen2.5-vl-7b" / "score.yaml").read_text()
    assert main(["configs", "copy", "all", str(tmp_path / "configs")]) == 0
    copied = sorted(p.relative_to(tmp_path / "configs").as_posix() for p in (tmp_path / "configs").rglob("*")
                    if p.is_file())
    assert copied == shipped.names()   # ./configs as in a clone: accelerate's relative DeepSpeed path works
    assert main(["configs", "copy", "all", str(tmp_path / "configs")]) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "overwrite=true" in err
    assert main(["configs", "copy", "all", str(tmp_path / "configs"), "overwrite=true"]) == 0
    (tmp_path / "one").mkdir()
    assert main(["configs", "copy", "demo", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "demo" / "demo.yaml").is_file()


def test_egt_names_work_as_config_for_any_command(tmp_path):
    from egt.core.config import load_config
    from egt.stages import curate

    cfg = load_config(curate.Config, "egt:qwen2.5-vl-7b/curate.yaml", {"scores": str(tmp_path / "s.parquet")})
    assert cfg.n == 2500
    with pytest.raises(Exception, match="no shipped config"):
        load_config(curate.Config, "egt:../pyproject.toml", {})
