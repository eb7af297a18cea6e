"""User-facing errors. The CLI prints these as one message (no traceback)."""

from __future__ import annotations


class EgtError(Exception):
    """An error the user can act on; printed without a traceback."""


class RunIncomplete(EgtError):
    """The run stopped before every item had its result, and a rerun of the same command resumes it
    (a budget reached, a teacher that keeps failing). Exit status 75 (EX_TEMPFAIL: try again later)."""

    exit_code = 75


class ConfigError(EgtError):
    """A config file or command-line override is invalid."""


class DataError(EgtError):
    """Bad input data, located by file, line (or row) and field."""

    def __init__(self, file: str, line: int | None, field: str | None, reason: str):
        self.file = str(file)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.file if line is None else f"{self.file}:{line}"
        what = f" field '{field}'" if field else ""
        super().__init__(f"{where}:{what} {reason}".replace(": ", ": ", 1))

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.reason}


class MissingDependency(EgtError):
    """An optional dependency (vllm, deepspeed, ...) is not installed."""

    def __init__(self, package: str, extra: str, purpose: str, hint: str | None = None):
        super().__init__(
            f"{purpose} needs the optional package '{package}'. "
            f"Install it with: pip install 'egt[{extra}]'" + (f"; {hint}" if hint else "")
        )


def require(module: str, extra: str, purpose: str, hint: str | None = None):
    """Import an optional module lazily, with an actionable message if absent (`hint`: what else to do)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(module, extra, purpose, hint) from exc
