"""Typed stage configs: YAML file + command-line overrides, validated by pydantic.

Every stage module defines `class Config(StageConfig)`. Unknown keys and wrong
types are errors that name the key, the value and what was expected:

    egt score --config configs/demo/score.yaml samples=8 --temperature 0.7
    egt score --config egt:qwen2.5-vl-7b/score.yaml     # a config shipped with egt (egt configs list)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from egt.core.errors import ConfigError
from egt.core.files import write_text

C = TypeVar("C", bound="StageConfig")


class StageConfig(BaseModel):
    """Base of every stage config: no unknown keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _one_value_is_a_list(cls, values: Any) -> Any:
        """One command-line value for a list field is a list: `--rl_variants a_egt` -> [a_egt],
        `--metrics answer,vote` -> [answer, vote]."""
        if isinstance(values, dict):
            for name, field in cls.model_fields.items():
                value = values.get(name)
                if get_origin(field.annotation) is list and isinstance(value, (str, int, float)):
                    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]
                    values = {**values, name: items}
        return values


def _parse_value(text: str) -> Any:
    """`8` -> 8, `true` -> True, `[a, b]` -> list, anything else stays a string."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _set_dotted(target: dict, dotted: str, value: Any) -> None:
    keys = dotted.replace("-", "_").split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is not a section")
    target[keys[-1]] = value


_KEY_VALUE = re.compile(r"^[A-Za-z_][\w.-]*=")


def parse_overrides(args: list[str]) -> dict:
    """Turn `key=value`, `--key value`, `--key=value` and `--flag` into a nested dict.

    `--flag` followed by a `key=value` argument is a flag: `--swap samples=2`;
    several bare values after one key make a list: `--runs run1 run2`.
    """
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            body = arg[2:]
            if "=" in body:
                key, value = body.split("=", 1)
                _set_dotted(out, key, _parse_value(value))
            elif i + 1 < len(args) and not args[i + 1].startswith("--") and not _KEY_VALUE.match(args[i + 1]):
                # `--runs run1 run2`: several bare values after one key make a list.
                values = []
                while i + 1 < len(args) and not args[i + 1].startswith("-") and not _KEY_VALUE.match(args[i + 1]):
                    values.append(_parse_value(args[i + 1]))
                    i += 1
                if not values:  # a single value such as a negative number
                    values.append(_parse_value(args[i + 1]))
                    i += 1
                _set_dotted(out, body, values[0] if len(values) == 1 else values)
            else:
                _set_dotted(out, body, True)
        elif "=" in arg:
            key, value = arg.split("=", 1)
            _set_dotted(out, key, _parse_value(value))
        else:
            raise ConfigError(f"cannot parse argument '{arg}': expected key=value or --key value")
        i += 1
    return out


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(cls: type, exc: ValidationError, source: str) -> str:
    """One line (the CLI prints errors as one line): every problem, each naming its key."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(cls.model_fields))
            problems.append(f"unknown key '{loc}' (known keys: {known})")
        else:
            got = err.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"'{loc}': {err['msg']}{got_text}")
    return f"invalid {cls.__module__.rsplit('.', 1)[-1]} config ({source}): " + "; ".join(problems)


def load_yaml(path: str | Path) -> dict:
    if str(path).startswith("egt:"):   # a config shipped with egt (egt configs list)
        from egt.core.shipped import config_path

        path = config_path(path)
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    return data


def load_config(cls: type[C], path: str | Path | None = None,
                overrides: dict | list[str] | None = None) -> C:
    """Build a config from an optional YAML file and overrides (later wins)."""
    data = load_yaml(path) if path else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    data = _merge(data, overrides or {})
    source = str(path) if path else "command line"
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(cls, exc, source)) from None


def save_config(cfg: StageConfig, path: str | Path) -> Path:
    """The config as YAML (atomically), loadable again with `--config`."""
    return write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), path)
