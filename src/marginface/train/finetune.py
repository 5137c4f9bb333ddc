"""Fine-tuning controls that keep a pretrained model's features intact while a new head is fitted: frozen
leading layers, class centres started at each identity's mean embedding, and the frozen start model that a
distillation term pulls the embeddings of degraded faces towards."""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from marginface.data.samples import collate
from marginface.data.transforms import to_model_input

log = logging.getLogger(__name__)


def parameter_layers(model: nn.Module) -> list[nn.Module]:
    """The modules that hold parameters directly, in registration order (input side first for every
    backbone here; an imported ONNX graph lists its nodes in file order)."""
    layers = getattr(model, "trainable_layers", None)
    if callable(layers):
        return list(layers())
    return [module for module in model.modules() if any(True for _ in module.parameters(recurse=False))]


def freeze_leading_layers(model: nn.Module, count: int) -> list[nn.Module]:
    """Stop gradients in the first `count` parameter-holding layers; returns them (their BatchNorm statistics
    are kept fixed too, by `hold_frozen_statistics` after every `train()`)."""
    layers = parameter_layers(model)
    if count > len(layers):
        raise ValueError(f"model.freeze_layers = {count}, but the backbone has only {len(layers)} "
                         f"parameter-holding layers")
    for layer in layers[:count]:
        for param in layer.parameters(recurse=False):
            param.requires_grad_(False)
    if count:
        frozen = sum(p.numel() for layer in layers[:count] for p in layer.parameters(recurse=False))
        log.info("froze the first %d of %d layers (%d parameters)", count, len(layers), frozen)
    return layers[:count]


def hold_frozen_statistics(layers: list[nn.Module]) -> None:
    """Put frozen normalisation layers in eval mode, so their running statistics stay the pretrained ones."""
    for layer in layers:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) or hasattr(layer, "running_mean"):
            layer.eval()


@torch.no_grad()
def class_mean_embeddings(backbone: nn.Module, dataset: Dataset, num_classes: int, device: torch.device,
                          batch_size: int = 64, workers: int = 0) -> Tensor:
    """(num_classes, D) unit mean embedding per identity under `backbone` in eval mode (unflipped images).

    A class without a decodable image gets a zero row (its centre then trains from the margin loss alone)."""
    was_training = backbone.training
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    sums: Tensor | None = None
    counts = torch.zeros(num_classes, dtype=torch.float64)
    try:
        for batch in loader:
            if len(batch.labels) == 0:
                continue
            embeddings = backbone(to_model_input(batch.images).to(device)).double().cpu()
            embeddings = embeddings / embeddings.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if sums is None:
                sums = torch.zeros(num_classes, embeddings.shape[1], dtype=torch.float64)
            sums.index_add_(0, batch.labels.long(), embeddings)
            counts.index_add_(0, batch.labels.long(), torch.ones(len(batch.labels), dtype=torch.float64))
    finally:
        backbone.train(was_training)
    if sums is None:
        raise ValueError("head.init = 'class_mean': no training image could be embedded")
    means = sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12)
    empty = int((counts == 0).sum())
    if empty:
        log.warning("head.init = 'class_mean': %d classes have no decodable image; their centres are zero", empty)
    return means.float()


def frozen_copy(model: nn.Module) -> nn.Module:
    """An independent eval-mode copy of `model` with no gradients: the start model distillation aims at."""
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """mean(1 − cos(student_i, teacher_i)): 0 when every embedding points where the start model's does."""
    return (1.0 - torch.nn.functional.cosine_similarity(student, teacher.detach(), dim=1)).mean()
