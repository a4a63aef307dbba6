"""Running a command across processes with ``torchrun`` (torch.distributed): one home for the plumbing.

``torchrun --nproc_per_node N $(which hookunlearn) select ...`` (or ``unlearn``, ``eval``) starts N
processes; `init_from_env` (called by the runners) joins them into one process group, ``gloo``
on CPU and ``nccl`` on CUDA (each process on ``cuda:LOCAL_RANK``). Without torchrun's environment
(``WORLD_SIZE`` unset or 1) nothing here does anything: `world_size` is 1, `rank` 0, `shard`
returns its input, the reductions return at once.

What each command does with it:

- ``select``: each rank streams every ``world_size``-th batch; the running sums are all-reduced
  (`all_reduce_sum_`) and the top-activating contexts merged, so every rank ends with the
  statistics of the whole corpus;
- ``eval``: the scored items (continuations, next-token candidates) are sharded across ranks
  (`map_sharded`) and gathered in their original order;
- ``unlearn``: each rank runs every ``world_size``-th micro-batch of the step's batch and the
  trainable tensors' gradients are all-reduced (`hookunlearn.train`);
- rank 0 alone writes run directories (`is_rank_zero`), and `barrier` keeps the others from
  returning before it has.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
R = TypeVar("R")


def is_distributed() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def is_rank_zero() -> bool:
    """Whether this process writes (the only process, or rank 0 of the group)."""
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or any launcher setting ``WORLD_SIZE`` > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | torch.device = "auto") -> bool:
    """Join the process group torchrun describes (``gloo`` for CPU, ``nccl`` for CUDA); a no-op
    when not launched or already joined. Returns whether the process is distributed."""
    if not launched() or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return is_distributed()
    wants_cuda = str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available())
    if wants_cuda:
        # "cuda" (and "auto") then means this process's own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # rank 0 alone exports and writes while the others wait at a barrier: allow it an hour (NCCL's
    # default is 10 minutes, less than a large model's verified export)
    torch.distributed.init_process_group(
        backend="nccl" if wants_cuda else "gloo", timeout=datetime.timedelta(hours=1)
    )
    return is_distributed()


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def _comm_device(tensor: Tensor) -> torch.device:
    """Where a collective's buffer must live: the tensor's device, except CPU under NCCL."""
    if torch.distributed.get_backend() == "nccl" and tensor.device.type == "cpu":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum_(tensors: Sequence[Tensor]) -> None:
    """Sum each tensor over the ranks, in place (one collective per dtype and device)."""
    if not is_distributed() or not tensors:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for (_, _), group in sorted(groups.items(), key=lambda item: (str(item[0][0]), str(item[0][1]))):
        flat = torch.cat([t.reshape(-1) for t in group]).to(_comm_device(group[0]))
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for tensor in group:
            count = tensor.numel()
            tensor.copy_(flat[offset : offset + count].view_as(tensor))
            offset += count


def broadcast_(tensors: Sequence[Tensor], src: int = 0) -> None:
    """Overwrite each tensor with rank ``src``'s values, in place."""
    if not is_distributed():
        return
    for tensor in tensors:
        buffer = tensor.detach().to(_comm_device(tensor))
        torch.distributed.broadcast(buffer, src=src)
        with torch.no_grad():
            tensor.copy_(buffer)


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    all_reduce_sum_([value])
    return bool(value.item() > 0)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th, starting at `rank`."""
    return list(items[rank() :: world_size()])


def gather_sharded(local: Sequence[T], n: int) -> list[T]:
    """The inverse of `shard`: every rank's share, back in the original order of ``n`` items."""
    if not is_distributed():
        return list(local)
    parts = all_gather_objects(list(local))
    out: list[Any] = [None] * n
    size = len(parts)
    for index, part in enumerate(parts):
        out[index::size] = part
    return out


def map_sharded(fn: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T]) -> list[R]:
    """``fn(items)`` computed by every rank on its share and gathered in order (``fn`` maps a list
    to one result per item; every rank gets the whole list)."""
    if not is_distributed():
        return list(fn(items))
    local = shard(items)
    results = list(fn(local)) if local else []
    if len(results) != len(local):
        raise RuntimeError(f"{len(results)} results for {len(local)} items on rank {rank()}")
    return gather_sharded(results, len(items))


def map_sharded_rows(fn: Callable[[Sequence[T]], Tensor], items: Sequence[T]) -> Tensor:
    """Like `map_sharded` for an ``fn`` that returns one tensor row per item."""
    if not is_distributed():
        return fn(items)
    rows = map_sharded(lambda part: list(fn(part).cpu().unbind(0)), items)
    return torch.stack(rows)
