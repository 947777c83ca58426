"""Data-parallel training inside an initialised ``torch.distributed`` process group (no Ray here).

Whoever starts the processes (:mod:`llm4rec.distributed.train` on Ray) sets
up the process group and hands each rank's :class:`~llm4rec.training.Trainer`
a :class:`DataParallel`. The trainer then, on every rank:

- starts from rank 0's weights (broadcast once after building the module);
- shuffles each epoch's examples with one permutation that every rank draws
  alike, cuts it into the same global batches of ``batch_size`` as a single
  process would, and takes the strided share ``batch[rank::world]`` of each
  (DistributedSampler's split), so an epoch has the same number of steps as
  on one process;
- after each backward pass all-reduces the gradients, weighted by each rank's
  share of the batch: for a loss that is a mean over examples this is exactly
  the gradient of the whole batch (what ``DistributedDataParallel`` computes,
  in one flat all-reduce per step; DDP's module wrapper is not used because
  the models' losses call the network several times per step and through
  methods other than ``forward``). A table of at least ``sparse_min_rows``
  rows (an item embedding) sends only the rows some rank touched when they are
  few (a sampled loss touches the batch's items and negatives, not the
  catalogue): the same sum, a fraction of the bytes;
- all-reduces the epoch loss and the validation metric (each rank ranks its
  share of the validation users; a model's own metric is computed on rank 0
  and broadcast), so every rank takes the same early-stopping decision;
- draws negatives, augmentations and dropout masks from per-(epoch, rank)
  seeds, so a run resumed from the snapshot of epoch e continues exactly as
  the uninterrupted run did;
- calls :attr:`DataParallel.save` with a :class:`~llm4rec.training.checkpoint.Snapshot`
  after every epoch (on every rank; the caller decides that rank 0 writes),
  and starts from :attr:`DataParallel.resume` when one is given.

Results differ from a single-process run at the same seed only by the random
draws (the permutation and negatives come from other streams) and float
rounding; see ``tests/distributed/test_train.py`` for how close they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from llm4rec.training.checkpoint import Snapshot

__all__ = ["DataParallel", "epoch_seed"]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed for the draws of ``rank`` in ``epoch`` (``rank=-1``: the draws every rank shares)."""
    return int(np.random.SeedSequence([seed, epoch, rank + 1]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class DataParallel:
    """This process's place in a data-parallel run (see the module docstring).

    Attributes:
        rank: this process's rank, 0..world-1 (``torch.distributed.get_rank()``).
        world: the number of processes.
        save: called after every epoch on every rank with the trainer's snapshot, or None.
        resume: the snapshot to continue from, or None for a fresh start.
        sparse_min_rows: 2-D parameters with at least this many rows have their gradient reduced by rows
            (see :meth:`average_gradients`).
        values_sent: numbers (gradient values, row ids) this rank has put into collectives so far: what
            the row-wise reduction saves shows here.
    """

    rank: int
    world: int
    save: Callable[[Snapshot], None] | None = None
    resume: Snapshot | None = None
    sparse_min_rows: int = 4096
    values_sent: int = 0

    @classmethod
    def from_process_group(cls, save: Callable[[Snapshot], None] | None = None,
                           resume: Snapshot | None = None) -> DataParallel:
        """The rank and size of the default (initialised) process group."""
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("DataParallel needs an initialised torch.distributed process group")
        return cls(dist.get_rank(), dist.get_world_size(), save, resume)

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes files; the others only compute."""
        return self.rank == 0

    def shard(self, index: np.ndarray) -> np.ndarray:
        """This rank's strided share ``index[rank::world]`` of one global batch (int64[B] -> int64[~B/world])."""
        return index[self.rank::self.world]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Overwrite every rank's parameters and buffers with rank 0's."""
        import torch.distributed as dist

        for tensor in module.state_dict().values():
            dist.broadcast(tensor.data, src=0)

    def average_gradients(self, params: Iterable[torch.Tensor], weight: float, loss: float) -> float:
        """Replace each gradient by the batch's: ``sum over ranks of weight_r * grad_r``; returns the batch loss.

        ``weight`` is this rank's share of the global batch (its examples over
        the batch's), ``loss`` its mean loss (0 with no examples). A parameter
        that got no gradient on any rank keeps ``grad=None`` (so Adam skips it,
        as it would on one process). One all-reduce of a flat float buffer:
        the gradients, a presence flag per parameter, and the weighted loss.
        A table of at least ``sparse_min_rows`` rows is left out of it and
        reduced by :meth:`_reduce_rows`.
        """
        import torch
        import torch.distributed as dist

        params = [p for p in params if p.requires_grad]
        if not params:
            return loss
        device = params[0].device
        tall = [p.dim() == 2 and p.shape[0] >= self.sparse_min_rows for p in params]
        parts = [torch.zeros(0, dtype=torch.float32, device=device) if t else
                 (p.grad.reshape(-1).to(torch.float32) * weight) if p.grad is not None else
                 torch.zeros(p.numel(), dtype=torch.float32, device=device) for p, t in zip(params, tall)]
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        flat = torch.cat([*parts, flags, torch.tensor([loss * weight], dtype=torch.float32, device=device)])
        dist.all_reduce(flat)
        self.values_sent += flat.numel()
        offset = 0
        for i, (p, t) in enumerate(zip(params, tall)):
            n = 0 if t else p.numel()
            if flat[-1 - len(params) + i] <= 0:
                p.grad = None
            elif t:
                self._reduce_rows(p, weight)
            else:
                grad = flat[offset:offset + n].view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = grad.clone()
                else:
                    p.grad.copy_(grad)
            offset += n
        return float(flat[-1])

    def _reduce_rows(self, p: torch.Tensor, weight: float) -> None:
        """``p.grad`` (rows, d) <- the sum over ranks of ``weight_r * grad_r``, sending only the rows that
        some rank's gradient touches (nonzero) when they are under a quarter of the table, else the table.
        Every rank makes the same calls: the choice depends only on the gathered row counts."""
        import torch
        import torch.distributed as dist

        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        rows = (grad != 0).any(dim=1).nonzero().reshape(-1)
        counts = [torch.zeros(1, dtype=torch.int64, device=p.device) for _ in range(self.world)]
        dist.all_gather(counts, torch.tensor([len(rows)], dtype=torch.int64, device=p.device))
        counts = [int(c) for c in counts]
        if sum(counts) == 0:  # present but zero everywhere
            p.grad = torch.zeros_like(p)
            return
        if sum(counts) * 4 >= p.shape[0]:  # dense: cheaper than gathering most row ids
            buf = grad.to(torch.float32) * weight
            dist.all_reduce(buf)
            self.values_sent += buf.numel()
            p.grad = buf.to(p.dtype)
            return
        longest = max(counts)
        padded = torch.full((longest,), -1, dtype=torch.int64, device=p.device)
        padded[: len(rows)] = rows
        gathered = [torch.empty(longest, dtype=torch.int64, device=p.device) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        union = torch.unique(torch.cat(gathered))
        union = union[union >= 0]
        buf = grad[union].to(torch.float32) * weight
        dist.all_reduce(buf)
        self.values_sent += buf.numel() + longest * self.world + self.world
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.zero_()
        p.grad[union] = buf.to(p.dtype)

    def all_sum(self, values: list[float]) -> list[float]:
        """The sums over ranks of ``values`` (float64)."""
        import torch
        import torch.distributed as dist

        buf = torch.tensor(values, dtype=torch.float64, device=_comm_device())
        dist.all_reduce(buf)
        return buf.tolist()

    def from_rank0(self, compute: Callable[[], float]) -> float:
        """``compute()`` on rank 0, broadcast to every rank (the other ranks do not call it)."""
        import torch
        import torch.distributed as dist

        buf = torch.tensor([compute() if self.rank == 0 else 0.0], dtype=torch.float64, device=_comm_device())
        dist.broadcast(buf, src=0)
        return float(buf[0])


def _comm_device() -> str:
    """Where small tensors must live to be reduced: the GPU under NCCL, else the CPU."""
    import torch
    import torch.distributed as dist

    return f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
