"""Two gloo processes: the model-parallel head and summed backbone gradients equal one process on the
same global batch; a 2-process run resumes on 1 process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from marginface.backbones import get_backbone
from marginface.heads import MarginHead
from marginface.train.distributed import (
    DistContext,
    all_reduce_gradients,
    even_share,
    gather_rows,
)
from marginface.train.optim import SparseRowSGD

pytestmark = pytest.mark.slow
CLASSES, DIM, BATCH = 11, 16, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models(seed: int = 0):
    torch.manual_seed(seed)
    # float64 so that the comparison sees the algorithm, not float32 summation order; eval mode freezes BN
    # statistics (BN normalises per process, as under arcface_torch's DDP); input_pool 4 runs the network at
    # 28x28 (float64 convolutions at 112x112 cost about 15 CPU-seconds a step, for the same algorithm)
    backbone = get_backbone("mbf", num_features=DIM, scale=1, blocks=(1, 1, 1, 1), input_pool=4).double().eval()
    centres = torch.randn(CLASSES, DIM, dtype=torch.float64)
    images = torch.rand(BATCH, 3, 112, 112, dtype=torch.float64) * 2 - 1
    labels = torch.tensor([0, 5, 10, 3, 3, 7, 1, 9])
    return backbone, centres, images, labels


def _single_process(steps: int):
    backbone, centres, images, labels = _models()
    head = MarginHead(DIM, CLASSES, m1=1.1, m2=0.3, m3=0.05).double()
    with torch.no_grad():
        head.weight.copy_(centres)
    opt = SparseRowSGD([*backbone.parameters(), head.weight], lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses, first_grads = [], None
    for step in range(steps):
        opt.zero_grad()
        loss = head(backbone(images), labels)
        loss.backward()
        if step == 0:
            first_grads = ([p.grad.clone() for p in backbone.parameters()], head.weight.grad.clone())
        opt.step()
        losses.append(loss.item())
    return losses, first_grads, [p.detach().clone() for p in backbone.parameters()], head.weight.detach().clone()


def _worker(rank: int, port: int, steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistContext(rank, 2, torch.device("cpu"), dist.group.WORLD)
    backbone, centres, images, labels = _models()
    head = MarginHead(DIM, CLASSES, m1=1.1, m2=0.3, m3=0.05, group=ctx.group).double()
    with torch.no_grad():
        head.weight.copy_(centres[head.start:head.stop])
    opt = SparseRowSGD([*backbone.parameters(), head.weight], lr=0.05, momentum=0.9, weight_decay=5e-4)
    local = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    losses, first_grads = [], None
    for step in range(steps):
        opt.zero_grad()
        loss = head(backbone(images[local]), labels[local])
        loss.backward()
        all_reduce_gradients(list(backbone.parameters()), ctx)
        if step == 0:
            first_grads = ([p.grad.clone() for p in backbone.parameters()],
                           gather_rows(head.weight.grad, CLASSES, ctx))
        opt.step()
        losses.append(loss.item())
    weight = gather_rows(head.weight.detach(), CLASSES, ctx)
    if rank == 0:
        torch.save({"losses": losses, "grads": first_grads, "backbone": [p.detach() for p in backbone.parameters()],
                    "head": weight}, out)
    dist.destroy_process_group()


def test_two_processes_match_one(tmp_path: Path) -> None:
    steps = 3
    out = str(tmp_path / "dist.pt")
    mp.spawn(_worker, args=(_free_port(), steps, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    losses, (grads, head_grad), backbone, head = _single_process(steps)
    for a, b in zip(got["losses"], losses, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    for g_dist, g_single in zip(got["grads"][0], grads, strict=True):
        torch.testing.assert_close(g_dist, g_single, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(got["grads"][1], head_grad, rtol=1e-5, atol=1e-12)
    for p_dist, p_single in zip(got["backbone"], backbone, strict=True):
        torch.testing.assert_close(p_dist, p_single, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(got["head"], head, rtol=1e-5, atol=1e-12)


def test_row_state_round_trip_single_process() -> None:
    from marginface.train.distributed import gather_row_state, restore_row_state, split_row_state

    weight = torch.nn.Parameter(torch.randn(CLASSES, DIM))
    other = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([{"params": [other]}, {"params": [weight]}], lr=0.1)
    (weight.sum() + other.sum()).backward()
    opt.step()
    rows = gather_row_state(opt, weight, CLASSES, DistContext())
    assert sorted(rows) == ["exp_avg", "exp_avg_sq"]
    state = opt.state_dict()
    left = split_row_state(state, 1, rows)
    assert 1 not in state["state"] and sorted(left) == ["step"]
    restore_row_state(state, 1, left, rows, (2, 5))
    assert torch.equal(state["state"][1]["exp_avg"], opt.state[weight]["exp_avg"][2:5])
    assert state["state"][1]["step"] == opt.state[weight]["step"]


def test_even_shares_cover_all_classes() -> None:
    shards = [even_share(11, r, 3) for r in range(3)]
    assert shards == [(0, 4), (4, 8), (8, 11)]


def _train_worker(rank: int, port: int, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    from marginface.train.distributed import init_distributed
    from marginface.train.trainer import Trainer

    from .helpers import tiny_config

    config = tiny_config(Path(run_dir), "optim.max_steps=4", "checkpoint_every=2")
    Trainer(config, init_distributed("cpu")).train()
    dist.destroy_process_group()


def test_two_process_run_resumes_on_one(tmp_path: Path) -> None:
    from marginface.train.checkpoint import latest_valid, load_checkpoint
    from marginface.train.trainer import Trainer

    from .helpers import tiny_config

    run = tmp_path / "run"
    mp.spawn(_train_worker, args=(_free_port(), str(run)), nprocs=2, join=True)
    info = latest_valid(run)
    assert info.step == 4
    weights, _, meta = load_checkpoint(info.path)
    assert meta["world_size"] == 2 and weights["head.weight"].shape == (6, 16)
    trainer = Trainer(tiny_config(run, "optim.max_steps=6", "checkpoint_every=2"))
    assert trainer.resume("auto") and trainer.step == 4
    torch.testing.assert_close(trainer.head.weight.detach(), weights["head.weight"])
    result = trainer.train()
    assert result.steps == 6
