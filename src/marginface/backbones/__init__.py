"""Backbones: (B, 3, 112, 112) float in [−1, 1] → (B, D) embeddings, arcface_torch state-dict compatible."""

from marginface.backbones.complexity import Complexity, measure
from marginface.backbones.contract import Backbone, GradCheckpointing
from marginface.backbones.io import load, load_weights, save
from marginface.backbones.iresnet import IResNet, iresnet
from marginface.backbones.mobilefacenet import MobileFaceNet, mobilefacenet
from marginface.backbones.onnx_import import OnnxBackbone, OnnxImportError, import_onnx
from marginface.backbones.registry import backbone_names, get_backbone

__all__ = ["Backbone", "Complexity", "GradCheckpointing", "IResNet", "MobileFaceNet", "OnnxBackbone", "OnnxImportError",
           "backbone_names", "get_backbone", "import_onnx", "iresnet", "load", "load_weights", "measure",
           "mobilefacenet", "save"]
