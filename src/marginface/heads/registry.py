"""Head names → constructors, so a config can name any head (`head.kind`) and have its options checked.

Each entry lists the options its constructor takes besides (embedding_dim, num_classes); `sharded` heads
also take `rows` and `group` (model-parallel class shards) — the others train in one process only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from torch import nn

from marginface.heads.adaptive import AdaFace, CurricularFace, ElasticFace, MagFace
from marginface.heads.baselines import Softmax, SphereFaceOriginal
from marginface.heads.margin_head import ArcFace, CosFace, MarginHead, NormFace, SphereFace
from marginface.heads.subcenter import SubCenterArcFace


def softmax_head(embedding_dim: int, num_classes: int) -> Softmax:
    """The softmax baseline as the trainer trains it: W·x without a bias (a head's one parameter is weight)."""
    return Softmax(embedding_dim, num_classes, bias=False)


@dataclass(frozen=True)
class HeadEntry:
    """How to build one head kind: its constructor, the options it accepts, whether it shards its classes."""

    build: Callable[..., nn.Module]
    options: tuple[str, ...]
    sharded: bool = False


_FUSED = ("s", "chunk_size", "sample_rate")  # every head on the fused loss takes these
HEADS: dict[str, HeadEntry] = {
    "margin": HeadEntry(MarginHead, ("m1", "m2", "m3", *_FUSED, "detach_margin"), sharded=True),
    "arcface": HeadEntry(ArcFace, ("m", *_FUSED, "detach_margin"), sharded=True),
    "cosface": HeadEntry(CosFace, ("m", *_FUSED, "detach_margin"), sharded=True),
    "sphereface": HeadEntry(SphereFace, ("m", *_FUSED, "detach_margin"), sharded=True),
    "normface": HeadEntry(NormFace, _FUSED, sharded=True),
    "softmax": HeadEntry(softmax_head, ()),
    "sphereface_original": HeadEntry(SphereFaceOriginal, ("m", "lambda_")),
    "subcenter": HeadEntry(SubCenterArcFace, ("sub_centers", "s", "m1", "m2", "m3", "detach_margin")),
    "curricularface": HeadEntry(CurricularFace, ("m", *_FUSED), sharded=True),
    "adaface": HeadEntry(AdaFace, ("m", "h", "t_alpha", *_FUSED), sharded=True),
    "magface": HeadEntry(MagFace, ("l_a", "u_a", "l_m", "u_m", "lambda_g", *_FUSED), sharded=True),
    "elasticface": HeadEntry(ElasticFace, ("kind", "m", "std", "plus", "seed", *_FUSED), sharded=True),
}


def head_names() -> list[str]:
    """Every name get_head builds."""
    return sorted(HEADS)


def head_entry(name: str) -> HeadEntry:
    """The registry entry of `name`; ValueError listing the names when there is none."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {head_names()}")
    return HEADS[name]


def get_head(name: str, embedding_dim: int, num_classes: int, *, rows: tuple[int, int] | None = None,
             group: dist.ProcessGroup | None = None, **options: Any) -> nn.Module:
    """Build a head by name, e.g. get_head("adaface", 512, 10_000, h=0.333); unknown options are refused."""
    entry = head_entry(name)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(f"head {name!r} does not take {unknown}; its options are {list(entry.options)}")
    if group is not None or rows is not None:
        if not entry.sharded:
            raise ValueError(f"head {name!r} trains in one process only: its class centres are not sharded "
                             f"across processes (model parallel)")
        options = {**options, "rows": rows, "group": group}
    return entry.build(embedding_dim, num_classes, **options)

