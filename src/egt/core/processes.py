"""The processes of one launched world (`accelerate launch`, `torchrun`): rank, world size, barrier.

    procs = Processes(device="auto")             # rank 0 of 1 when not launched
    procs.rank, procs.world, procs.is_main, procs.device("auto")
    procs.barrier(); value = procs.from_main(value); everything = procs.gather(mine)

`egt score`, `egt eval` and `egt judge` split their units over the ranks of a world with this
class, and rank 0 merges. torch.distributed is set up by accelerate's PartialState; on a machine
without CUDA that is a gloo group of CPU processes, so the same code runs (and is tested) on CPU:

    accelerate launch --multi_gpu --num_processes 2 -m egt.cli score ...   # CPU too, despite the flag's name
    torchrun --nproc_per_node 2 -m egt.cli score ...

accelerate 1.x's `--cpu` starts ONE process unless mpirun is configured (it hands CPU multi-process
runs to MPI); `--multi_gpu` uses its torchrun launcher, which works without GPUs.

Collectives go through a gloo group of this class's own, with a long timeout: it works beside NCCL,
and rank 0 can wait for the slowest rank (uneven work on a resume) without the default 30-minute
limit. `group=False` (egt's `shard=env`: torchrun's RANK / WORLD_SIZE read as an independent job's
slice) sets up no process group at all: this process is then rank 0 of a world of 1.
"""

from __future__ import annotations

import os
from datetime import timedelta


class Processes:
    """Rank, world size, the process's device and a few collectives (no-ops in a world of one)."""

    def __init__(self, device: str = "auto", group: bool = True):
        import torch

        self.state = None
        self.rank, self.world = 0, 1
        self._group = None
        if group:
            from accelerate import PartialState

            # accelerate only sets up CPU process groups (gloo) when asked for the CPU explicitly.
            self.state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes
        if self.world > 1:
            import torch.distributed as dist

            self._group = dist.new_group(backend="gloo", timeout=timedelta(days=7))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, wanted: str = "auto"):
        """The device to run on: `auto` is the process's own (cuda:LOCAL_RANK under a launcher, else
        cuda if available, else cpu); an explicit device is taken as given."""
        import torch

        if self.state is not None and (wanted == "auto" or (wanted == "cuda" and self.state.device.type == "cuda")):
            return self.state.device
        if wanted == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
            return torch.device("cpu")
        return torch.device(wanted)

    def barrier(self) -> None:
        if self._group is not None:
            import torch.distributed as dist

            dist.barrier(group=self._group)

    def from_main(self, value):
        """Rank 0's `value` on every rank (a picklable object)."""
        if self._group is None:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's `value`, in rank order, on every rank (a picklable object)."""
        if self._group is None:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value, group=self._group)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on some rank (e.g. one rank failed)."""
        return any(self.gather(bool(flag)))
