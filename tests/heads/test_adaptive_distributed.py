"""Two gloo processes, each owning half the classes and half the batch: CurricularFace's t, AdaFace's norm
statistics, MagFace's norm-dependent margin and regulariser, ElasticFace's drawn margins (and their "+"
ordering by the global batch's cos θ_y), the loss and the gradients equal one process's on the global batch,
step after step."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from marginface.heads import AdaFace, CurricularFace, ElasticFace, MagFace
from marginface.train.distributed import DistContext, gather_rows

pytestmark = pytest.mark.slow
DIM, CLASSES, BATCH, STEPS = 8, 11, 8, 2
KINDS = ("curricularface", "adaface", "magface", "elasticface_arc", "elasticface_cos_plus")
CASES = [(kind, chunk) for kind in KINDS for chunk in (None, 3)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make(kind: str, chunk: int | None, **kwargs) -> torch.nn.Module:
    if kind == "magface":  # bounds inside the batch's norms, so the margin and the regulariser have gradients
        kwargs.update(l_a=2.0, u_a=40.0)
    if kind.startswith("elasticface"):  # wide draws, the same seed on both ranks as the trainer gives them
        kwargs.update(kind=kind.split("_")[1], std=0.2, plus=kind.endswith("plus"), seed=7)
    cls = {"curricularface": CurricularFace, "adaface": AdaFace, "magface": MagFace}.get(kind, ElasticFace)
    return cls(DIM, CLASSES, s=16.0, chunk_size=chunk, **kwargs).double().train()


def _data(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64) * torch.linspace(3, 30, BATCH).double()[:, None]
    return x, torch.tensor([0, 5, 10, 3, 3, 7, 1, 9]), torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)


def _run(head: torch.nn.Module, rows: slice, centres: slice) -> list[dict]:
    """Per step: loss, the batch rows' embedding gradient, the centre gradient and the head's buffers."""
    out = []
    for step in range(STEPS):
        x, labels, w = _data(step)
        with torch.no_grad():
            head.weight.copy_(w[centres])
        xi = x[rows].clone().requires_grad_(True)
        loss = head(xi, labels[rows])
        loss.backward()
        out.append({"loss": loss.detach(), "gx": xi.grad, "gw": head.weight.grad.clone(),
                    **{name: value.clone() for name, value in head.named_buffers()}})
        head.weight.grad = None
    return out


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistContext(rank, 2, torch.device("cpu"), dist.group.WORLD)
    results = {}
    for kind, chunk in CASES:
        head = _make(kind, chunk, group=ctx.group)
        steps = _run(head, slice(rank * BATCH // 2, (rank + 1) * BATCH // 2), slice(head.start, head.stop))
        for step in steps:
            step["gw"] = gather_rows(step["gw"], CLASSES, ctx)
            gathered = [torch.empty_like(step["gx"]) for _ in range(2)]
            dist.all_gather(gathered, step["gx"])
            step["gx"] = torch.cat(gathered)
        results[f"{kind}-{chunk}"] = steps
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def test_two_processes_match_one(tmp_path: Path) -> None:
    out = str(tmp_path / "dist.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    for kind, chunk in CASES:
        single = _run(_make(kind, chunk), slice(None), slice(None))
        for step, (a, b) in enumerate(zip(got[f"{kind}-{chunk}"], single, strict=True)):
            assert a.keys() == b.keys()
            for key in a:
                where = f"{kind} chunk={chunk} step {step} {key}"
                torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12, msg=lambda m, w=where: f"{w}: {m}")
