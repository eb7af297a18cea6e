"""egt.core.processes in a world of one (the launched worlds run in the heavy tests of score, eval, judge)."""

from __future__ import annotations

import torch

from egt.core.processes import Processes


def test_a_world_of_one_and_no_process_group():
    for procs in (Processes("cpu"), Processes("cpu", group=False)):
        assert (procs.rank, procs.world, procs.is_main) == (0, 1, True)
        procs.barrier()
        assert procs.from_main({"a": 1}) == {"a": 1} and procs.gather(3) == [3] and procs.any(True)
        assert procs.device("cpu") == torch.device("cpu")
    # shard=env: torchrun's variables are read as an independent job's slice, never as a world to join
    assert Processes("auto", group=False).device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
