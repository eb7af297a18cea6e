"""`egt [--debug] <stage> [POSITIONAL] [--config x.yaml] [key=value | --key value ...]`.

The CLI only parses and dispatches: each stage is `run(cfg) -> Path` in its
module, with `Config` beside it. `egt <stage> --help` lists every config key.

Faults answer with one line on stderr and exit status 1, never a traceback (75 for a run that stopped
early and resumes when rerun: egt.core.errors.RunIncomplete):
`error: <file>: <what> (<hint>)` for bad input, configs and model files (EgtError),
for unreadable, read-only or full disks (OSError: the file, the system's reason and
what to do), and `error: internal error: ...` for anything else. `--debug`
(anywhere on the command line) re-raises instead, with the full traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys
from dataclasses import dataclass

import click

from egt.core.errors import EgtError

DEBUG_FLAG = "--debug"
# What to do about a failed system call, by errno (the message names the file and the reason).
OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or write to another folder, then rerun to resume",
    errno.EDQUOT: "the disk quota is used up: free space or write to another folder, then rerun to resume",
    errno.EROFS: "read-only file system: choose an output folder you can write",
    errno.EACCES: "permission denied: choose a folder you can write, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write, or fix its permissions",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "a folder where a file was expected: check the path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.EIO: "input/output error: the disk or network file system failed",
}


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    summary: str
    positional: tuple[str, ...] = ()
    config: str = "Config"
    run: str = "run"

    def load(self):
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config), getattr(mod, self.run)


DATA = [
    Stage("convert", "egt.data.convert", "Convert a benchmark or dataset to the egt pairs format."),
    Stage("inspect", "egt.data.inspection", "Counts, lengths and image checks for a pairs file.", ("input",)),
    Stage("synth", "egt.data.synth", "Generate the synthetic multimodal preference benchmark."),
]
MODEL = [
    Stage("tiny", "egt.tiny.families", "Build a tiny judge of any model family (default Qwen2-VL).",
          config="TinyConfig", run="build"),
]
CONFIGS = [
    Stage("list", "egt.core.shipped", "List the configs shipped with egt.", config="ListConfig", run="list_configs"),
    Stage("show", "egt.core.shipped", "Print a shipped config.", ("name",), config="ShowConfig", run="show_config"),
    Stage("copy", "egt.core.shipped", "Copy a shipped config (a file, a folder or all) to a path.", ("name", "dest"),
          config="CopyConfig", run="copy_config"),
]
TOP = [
    Stage("distill", "egt.stages.distill", "Stage 1: teacher reasoning traces with the fidelity filter."),
    Stage("sft", "egt.stages.sft", "Stage 1: supervised fine-tuning of the judge on the traces."),
    Stage("score", "egt.stages.score", "Stage 2: K sampled judgements per pair and their entropies."),
    Stage("analyze", "egt.stages.analyze", "Stage 2: entropy bins, AUROC, Spearman, figures, report.", ("scores",)),
    Stage("view", "egt.reporting.view", "Write an HTML viewer of scored pairs, token entropies and curation.", ("scores",)),
    Stage("curate", "egt.stages.curate", "Stage 2: select pairs by entropy (or baselines) and order them.", ("scores",)),
    Stage("rl", "egt.stages.rl", "Stage 3: GRPO on curated pairs in curriculum order."),
    Stage("eval", "egt.stages.evaluate", "Evaluate a judge on reward benchmarks (both orders, voting)."),
    Stage("compare", "egt.stages.compare", "Several eval runs side by side, one column per run.", ("runs...",)),
    Stage("judge", "egt.judge.verdicts", "Verdicts of a trained judge on a pairs file, with confidence and abstention."),
    Stage("rerank", "egt.judge.rerank", "Best-of-N with a trained judge: a round-robin or knockout tournament."),
    Stage("calibrate", "egt.judge.calibrate", "Fit the reward service's temperature and abstention threshold.",
          ("model",)),
    Stage("serve", "egt.judge.serve", "Serve a trained judge as an HTTP reward service for RL trainers.", ("model",)),
    Stage("demo", "egt.demo.pipeline", "Run the whole EGT recipe on the tiny judge and write a report."),
]


def _describe_config(cfg_cls) -> str:
    from egt.core.images import ImageOptions

    lines = ["Config keys (YAML or key=value / --key value):"]
    # The command's own keys first; the image keys every image-reading command shares (a mixin) last.
    fields = sorted(cfg_cls.model_fields.items(), key=lambda item: item[0] in ImageOptions.model_fields)
    for name, field in fields:
        ann = (field.annotation.__name__ if isinstance(field.annotation, type)
               else str(field.annotation).replace("typing.", "").replace("pathlib.", ""))
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        desc = f"  {field.description}" if field.description else ""
        lines.append(f"  {name} ({ann}, default {default}){desc}")
    return "\n".join(lines)


class StageCommand(click.Command):
    def __init__(self, stage: Stage):
        self.stage = stage
        super().__init__(
            name=stage.name, callback=self._invoke, help=stage.summary, short_help=stage.summary,
            params=[
                click.Option(["--config", "config_path"], type=click.Path(dir_okay=False),
                             help="YAML config file; later key=value arguments override it."),
                click.Argument(["args"], nargs=-1, type=click.UNPROCESSED),
            ],
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                              "help_option_names": ["-h", "--help"]},
        )

    def format_help(self, ctx, formatter):
        super().format_help(ctx, formatter)
        try:
            cfg_cls, _ = self.stage.load()
        except ImportError as exc:  # pragma: no cover
            formatter.write(f"\n(config unavailable: {exc})\n")
            return
        if self.stage.positional:
            formatter.write(f"\nPositional: {' '.join(p.upper() for p in self.stage.positional)}\n")
        formatter.write("\n" + _describe_config(cfg_cls) + "\n")

    def _invoke(self, config_path, args):
        from egt.core.config import load_config, parse_overrides

        args = list(args)
        positional = []
        while args and not args[0].startswith("-") and "=" not in args[0]:
            positional.append(args.pop(0))
        names = list(self.stage.positional)
        variadic = bool(names) and names[-1].endswith("...")   # the last positional takes the rest
        if variadic and len(positional) >= len(names):
            positional[len(names) - 1:] = [positional[len(names) - 1:]]
        if len(positional) > len(names):
            raise EgtError(f"egt {self.stage.name}: unexpected argument '{positional[len(names)]}'")
        overrides = parse_overrides(args)
        for key, value in zip(names, positional):
            overrides[key.removesuffix("...")] = value
        cfg_cls, run = self.stage.load()
        cfg = load_config(cfg_cls, config_path, overrides)
        out = run(cfg)
        if out is not None:
            click.echo(str(out))


def _group(name: str, help_text: str, stages: list[Stage]) -> click.Group:
    group = click.Group(name=name, help=help_text, context_settings={"help_option_names": ["-h", "--help"]})
    for stage in stages:
        group.add_command(StageCommand(stage))
    return group


def build_cli() -> click.Group:
    root = click.Group(name="egt", help=__import__("egt").__doc__.split("\n\n")[0],
                       context_settings={"help_option_names": ["-h", "--help"]},
                       params=[click.Option([DEBUG_FLAG], is_flag=True, expose_value=False,
                                            help="Show the full traceback of an error (else one line).")])
    root.add_command(_group("data", "Data: convert benchmarks, inspect files, synthesize pairs.", DATA))
    root.add_command(_group("model", "Models: build the embedded tiny judge.", MODEL))
    root.add_command(_group("configs", "The configs shipped with egt: list, show, copy (or --config egt:NAME).",
                            CONFIGS))
    for stage in TOP:
        root.add_command(StageCommand(stage))
    root = click.version_option(__import__("egt").__version__, "--version")(root)
    return root


cli = build_cli()


def os_error_line(exc: OSError) -> str:
    """`<file>: <reason> (<hint>)` for a failed system call."""
    where = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = OS_HINTS.get(exc.errno, "rerun with --debug for the traceback")
    return f"{where}: {reason} ({hint})" if where else f"{reason} ({hint})"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind `exc` (itself, or its cause / context chain), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        cli.main(args=argv, prog_name="egt", standalone_mode=False)
    except EgtError as exc:
        if debug:
            raise
        click.echo(f"error: {_one_line(exc)}", err=True)
        return getattr(exc, "exit_code", 1)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # one line for everything else; --debug shows the traceback
        if debug:
            raise
        os_error = _os_error_in(exc)
        if os_error is not None:
            click.echo(f"error: {_one_line(os_error_line(os_error))}", err=True)
        elif "No space left on device" in str(exc) or "file write failed" in str(exc):
            click.echo(f"error: {_one_line(exc)} ({OS_HINTS[errno.ENOSPC]})", err=True)
        else:
            click.echo(f"error: internal error: {type(exc).__name__}: {_one_line(exc)} "
                       f"(rerun with {DEBUG_FLAG} for the traceback, and please report it)", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _entry() -> None:
    sys.exit(main())
