"""Backbones: shapes for every name, arcface_torch state-dict layout, published complexity, one train step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from marginface.backbones import Backbone, GradCheckpointing, backbone_names, get_backbone, measure, save
from marginface.heads import ArcFace


@pytest.mark.parametrize("name", backbone_names())
def test_forward_shape(name: str) -> None:
    model = get_backbone(name, num_features=128)  # train mode: fresh BN statistics would overflow r100/r200
    with torch.no_grad():
        out = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert out.shape == (2, 128) and torch.isfinite(out).all()


# (name, GMACs published by arcface_torch / the MobileFaceNet paper, million parameters)
PUBLISHED = [("r18", 2.6, 24.03), ("r50", 6.3, 43.59), ("r100", 12.1, 65.16), ("r200", 23.5, 118.83),
             ("mbf", 0.45, 2.06)]


@pytest.mark.parametrize("name, gmacs, params_m", PUBLISHED)
def test_published_complexity(name: str, gmacs: float, params_m: float) -> None:
    c = measure(get_backbone(name))
    assert c.gmacs == pytest.approx(gmacs, rel=0.03)
    assert c.params_m == pytest.approx(params_m, rel=0.01)


def test_iresnet_state_dict_names_follow_arcface_torch() -> None:
    sd = get_backbone("r50").state_dict()
    expected = {
        "conv1.weight": (64, 3, 3, 3), "bn1.running_mean": (64,), "prelu.weight": (64,),
        "layer1.0.bn1.weight": (64,), "layer1.0.conv1.weight": (64, 64, 3, 3), "layer1.0.prelu.weight": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1), "layer1.0.downsample.1.num_batches_tracked": (),
        "layer3.13.bn3.running_var": (256,), "layer4.2.conv2.weight": (512, 512, 3, 3),
        "bn2.weight": (512,), "fc.weight": (512, 512 * 49), "fc.bias": (512,), "features.weight": (512,),
        "features.running_var": (512,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not get_backbone("r50").features.weight.requires_grad  # frozen as in arcface_torch


def test_mobilefacenet_state_dict_names_follow_arcface_torch() -> None:
    sd = get_backbone("mbf").state_dict()
    expected = {
        "layers.0.layers.0.weight": (128, 3, 3, 3), "layers.0.layers.2.weight": (128,),
        "layers.1.layers.0.weight": (128, 2, 3, 3), "layers.2.layers.0.layers.0.weight": (128, 128, 1, 1),
        "layers.2.layers.1.layers.0.weight": (128, 1, 3, 3), "layers.2.layers.2.layers.1.running_mean": (64 * 2,),
        "layers.3.layers.3.layers.2.layers.0.weight": (128, 128, 1, 1),
        "layers.5.layers.5.layers.0.layers.0.weight": (256, 256, 1, 1),
        "conv_sep.layers.0.weight": (512, 256, 1, 1), "features.layers.0.layers.0.weight": (512, 1, 7, 7),
        "features.layers.2.weight": (512, 512), "features.layers.3.running_var": (512,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key


@pytest.mark.parametrize("name", ["r50", "mbf"])
def test_checkpoint_round_trip_strict(tmp_path: Path, name: str) -> None:
    model = get_backbone(name).eval()
    torch.save(model.state_dict(), tmp_path / "backbone.pth")
    other = get_backbone(name).eval()
    other.load_state_dict(torch.load(tmp_path / "backbone.pth", weights_only=True), strict=True)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), other(x))


@pytest.mark.parametrize("name", ["mbf", "r18"])
def test_one_training_step(name: str) -> None:
    torch.manual_seed(0)
    model = get_backbone(name, num_features=64, dropout=0.1, gradient_checkpointing=True)
    head = ArcFace(64, 10)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9)
    x, y = torch.rand(4, 3, 112, 112) * 2 - 1, torch.tensor([0, 1, 2, 3])
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    loss = head(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    after = [p for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_bf16_autocast_and_channels_last() -> None:
    model = get_backbone("mbf").eval().to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, 112, 112) * 2 - 1).to(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.float32  # the embedding head runs in float32
    assert torch.nn.functional.cosine_similarity(out, reference).min() > 0.95


def test_gradient_checkpointing_matches_plain() -> None:
    torch.manual_seed(1)
    plain = get_backbone("r18", num_features=32)
    ckpt = get_backbone("r18", num_features=32, gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 112, 112, requires_grad=True)
    plain(x).sum().backward()
    g_plain = plain.conv1.weight.grad.clone()
    ckpt(x).sum().backward()
    torch.testing.assert_close(ckpt.conv1.weight.grad, g_plain, rtol=1e-4, atol=1e-5)


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'r51'"):
        get_backbone("r51")


@pytest.mark.parametrize("pool", [2, 4])
def test_mobilefacenet_input_pool_keeps_the_112_contract(pool: int) -> None:
    model = get_backbone("mbf", num_features=8, scale=1, blocks=[1, 1, 1, 1], input_pool=pool).eval()
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 8)
    assert model.features.layers[0].layers[0].kernel_size == ((4, 4) if pool == 2 else (2, 2))
    with pytest.raises(ValueError, match="input_pool must be 1, 2 or 4"):
        get_backbone("mbf", input_pool=3)


@pytest.mark.parametrize("name", ["mbf", "r18"])
def test_both_backbones_satisfy_the_contract_and_checkpoint_the_same_way(name: str) -> None:
    model = get_backbone(name, num_features=16)
    assert isinstance(model, Backbone) and isinstance(model, GradCheckpointing) and model.num_features == 16
    assert not model.gradient_checkpointing
    model.set_grad_checkpointing()
    assert model.gradient_checkpointing
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(function)
        return real(function, *args, **kwargs)

    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("marginface.backbones.contract.checkpoint", counting)
        model.train()(x).sum().backward()
        assert calls  # training with gradients: layers are checkpointed
        calls.clear()
        model.eval()(x)
        model.set_grad_checkpointing(False)
        model.train()(x)
        assert not calls  # eval mode, or switched off: plain forward


def test_save_refuses_a_model_outside_the_contract(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"cannot save Linear as a 'mbf' backbone: it lacks num_features, "
                                        r"set_grad_checkpointing"):
        save(torch.nn.Linear(4, 4), "mbf", tmp_path / "model")
    assert not (tmp_path / "model").exists()
