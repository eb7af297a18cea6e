"""Run independent jobs (RL runs, evaluations, benchmark cells) in one-thread worker processes.

    from egt.core.parallel import Job, run_jobs
    results = run_jobs([Job("a", fn, (cfg_a,)), Job("b", fn, (cfg_b,))], workers=2)

Why: the tiny judge's matrices are too small for a second thread to pay. On 2 cores one
two-thread process runs pretraining at 16 steps/s, one one-thread process at 12.7, so two
one-thread jobs side by side do ~1.6x the work of one two-thread job.

Each job runs with `threads` torch threads whatever the worker count, so its numbers do not
depend on how many workers ran (CPU kernels give different last bits for different thread
counts). Workers are spawned processes (fresh CUDA/OMP state); a job's stdout and stderr go
to its `log` file when one is given. With
`workers=1` the jobs run in this process, one after another, with the same thread count.
A failing job raises in the caller (after the running ones finish) with the job's name.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from egt.core.errors import EgtError


@dataclass
class Job:
    name: str
    fn: Callable[..., Any]          # a module-level function (it is pickled by reference)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    log: Path | None = None         # where the job's stdout/stderr go (appended)


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_workers() -> int:
    return max(1, len(available_cores()))


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _redirected(log: Path | None):
    """Send this process's fd 1 and 2 (C-level output too, e.g. tqdm, warnings) to `log`."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", buffering=1) as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = handle, handle
        try:
            yield
        finally:
            handle.flush()
            sys.stdout, sys.stderr = old_out, old_err
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _run_one(job: Job, threads: int):
    with _redirected(job.log), _torch_threads(threads):
        return job.fn(*job.args, **job.kwargs)


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_call(job: Job, threads: int):
    with _redirected(job.log), _torch_threads(threads):
        try:
            return True, job.fn(*job.args, **job.kwargs)
        except EgtError as exc:
            return False, str(exc)
        except BaseException as exc:  # the full traceback goes to the job's log
            traceback.print_exc()
            return False, f"{exc.__class__.__name__}: {exc}"


def run_jobs(jobs: list[Job], workers: int | None = None, threads: int = 1,
             on_done: Callable[[Job, Any], None] | None = None) -> list[Any]:
    """Results of `job.fn(*args, **kwargs)` in job order; `on_done(job, result)` as each finishes."""
    workers = min(workers or default_workers(), max(1, len(jobs)))
    if workers == 1:
        results = []
        for job in jobs:
            results.append(_run_one(job, threads))
            if on_done:
                on_done(job, results[-1])
        return results
    from multiprocessing import get_context

    results: list[Any] = [None] * len(jobs)
    failures = []
    pool = get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(threads,))
    try:
        pending = [pool.apply_async(_worker_call, (job, threads)) for job in jobs]
        for index, (job, handle) in enumerate(zip(jobs, pending)):
            ok, value = handle.get()
            if ok:
                results[index] = value
                if on_done:
                    on_done(job, value)
            else:
                failures.append((job, value))
        pool.close()  # close + join (not terminate) so the workers release their semaphores
    finally:
        pool.terminate()
        pool.join()
    if failures:
        job, text = failures[0]
        more = f" (and {len(failures) - 1} more failed job(s))" if len(failures) > 1 else ""
        where = f"; details in {job.log}" if job.log else ""
        raise EgtError(f"job '{job.name}' failed{more}: {text}{where}")
    return results
