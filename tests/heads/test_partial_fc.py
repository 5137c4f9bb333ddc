"""Partial FC: r = 1 is the full head, r < 1 keeps every positive and only sampled rows get gradients."""

from __future__ import annotations

import pytest
import torch

from marginface.heads import ArcFace, sample_classes, sampled_count
from marginface.heads.partial_fc import local_targets
from marginface.train.optim import SparseRowSGD


def test_rate_one_equals_full_head() -> None:
    torch.manual_seed(0)
    full, sampled = ArcFace(16, 50), ArcFace(16, 50, sample_rate=1.0)
    sampled.load_state_dict(full.state_dict())
    x = torch.randn(8, 16)
    labels = torch.randint(0, 50, (8,))
    assert torch.equal(full(x, labels), sampled(x, labels))


def test_sampling_keeps_positives_and_count() -> None:
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([3, 97, 3, 50, 12, 0])
    sample = sample_classes(labels, 100, 0.1, gen)
    assert sample.index.numel() == sampled_count(100, 0.1) == 10
    assert set(labels.tolist()) <= set(sample.index.tolist())
    assert torch.equal(sample.index[sample.target], labels)
    assert torch.all(sample.index[1:] > sample.index[:-1])


def test_more_positives_than_rate_keeps_all_positives() -> None:
    labels = torch.arange(30)
    sample = sample_classes(labels, 100, 0.1)
    assert sample.index.numel() == 30
    assert torch.equal(sample.index, labels)


def test_foreign_labels_stay_foreign() -> None:
    labels = torch.tensor([-1, 4, -1])
    sample = sample_classes(labels, 10, 0.5)
    assert sample.target[0] == -1 and sample.target[2] == -1
    assert sample.index[sample.target[1]] == 4


@pytest.mark.parametrize("rate", [0.0, 1.5])
def test_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        ArcFace(4, 4, sample_rate=rate)


def test_only_sampled_rows_change() -> None:
    torch.manual_seed(2)
    head = ArcFace(16, 200, sample_rate=0.1)
    before = head.weight.detach().clone()
    opt = SparseRowSGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    labels = torch.randint(0, 200, (8,))
    head(torch.randn(8, 16), labels).backward()
    grad = head.weight.grad
    assert grad.is_sparse
    touched = set(grad.coalesce().indices()[0].tolist())
    assert len(touched) == 20 and set(labels.tolist()) <= touched
    opt.step()
    changed = set(torch.nonzero((head.weight.detach() != before).any(dim=1)).squeeze(1).tolist())
    assert changed <= touched and changed
    momentum = opt.state[head.weight]["momentum_buffer"]
    assert set(torch.nonzero(momentum.any(dim=1)).squeeze(1).tolist()) <= touched


def test_eval_mode_uses_all_classes() -> None:
    head = ArcFace(8, 40, sample_rate=0.1).eval()
    x = torch.randn(4, 8)
    head(x, torch.tensor([1, 2, 3, 4])).backward()
    assert not head.weight.grad.is_sparse


def test_dense_sgd_matches_torch() -> None:
    torch.manual_seed(3)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = SparseRowSGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    ref = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    for _ in range(3):
        x = torch.randn(4, 5)
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_local_targets_mark_foreign_classes() -> None:
    labels = torch.tensor([0, 4, 7, 3, 8])
    assert local_targets(labels, 3, 7).tolist() == [-1, 1, -1, 0, -1]
    assert labels.tolist() == [0, 4, 7, 3, 8]  # the input is left alone


def test_head_rows_need_a_group_and_stay_in_range() -> None:
    head = ArcFace(16, 50)
    assert (head.start, head.stop, head.group) == (0, 50, None) and head.weight.shape == (50, 16)
    assert list(head.state_dict()) == ["weight"]  # checkpoints store head.weight, whatever the rows
    with pytest.raises(ValueError, match="need a process group"):
        ArcFace(16, 50, rows=(0, 25))
    with pytest.raises(ValueError, match="within"):
        ArcFace(16, 50, rows=(10, 60))
    with pytest.raises(ValueError, match="scale s"):
        ArcFace(16, 50, s=0.0)


def test_presets_are_the_class_defaults() -> None:
    from marginface.heads import ARCFACE, COSFACE, NORMFACE, SPHEREFACE, CosFace, MarginHead, NormFace, SphereFace
    from marginface.heads.margin import SCALE
    from marginface.train.config import HeadConfig

    for head, preset in [(ArcFace(4, 3), ARCFACE), (CosFace(4, 3), COSFACE), (SphereFace(4, 3), SPHEREFACE),
                         (NormFace(4, 3), NORMFACE), (MarginHead(4, 3), ARCFACE)]:
        assert head.margin == preset and head.s == SCALE
    config = HeadConfig()
    assert (config.m1, config.m2, config.m3, config.s) == (ARCFACE.m1, ARCFACE.m2, ARCFACE.m3, SCALE)
