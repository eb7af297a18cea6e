"""egt.core.parallel: jobs in one-thread worker processes, results in job order, logs, failures named."""

from __future__ import annotations

import os

import pytest

from egt.core.errors import EgtError
from egt.core.parallel import Job, run_jobs


def _square_and_report(x: int) -> dict:
    import torch

    print(f"job {x} says hello")
    return {"x": x * x, "threads": torch.get_num_threads(), "pid": os.getpid()}


def _fail(message: str):
    raise ValueError(message)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_job_order_with_one_thread_each(workers, tmp_path):
    jobs = [Job(f"j{i}", _square_and_report, (i,), log=tmp_path / f"j{i}.log") for i in range(4)]
    done = []
    results = run_jobs(jobs, workers=workers, threads=1, on_done=lambda job, r: done.append(job.name))
    assert [r["x"] for r in results] == [0, 1, 4, 9]
    assert all(r["threads"] == 1 for r in results)
    assert done == ["j0", "j1", "j2", "j3"]
    assert (tmp_path / "j2.log").read_text().strip() == "job 2 says hello"
    pids = {r["pid"] for r in results}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def test_a_failing_job_is_named_and_its_traceback_logged(tmp_path):
    jobs = [Job("fine", _square_and_report, (3,)), Job("broken", _fail, ("no luck",), log=tmp_path / "b.log")]
    with pytest.raises(EgtError, match=r"job 'broken' failed: ValueError: no luck; details in .*b\.log"):
        run_jobs(jobs, workers=2)
    assert "Traceback" in (tmp_path / "b.log").read_text()
