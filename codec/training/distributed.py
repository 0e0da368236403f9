"""Training in several processes started by ``torchrun``: the process group (gloo on CPUs, NCCL on GPUs), each
process's slice of the global batch, and the values every process must agree on. One process is a group of one."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Group:
    size: int = 1
    rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """The process that measures, logs, checkpoints and exports."""
        return self.rank == 0

    @classmethod
    def start(cls, device: str) -> "Group":
        """The group torchrun set up in the environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR), else one
        process."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_world_size(), dist.get_rank(), device)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` whose gradients are averaged over the processes (DistributedDataParallel)."""
        if self.size == 1:
            return module
        return torch.nn.parallel.DistributedDataParallel(module)

    def slice(self, batch: int) -> slice:
        """This process's part of a global batch."""
        part = batch // self.size
        return slice(self.rank * part, (self.rank + 1) * part)

    def agree(self, value: float) -> float:
        """The main process's value, in every process (elapsed time decides the schedule and the end)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, 0)
        return float(t[0])

    def mean(self, value: float) -> float:
        """The mean of a value over the processes."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0]) / self.size

    def finish(self) -> None:
        if self.size > 1:
            dist.destroy_process_group()
