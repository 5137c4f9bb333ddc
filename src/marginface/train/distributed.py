"""torch.distributed helpers: process-group set-up, gradient and state sync, gathering row shards (and the
optimiser state of row-sharded class centres, which checkpoints keep in global order).

Backbone: replicated; after backward its gradients are all-reduce *summed* (each rank's gradient is its
samples' share of the global-batch loss, so the sum is the single-process gradient). Class centres:
sharded by rows, rank r owning classes even_share(C, r, world) = [start_r, stop_r) of a MarginHead given
the process group (see marginface.heads.margin_head). gloo on CPU, NCCL on CUDA, same code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from marginface.errors import Unavailable
from marginface.partition import even_share

__all__ = ["DistContext", "all_agree", "all_reduce_gradients", "broadcast_module", "even_share", "gather_row_state",
           "gather_rows", "init_distributed", "restore_row_state", "split_row_state"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, device, and the group (None when single-process)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA), else single-process."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise Unavailable("device = 'cuda' but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    target = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    log.info("process %d of %d on %s", rank, dist.get_world_size(), target)
    return DistContext(rank, dist.get_world_size(), target, dist.group.WORLD)


def all_reduce_gradients(params: list[nn.Parameter], ctx: DistContext) -> None:
    """Sum the dense gradients of replicated parameters across ranks, in one flat buffer."""
    if ctx.group is None:
        return
    grads = [param.grad for param in params if param.grad is not None]
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat, group=ctx.group)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (replicas start, and stay, identical)."""
    if ctx.group is None:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0, group=ctx.group)


def gather_rows(shard: Tensor, num_rows: int, ctx: DistContext) -> Tensor:
    """The global (num_rows, ...) tensor from each rank's row shard (every rank receives it)."""
    if ctx.group is None:
        return shard
    widest = even_share(num_rows, 0, ctx.world_size)
    size = widest[1] - widest[0]
    padded = torch.zeros((size, *shard.shape[1:]), dtype=shard.dtype, device=shard.device)
    padded[:shard.shape[0]] = shard
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded, group=ctx.group)
    pieces = []
    for rank, part in enumerate(parts):
        start, stop = even_share(num_rows, rank, ctx.world_size)
        pieces.append(part[:stop - start])
    return torch.cat(pieces)


def gather_row_state(optimizer: torch.optim.Optimizer, param: nn.Parameter, num_rows: int,
                     ctx: DistContext) -> dict[str, Tensor]:
    """The optimiser's per-row state of a row-sharded parameter (momentum, Adam moments) in global row order."""
    state = optimizer.state.get(param, {})
    return {name: gather_rows(value, num_rows, ctx) for name, value in state.items()
            if torch.is_tensor(value) and value.shape == param.shape}


def split_row_state(optimizer_state: dict, param_index: int, row_state: dict[str, Tensor]) -> dict:
    """Take parameter `param_index`'s entry out of an optimiser state_dict (its per-row tensors are saved
    globally, as `row_state`) and return what is left of it: entries that are not per row (Adam's step)."""
    state = optimizer_state["state"].pop(param_index, {})
    return {name: value for name, value in state.items() if name not in row_state}


def restore_row_state(optimizer_state: dict, param_index: int, other: dict, row_state: dict[str, Tensor],
                      rows: tuple[int, int]) -> None:
    """Put parameter `param_index`'s entry back into an optimiser state_dict: `other` as saved, and each
    global per-row tensor cut to this process's rows [start, stop)."""
    start, stop = rows
    state = dict(other)
    state.update({name: value[start:stop].clone() for name, value in row_state.items()})
    if state:
        optimizer_state["state"][param_index] = state


def all_agree(flag: bool, ctx: DistContext) -> bool:
    """True only if `flag` is true on every rank."""
    if ctx.group is None:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device)  # NCCL needs CUDA tensors
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=ctx.group)
    return bool(value.item())
