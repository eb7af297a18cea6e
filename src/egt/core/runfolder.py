"""Run folders that never mix or reuse stale work, and have one writer at a time.

Every command that writes a run folder (score, eval, sft, rl, curate, distill, judge, rerank; the demo
for each of its stages) opens it the same way, with `open_run_folder`:

    from egt.core.runfolder import fingerprint, open_run_folder

    with open_run_folder(out, "score", fingerprint=lambda: fingerprint(inputs={"pairs": cfg.pairs},
                                                                       models={"model": cfg.model},
                                                                       settings={"samples": cfg.samples}),
                         owned=["shards", "scores.parquet"], has_results=lambda: any_finished_shard(out),
                         overwrite=cfg.overwrite):
        ...                                     # write results (atomically, egt.core.files)

which is 1. one writer (the lock), 2. the same work (the fingerprint claim), 3. the files the stage
owns (what overwrite removes), for one process or for every rank of a launched world (`main`,
`share`: rank 0 decides, every rank follows its verdict).

Fingerprint (`fingerprint`). What a folder's results depend on: the SHA-256 of every input file, the
SHA-256 of every file of every model folder (weights, config, tokenizer: content, never sizes or
mtimes), and the settings that change the results. It is stored as `<out>/fingerprint.json`.
Hashing reads every byte: ~1-2 s per GB, once per run.

Claim (`claim`). The stored fingerprint is compared with this run's:
- none stored, or equal: the run goes on (and resumes whatever finished work the folder holds);
- different, and the folder holds no results yet (a run that failed before writing any): the stale
  files the stage owns are removed and the new fingerprint written -- a failed run never blocks its
  corrected rerun;
- different, with results: `StaleRunError` naming every difference ("model file model.safetensors:
  sha256 1f2e... -> 9a0b...", "settings.samples: 8 -> 4"), unless `overwrite`, which removes the files
  the stage owns (and only those: never the whole folder) and starts over.

Lock (`run_lock`). `<out>/.egt.lock` holds the holder's pid, host, stage and start time, and the
holder keeps an exclusive `flock` on it while it runs. The kernel drops the flock when the process
dies (kill -9 included), so a lock file left by a dead process is stale: the next run takes it over
(and says so). A second live process is refused with the holder's pid and host. On a file system
without flock support the pid is checked instead (same host: a dead pid is stale; another host: the
message says to delete the file once that process is gone). Taking the lock also removes the temp
files a killed writer left behind (`egt.core.files` temp names, `.*.egt-tmp`): no other writer can own them
(subfolders with a lock file of their own -- another run's output inside this one -- are left alone).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from egt.core.errors import EgtError
from egt.core.files import TEMP_SUFFIX, json_text, sha256_file, write_json

FINGERPRINT = "fingerprint.json"
LOCK = ".egt.lock"
FORMAT = 1


class StaleRunError(EgtError):
    """The run folder holds results of other inputs or settings."""


class RunLocked(EgtError):
    """Another live process holds the run folder's lock."""

    holder: dict | None = None   # the holder's lock info, when it could be read


# ---------------------------------------------------------------- fingerprints

def file_fingerprint(path: str | Path) -> dict:
    """{"sha256", "bytes"} of an input file; {"files": ...} of an input folder (a saved dataset);
    {"absent": path} when there is nothing there (the stage reports a missing input itself)."""
    path = Path(path)
    if path.is_dir():
        return model_fingerprint(path)
    if not path.exists():
        return {"absent": str(path.resolve())}
    try:
        return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    except OSError as exc:
        raise EgtError(f"{path}: cannot read ({exc.strerror})") from None


def model_fingerprint(model: str | Path) -> dict:
    """{"files": {relative path: sha256}} of a model folder (every non-hidden file: weights, config,
    tokenizer, processor); a name that is not a folder (a hub id) is recorded as {"name": ...}."""
    path = Path(model)
    if not path.is_dir():
        return {"name": str(model)}
    files = {}
    for item in sorted(path.rglob("*")):
        rel = item.relative_to(path)
        if item.is_file() and not any(part.startswith(".") for part in rel.parts):
            try:
                files[rel.as_posix()] = sha256_file(item)
            except OSError as exc:
                raise EgtError(f"{item}: cannot read model file ({exc.strerror})") from None
    if not files:
        raise EgtError(f"{path}: model folder is empty")
    return {"files": files}


