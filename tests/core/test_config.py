"""Stage configs: YAML + overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from egt.core.config import StageConfig, load_config, parse_overrides, save_config
from egt.core.errors import ConfigError


class Inner(StageConfig):
    lr: float = 1e-5
    steps: int = 10


class Demo(StageConfig):
    output: Path
    samples: int = 4
    temperature: float = 1.0
    swap: bool = False
    name: str = "x"
    tags: list[str] = []
    optim: Inner = Inner()


def test_override_forms():
    assert parse_overrides(["samples=8", "--temperature", "0.7", "--name=abc", "--swap", "optim.lr=0.1",
                            "--optim.steps", "3", "--tags", "[a, b]"]) == {
        "samples": 8, "temperature": 0.7, "name": "abc", "swap": True, "optim": {"lr": 0.1, "steps": 3},
        "tags": ["a", "b"]}
    assert parse_overrides(["--dry-run"]) == {"dry_run": True}
    assert parse_overrides(["--swap", "--samples", "2"]) == {"swap": True, "samples": 2}


def test_flag_before_key_value_is_a_flag():
    assert parse_overrides(["--swap", "samples=2"]) == {"swap": True, "samples": 2}


def test_unparsable_argument():
    with pytest.raises(ConfigError, match="cannot parse argument 'oops'"):
        parse_overrides(["oops"])


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: runs/a\nsamples: 2\noptim:\n  lr: 0.5\n")
    cfg = load_config(Demo, path, ["samples=8", "--optim.steps", "7"])
    assert (cfg.samples, cfg.optim.lr, cfg.optim.steps, cfg.output) == (8, 0.5, 7, Path("runs/a"))
    again = load_config(Demo, save_config(cfg, tmp_path / "saved.yaml"))
    assert again == cfg


def test_unknown_key_names_key_and_known_keys():
    with pytest.raises(ConfigError) as err:
        load_config(Demo, None, ["output=o", "sampels=3"])
    assert "unknown key 'sampels'" in str(err.value) and "samples" in str(err.value)


def test_unknown_nested_key_names_dotted_key():
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(Demo, None, ["output=o", "optim.lrr=1"])


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Demo, None, ["output=o", "samples=many"])
    assert "'samples'" in str(err.value) and "'many'" in str(err.value)
    path = tmp_path / "c.yaml"
    path.write_text("output: o\noptim:\n  steps: lots\n")
    with pytest.raises(ConfigError, match=r"'optim.steps'.*\(got 'lots'\)") as err:
        load_config(Demo, path)
    assert str(path) in str(err.value)


def test_missing_required_key_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="'output': Field required"):
        load_config(Demo, None, [])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Demo, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Demo, tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Demo, tmp_path / "bad.yaml")


def test_assignment_is_validated():
    cfg = load_config(Demo, None, {"output": "o"})
    with pytest.raises(Exception):
        cfg.samples = "many"


def test_several_bare_values_after_one_key_make_a_list():
    from egt.core.config import parse_overrides

    assert parse_overrides(["--compare", "run1", "run2", "--samples", "3"]) == {
        "compare": ["run1", "run2"], "samples": 3}
    assert parse_overrides(["--temperature", "-1"]) == {"temperature": -1}
