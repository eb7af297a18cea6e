"""Independent jobs that each own a slice of one run folder: `--shard i/n`, SLURM arrays, torchrun ranks.

    egt score ... --shard 0/3 &  egt score ... --shard 1/3 &  egt score ... --shard 2/3   # any machines, one folder
    sbatch --array=0-7 docs/examples/score_array.sbatch        # egt score ... shard=slurm
    egt score output=runs/score --merge                       # only if the last job could not merge

A stage cuts its work into numbered units that do not depend on how the work is split (score:
its shards of `shard_size` pairs; eval, judge, distill: blocks of consecutive pairs, each judged as
one batch, exactly as one process batches them). Job `i/n` owns the units `u % n == i`; when a job
is itself a launched world of `w` processes, rank `r` owns the units of slot `i + n*r` of `n*w`
(`Shard.within`), so every (job, rank) owns a disjoint set and together they cover every unit.

`shard` values (`parse_shard`):
- `i/n`: job i of n, 0 <= i < n;
- `slurm`: from a SLURM job array: i = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP,
  n = SLURM_ARRAY_TASK_COUNT (so `--array=1-8` and `--array=0-7` both give 0..7 of 8);
- `env`: torchrun's RANK and WORLD_SIZE read as i and n, with NO process group: each process is
  an independent job (e.g. processes that must not wait for each other at a barrier).

The folder (egt.core.runfolder.open_run_folder with `shard`): a job takes the folder's lock only
for a moment, to check the fingerprint claim (a job of other inputs or settings is refused, as a
rerun is) and to take its own lock file `.egt.shard-<i>-of-<n>.lock` (a second job claiming the
same slice is refused, naming the holder), then works holding only its own lock. Jobs that split
the folder another way (another n) while others run are refused. A run without `shard` waits for
no one: it is refused while shard jobs are live. Each job writes only its own files (score: its
shard files; the journals of eval, judge and distill: `shards/<log>.<slot>-of-<count>.jsonl`).

Merge. After its own units, a job looks whether every unit of the folder is finished; if so it
takes the folder's lock and merges (the same function a one-process run ends with), so the last
job to finish writes the outputs. Two jobs finishing at once merge one after the other; the merge
is a deterministic function of the finished units, so the second writes the same bytes (only
timing fields differ). Nobody merges only when some job did not finish: rerun it (or run without
`shard`, which does whatever is left and merges).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from egt.core.errors import ConfigError

SHARD_HELP = ("i/n: this job owns slice i of n of the work (0 <= i < n; independent jobs on one folder); "
              "slurm: i and n from SLURM_ARRAY_TASK_ID / _MIN / _STEP / _COUNT; env: from RANK / WORLD_SIZE "
              "(torchrun) without a process group")
SHARD_DIR = "shards"


@dataclass(frozen=True)
class Shard:
    """Slice `index` of `count`: the units u with u % count == index."""

    index: int
    count: int

    def owns(self, unit: int) -> bool:
        return unit % self.count == self.index

    def take(self, units: Iterable[int]) -> list[int]:
        return [u for u in units if self.owns(u)]

    def within(self, rank: int, world: int) -> "Shard":
        """The slot of rank `rank` of a launched world of `world` processes running this job."""
        return Shard(self.index + self.count * rank, self.count * world)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """For file names: `2-of-8`."""
        return f"{self.index}-of-{self.count}"


ALL = Shard(0, 1)


def _env_int(environ: Mapping[str, str], name: str, what: str) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"shard={what}: environment variable {name}={value!r} is not an integer") from None


def parse_shard(value: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """The Shard a `shard` config value names (module docstring); None for no value."""
    if value is None or str(value).strip() == "":
        return None
    environ = os.environ if environ is None else environ
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if match:
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard={text}: expected i/n with 0 <= i < n (e.g. 0/4 ... 3/4)")
        return Shard(index, count)
    if text == "slurm":
        task = _env_int(environ, "SLURM_ARRAY_TASK_ID", text)
        if task is None:
            raise ConfigError("shard=slurm: SLURM_ARRAY_TASK_ID is not set (submit with sbatch --array=0-N, or "
                              "give shard=i/n)")
        low = _env_int(environ, "SLURM_ARRAY_TASK_MIN", text) or 0
        step = _env_int(environ, "SLURM_ARRAY_TASK_STEP", text) or 1
        count = _env_int(environ, "SLURM_ARRAY_TASK_COUNT", text)
        high = _env_int(environ, "SLURM_ARRAY_TASK_MAX", text)
        if count is None:
            if high is None:
                raise ConfigError("shard=slurm: neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is set")
            count = (high - low) // step + 1
        index, rest = divmod(task - low, step)
        if rest or not 0 <= index < count:
            raise ConfigError(f"shard=slurm: task {task} of an array that is not a range min-max[:step] "
                              f"(min {low}, step {step}, {count} tasks): give shard=i/n explicitly")
        return Shard(index, count)
    if text == "env":
        rank, world = _env_int(environ, "RANK", text), _env_int(environ, "WORLD_SIZE", text)
        if rank is None or world is None:
            raise ConfigError("shard=env: RANK and WORLD_SIZE are not set (start the jobs with torchrun, "
                              "or give shard=i/n)")
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"shard=env: RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
        return Shard(rank, world)
    raise ConfigError(f"shard={text!r}: expected i/n (e.g. 0/4), slurm or env")


def wants_process_group(value: str | None) -> bool:
    """`shard=env` reads torchrun's variables as independent jobs: no process group then."""
    return str(value or "").strip() != "env"