def fingerprint(inputs: Mapping[str, str | Path | None] | None = None,
                models: Mapping[str, str | Path | None] | None = None,
                settings: Mapping[str, Any] | None = None) -> dict:
    """What a run's results depend on: input file hashes, model folder hashes, settings (JSON values).

    Inputs and models given as None are recorded as None (e.g. an optional file not used).
    """
    return json.loads(json_text({
        "format": FORMAT,
        "inputs": {name: None if p is None else file_fingerprint(p) for name, p in (inputs or {}).items()},
        "models": {name: None if m is None else model_fingerprint(m) for name, m in (models or {}).items()},
        "settings": dict(settings or {}),
    }))


_ABSENT = object()


def _short(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "..."
    return repr(value)


def _label(path: list[str]) -> str:
    """A fingerprint leaf's name for people: "model file model.safetensors", "input pairs", "setting seed"."""
    if len(path) >= 2 and path[0] == "models":
        return f"{path[1]} file {'.'.join(path[3:])}" if len(path) > 3 and path[2] == "files" else path[1]
    if len(path) >= 2 and path[0] == "inputs":
        return f"input {path[1]}" + (f" file {'.'.join(path[3:])}" if len(path) > 3 and path[2] == "files" else "")
    if len(path) >= 2 and path[0] == "settings":
        return "setting " + ".".join(path[1:])
    return ".".join(path)


def differences(stored: Any, current: Any, path: list[str] | None = None) -> list[str]:
    """Readable differences between two fingerprints: "what: stored -> current", one per leaf."""
    path = path or []
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in list(dict.fromkeys([*stored, *current])):
            if key == "bytes" and path[:1] == ["inputs"]:
                continue  # the sha256 beside it says it
            out += differences(stored.get(key, _ABSENT), current.get(key, _ABSENT), [*path, str(key)])
        return out
    if stored == current:
        return []
    return [f"{_label(path)}: {_short(stored)} -> {_short(current)}"]


def read_fingerprint(out: str | Path, fingerprint_file: str = FINGERPRINT) -> dict | None:
    """The stored fingerprint of a run folder; None when there is none (or it is unreadable)."""
    path = Path(out) / fingerprint_file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return {"format": "unreadable"}
    return data if isinstance(data, dict) else {"format": "unreadable"}


def remove_owned(out: str | Path, owned: Iterable[str]) -> list[str]:
    """Delete the named files / folders under `out` (the stage's own outputs); return those removed."""
    out = Path(out)
    removed = []
    for name in owned:
        target = out / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            continue
        removed.append(name)
    return removed


def claim(out: str | Path, current: dict, *, stage: str, owned: Iterable[str],
          has_results: Callable[[], bool] | bool, overwrite: bool = False,
          fingerprint_file: str = FINGERPRINT) -> str:
    """Check `out` against this run's fingerprint (see the module docstring); write it.

    Returns "new" (no fingerprint before), "same" (equal: resume), "replaced" (different but no
    results: stale files removed) or "overwritten" (`overwrite`: results removed, even when equal).
    `owned`: the files and folders the stage writes under `out` (relative names), removed on
    "replaced" / "overwritten" together with the fingerprint file. `fingerprint_file`: where under
    `out` the fingerprint lives (default fingerprint.json; a pipeline that keeps one per step in a
    shared folder names its own, e.g. "stages/score.fingerprint.json"). Call it holding `run_lock`.
    """
    out = Path(out)
    owned = list(owned)
    stored = read_fingerprint(out, fingerprint_file)
    results = has_results() if callable(has_results) else bool(has_results)
    if stored is None and not results:
        status = "new"
    elif stored == current and not overwrite:
        return "same"
    elif not results:
        status = "replaced"
    elif overwrite:
        status = "overwritten"
    else:
        if stored is None:
            what = "results without a fingerprint (made by an older egt?)"
            diffs: list[str] = []
        elif stored.get("format") != FORMAT:
            what = "results with a fingerprint of another egt version"
            diffs = []
        else:
            what = f"{stage} results of other inputs or settings"
            diffs = differences(stored, current)
        shown = "; ".join(diffs[:6]) + (f"; ... {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise StaleRunError(f"{out}: holds {what}" + (f" ({shown})" if shown else "")
                            + f" (use another output folder, or overwrite=true / --overwrite to discard "
                              f"its {stage} results and start over)")
    if status != "new":
        remove_owned(out, [*owned, fingerprint_file])
    out.mkdir(parents=True, exist_ok=True)
    write_json(current, out / fingerprint_file, sort_keys=True)
    return status


# ---------------------------------------------------------------- temp files

def remove_temp_files(out: str | Path) -> list[Path]:
    """Delete the temp files (`.*` + egt.core.files.TEMP_SUFFIX) a killed writer left under `out`, skipping
    subfolders with a lock file of their own (another run's folder: its temp files may be live)."""
    out = Path(out)
    removed = []
    for folder, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not (Path(folder) / d / LOCK).exists()]
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


