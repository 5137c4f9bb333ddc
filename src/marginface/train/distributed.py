"""torch.distributed helpers: process-group set-up, the model-parallel margin head, gradient and state sync.

Backbone: replicated; after backward its gradients are all-reduce *summed* (each rank's gradient is its
samples' share of the global-batch loss, so the sum is the single-process gradient). Class centres:
sharded by rows, rank r owning classes [start_r, stop_r); embeddings and labels are all-gathered, the
softmax is normalised with all-reduced max and sum inside the fused loss, and the autograd-aware
all_gather sums each rank's partial embedding gradient back to the rank that owns the sample.
gloo on CPU, NCCL on CUDA, same code.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.heads.fused import margin_softmax_cross_entropy
from marginface.heads.margin import Margin
from marginface.heads.partial_fc import sample_classes
from marginface.heads.validation import check_embeddings, check_labels

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
        raise RuntimeError("device = 'cuda' but no CUDA device is available")
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


def even_share(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous share of `total` items (the first ranks take the remainder):
    its class centres, and its slice of every global batch."""
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ShardedMarginHead(nn.Module):
    """Model-parallel MarginHead: this rank's rows of the class centres; same loss as the single-process
    head on the global batch (Partial FC samples within each shard)."""

    def __init__(self, embedding_dim: int, num_classes: int, ctx: DistContext, s: float = 64.0,
                 m1: float = 1.0, m2: float = 0.5, m3: float = 0.0, *, chunk_size: int | None = None,
                 sample_rate: float = 1.0, detach_margin: bool = False) -> None:
        super().__init__()
        self.embedding_dim, self.num_classes, self.ctx = embedding_dim, num_classes, ctx
        self.start, self.stop = even_share(num_classes, ctx.rank, ctx.world_size)
        self.s, self.margin = float(s), Margin(m1, m2, m3)
        self.chunk_size, self.sample_rate, self.detach_margin = chunk_size, sample_rate, detach_margin
        self.weight = nn.Parameter(torch.empty(self.stop - self.start, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Global-batch mean loss (identical on every rank) from this rank's local batch."""
        check_embeddings(embeddings, self.embedding_dim)
        check_labels(labels, embeddings.shape[0], self.num_classes)
        group = self.ctx.group
        with warnings.catch_warnings():  # its replacement in _functional_collectives is still private API
            warnings.simplefilter("ignore", FutureWarning)
            all_embeddings = torch.cat(dist_fn.all_gather(embeddings, group=group))
        gathered = [torch.empty_like(labels) for _ in range(self.ctx.world_size)]
        dist.all_gather(gathered, labels, group=group)
        local = torch.cat(gathered) - self.start
        local[(local < 0) | (local >= self.weight.shape[0])] = -1
        weight = self.weight
        if self.training and self.sample_rate < 1.0:
            sample = sample_classes(local, self.weight.shape[0], self.sample_rate)
            weight, local = F.embedding(sample.index, self.weight, sparse=True), sample.target
        return margin_softmax_cross_entropy(all_embeddings, weight, local, self.margin, self.s, self.chunk_size,
                                            self.detach_margin, group)


def all_reduce_gradients(params: list[nn.Parameter], ctx: DistContext) -> None:
    """Sum the dense gradients of replicated parameters across ranks, in one flat buffer."""
    if ctx.group is None:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=ctx.group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


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


def all_agree(flag: bool, ctx: DistContext) -> bool:
    """True only if `flag` is true on every rank."""
    if ctx.group is None:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device)  # NCCL needs CUDA tensors
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=ctx.group)
    return bool(value.item())