# ---------------------------------------------------------------- units and journals

def blocks(n_items: int, block_size: int) -> list[range]:
    """Consecutive blocks of `block_size` item positions (the last may be shorter)."""
    return [range(start, min(start + block_size, n_items)) for start in range(0, n_items, block_size)]


def slot_journal(out: str | Path, log_name: str, slot: Shard) -> Path:
    """Where slot `slot` appends its records of the journal `log_name` (e.g. judgements.jsonl)."""
    stem, dot, suffix = log_name.rpartition(".")
    return Path(out) / SHARD_DIR / f"{stem}.{slot.tag}.{suffix}" if dot else Path(out) / SHARD_DIR / f"{log_name}.{slot.tag}"


def slot_journals(out: str | Path, log_name: str) -> list[Path]:
    """Every slot journal of `log_name` under `out` (sorted by name)."""
    stem, dot, suffix = log_name.rpartition(".")
    pattern = f"{stem}.*-of-*.{suffix}" if dot else f"{log_name}.*-of-*"
    folder = Path(out) / SHARD_DIR
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def load_all(out: str | Path, log_name: str, key: str, own: Path | None = None) -> dict[str, dict]:
    """The records of `<out>/<log_name>` and of every slot journal beside it, by `key` (later wins:
    the main log first, then the slot journals). Only `own` (this process's journal) has a torn last
    line cut off; another job's is read as it is, since that job may be writing it right now."""
    from egt.core.files import Journal

    main = Path(out) / log_name
    merged = Journal(main, key=key).load(repair=own is None or own == main)
    for path in slot_journals(out, log_name):
        merged.update(Journal(path, key=key).load(repair=path == own))
    return merged


def fold_journals(out: str | Path, log_name: str, key: str, order: list[str]) -> None:
    """Rewrite `<out>/<log_name>` with every record of the slot journals folded in, then delete them.

    The main log's records keep their place (updated where a slot journal has a newer one); the rest
    follow in `order` (the keys in the order one process judges them), then by key. On a fresh run
    the result is the file one process would have appended. Call it holding the folder's lock, with
    no job writing (every unit finished)."""
    from egt.core.files import Journal

    paths = slot_journals(out, log_name)
    if not paths:
        return
    main = Journal(Path(out) / log_name, key=key)
    records = main.load()
    extra: dict[str, dict] = {}
    for path in paths:
        for name, record in Journal(path, key=key).load(repair=False).items():
            (records if name in records else extra)[name] = record
    rank = {name: i for i, name in enumerate(order)}
    tail = sorted(extra, key=lambda name: (rank.get(name, len(rank)), name))
    main.rewrite(list(records.values()) + [extra[name] for name in tail])
    for path in paths:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):   # left when it holds other files (score's shards, another log's)
        (Path(out) / SHARD_DIR).rmdir()