# ---------------------------------------------------------------- lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _holder_text(holder: dict | None) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else ""
    return f"egt {holder.get('stage', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}{when})"


def _read_holder(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_HELD: dict[str, "RunLock"] = {}   # locks this process holds, by folder: taking one again nests


class RunLock:
    """The lock of one run folder; use `run_lock(out, stage)` (a context manager).

    Re-entrant within a process: taking a folder's lock that this process already holds nests
    (the stage functions can then be called from a caller that holds it, e.g. `egt eval`'s run
    around evaluate_pairs). `name`: the lock file (`.egt.lock`, or a shard job's own
    `.egt.shard-<i>-of-<n>.lock`, egt.core.shards). `purpose`: "run" (held for the whole run) or
    "claim" (held for a moment, to check a claim or merge): a process that finds a "claim" holder
    waits for it (`acquire(wait_s=...)`) instead of being refused. `clean`: remove the temp files a
    killed writer left once the lock is taken (never while shard jobs may be writing their own).
    """

    def __init__(self, out: str | Path, stage: str, name: str = LOCK, purpose: str = "run", clean: bool = True,
                 info: dict | None = None):
        self.out = Path(out)
        self.path = self.out / name
        self.stage = stage
        self.purpose, self.clean, self.info = purpose, clean, dict(info or {})
        self.fd: int | None = None
        self.took_over: dict | None = None   # the stale holder this lock replaced, if any
        self._nested_in: RunLock | None = None

    def acquire(self, wait_s: float = 10.0) -> "RunLock":
        """Take the lock; wait up to `wait_s` for a holder that holds it only for a moment (purpose
        "claim"), else RunLocked naming the holder."""
        self.out.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is not None and held.fd is not None:
            self._nested_in, self.fd = held, -2
            return self
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._acquire()
                break
            except RunLocked as exc:
                brief = exc.holder is None or exc.holder.get("purpose") == "claim"
                if not brief or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        _HELD[key] = self
        return self

    def _acquire(self) -> "RunLock":
        import fcntl

        me = {"pid": os.getpid(), "host": socket.gethostname(), "stage": self.stage, "started": time.time(),
              "purpose": self.purpose, **self.info}
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    holder = _read_holder(self.path)
                    error = RunLocked(f"{self.out}: in use by {_holder_text(holder)} "
                                      f"(two runs must not write one folder: wait for it to finish, or use "
                                      f"another output folder)")
                    error.holder = holder
                    raise error from None
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return self._acquire_by_pid(me)
                raise
            # The file may have been removed (released) between open and flock: retry on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_holder(self.path)
            if previous and previous.get("pid") != me["pid"]:
                self.took_over = previous  # a holder that died without releasing
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json_text(me, indent=None) + "\n").encode("utf-8"), 0)
            os.fsync(fd)
            self.fd = fd
            if self.clean:
                remove_temp_files(self.out)
            return self
        raise RunLocked(f"{self.out}: could not take {self.path.name} (it keeps changing)")

    def _acquire_by_pid(self, me: dict) -> "RunLock":
        """Fallback without flock: O_EXCL creation; a same-host holder whose pid is dead is stale."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_holder(self.path)
                same_host = holder is not None and holder.get("host") == me["host"]
                if same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                    self.took_over = holder
                    self.path.unlink(missing_ok=True)
                    continue
                hint = "" if same_host else f"; if that process is gone, delete {self.path}"
                error = RunLocked(f"{self.out}: in use by {_holder_text(holder)} (wait for it to finish, "
                                  f"or use another output folder{hint})")
                error.holder = holder
                raise error from None
            os.write(fd, (json_text(me, indent=None) + "\n").encode("utf-8"))
            os.fsync(fd)
            os.close(fd)
            self.fd = -1
            if self.clean:
                remove_temp_files(self.out)
            return self
        raise RunLocked(f"{self.out}: could not take {self.path.name}")

    def release(self) -> None:
        if self.fd is None:
            return
        if self._nested_in is not None:
            self.fd, self._nested_in = None, None
            return
        _HELD.pop(str(self.path.resolve()), None)
        with contextlib.suppress(OSError):
            self.path.unlink()   # while still locked: a waiting process then retries on a new file
        if self.fd >= 0:
            os.close(self.fd)    # drops the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- shard jobs (egt.core.shards)

SHARD_LOCK = ".egt.shard-{tag}.lock"


def shard_lock_name(shard) -> str:
    return SHARD_LOCK.format(tag=shard.tag)


def live_shard_jobs(out: str | Path) -> list[dict]:
    """The holders of the shard locks under `out` that a live process holds (their lock info: pid,
    host, shard "i/n", ...); a lock file left by a dead job is not listed (and is removed)."""
    import fcntl

    live = []
    for path in sorted(Path(out).glob(SHARD_LOCK.format(tag="*"))):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            # A shared probe: it fails while a job holds the lock (exclusively); a job that tries to take
            # the lock during the probe's microseconds retries (RunLock.acquire's wait).
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                live.append(_read_holder(path) or {"shard": path.name})
            elif exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                holder = _read_holder(path)
                same_host = holder is not None and holder.get("host") == socket.gethostname()
                if holder is not None and not (same_host and isinstance(holder.get("pid"), int)
                                               and not _pid_alive(holder["pid"])):
                    live.append(holder)
        finally:
            os.close(fd)
    return live


def _jobs_text(jobs: list[dict]) -> str:
    return ", ".join(f"shard {j.get('shard', '?')} ({_holder_text(j).removeprefix('egt ')})" for j in jobs[:4]) \
        + (f" and {len(jobs) - 4} more" if len(jobs) > 4 else "")


@contextlib.contextmanager
def run_lock(out: str | Path, stage: str, enabled: bool = True) -> Iterator[RunLock | None]:
    """Hold `<out>/.egt.lock` for the block (RunLocked if a live process holds it); `enabled=False`
    (e.g. on ranks other than 0 of a distributed run) makes it a no-op yielding None."""
    if not enabled:
        yield None
        return
    lock = RunLock(out, stage).acquire()
    if lock.took_over:
        import logging

        logging.getLogger(__name__).warning("%s: took over the lock of %s, which is no longer running",
                                            out, _holder_text(lock.took_over))
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def open_run_folder(out: str | Path, stage: str, *, fingerprint: dict | Callable[[], dict] | None = None,
                    owned: Iterable[str] = (), has_results: Callable[[], bool] | bool = False,
                    overwrite: bool = False, main: bool = True,
                    share: Callable[[str | None], str | None] | None = None, shard=None) -> Iterator[str | None]:
    """Hold `out`'s lock for the block, after checking its fingerprint: THE preamble of every stage.

    `fingerprint`: this run's (`fingerprint(...)`), or a callable that computes it (hashing runs on the
    main process only, after the lock is taken), or None to take the lock only (a command that checks
    its inputs itself, e.g. `egt score --merge`). `owned`, `has_results`, `overwrite`: as `claim`.
    Under a launcher only the main process (`main`, rank 0) takes the lock and claims; `share` sends its
    verdict (None, or the refusal's message) from rank 0 to every rank and returns it there, so no rank
    works in a folder that was refused. Yields the claim's status on the main process ("new", "same",
    "replaced", "overwritten"; None without a fingerprint) and None on the other ranks.

    `shard` (an egt.core.shards.Shard): an independent job owning one slice of the folder. It holds the
    folder's lock only while it claims (the fingerprint is hashed before, so jobs starting together do
    not queue behind each other's hashing), then its own `.egt.shard-<i>-of-<n>.lock` for the block: a
    second job of the same slice, or a job splitting the folder into another number of slices while
    others run, is refused. `overwrite` then discards only results of OTHER inputs or settings, and only
    when no other job is live: results with this run's fingerprint may be another job's. Without
    `shard`, a run is refused while shard jobs hold the folder.
    """
    lock, status, error = None, None, None
    if main:
        try:
            if shard is not None:
                lock, status = _claim_shard(out, stage, shard, fingerprint, owned, has_results, overwrite)
            else:
                lock = RunLock(out, stage, clean=False).acquire()
                jobs = live_shard_jobs(out)
                if jobs:
                    raise RunLocked(f"{out}: in use by shard jobs: {_jobs_text(jobs)} (wait for them to finish, or "
                                    f"run this one as a shard job too, with --shard)")
                remove_temp_files(out)
                if lock.took_over:
                    import logging

                    logging.getLogger(__name__).warning("%s: took over the lock of %s, which is no longer "
                                                        "running", out, _holder_text(lock.took_over))
                if fingerprint is not None:
                    current = fingerprint() if callable(fingerprint) else fingerprint
                    status = claim(out, current, stage=stage, owned=owned, has_results=has_results,
                                   overwrite=overwrite)
        except EgtError as exc:
            if lock is not None:
                lock.release()
                lock = None
            error = exc
    if share is not None:
        verdict = share(None if error is None else str(error))
        if error is None and verdict is not None:
            raise EgtError(verdict)
    if error is not None:
        raise error
    try:
        yield status
    finally:
        if lock is not None:
            lock.release()


def _claim_shard(out, stage: str, shard, fingerprint, owned, has_results, overwrite: bool):
    """(the job's own shard lock, claim status) for shard job `shard` (see open_run_folder)."""
    current = fingerprint() if callable(fingerprint) else fingerprint   # before the lock: see open_run_folder
    with RunLock(out, stage, purpose="claim", clean=False).acquire(wait_s=600):
        jobs = live_shard_jobs(out)
        other = [j for j in jobs if j.get("shard_count") not in (None, shard.count)]
        if other:
            raise RunLocked(f"{out}: split into {other[0]['shard_count']} slices by live shard jobs "
                            f"({_jobs_text(other)}); this job asks for slice {shard.label}: use the same n")
        status = None
        if current is not None:
            stale = read_fingerprint(out) not in (None, current)
            if stale and jobs:
                raise RunLocked(f"{out}: shard jobs of other inputs or settings are running ({_jobs_text(jobs)}); "
                                f"wait for them, or use another output folder")
            status = claim(out, current, stage=stage, owned=owned, has_results=has_results,
                           overwrite=overwrite and stale)
        mine = RunLock(out, stage, name=shard_lock_name(shard), clean=False,
                       info={"shard": shard.label, "shard_count": shard.count})
        deadline = time.monotonic() + 1.0
        while True:
            try:
                mine.acquire(wait_s=0)
                break
            except RunLocked as exc:
                if time.monotonic() > deadline:   # not a probe's moment: a live job holds this slice
                    raise RunLocked(f"{out}: slice {shard.label} is already being run by "
                                    f"{_holder_text(exc.holder)} (each shard job needs its own i)") from None
                time.sleep(0.05)
        if not jobs:
            remove_temp_files(out)   # no other job is writing: what a killed writer left can go
        return mine, status


@contextlib.contextmanager
def merge_lock(out: str | Path, stage: str) -> Iterator[RunLock]:
    """The folder's lock for a merge by a shard job (held for a moment; others wait for it)."""
    lock = RunLock(out, stage, purpose="claim", clean=False).acquire(wait_s=3600)
    try:
        yield lock
    finally:
        lock.release()
