"""Classifier heads: embeddings and labels in, margin-softmax loss out."""

from marginface.heads.adaptive import AdaFace, CurricularFace, ElasticFace, MagFace
from marginface.heads.baselines import Softmax, SphereFaceOriginal
from marginface.heads.centres import spread_centres
from marginface.heads.contract import Head
from marginface.heads.fused import margin_softmax_cross_entropy
from marginface.heads.logits import apply_margin, cosine_logits
from marginface.heads.margin import ARCFACE, COSFACE, NORMFACE, SCALE, SPHEREFACE, Margin
from marginface.heads.margin_head import ArcFace, CosFace, MarginHead, NormFace, SphereFace
from marginface.heads.partial_fc import ClassSample, sample_classes, sampled_count
from marginface.heads.registry import get_head, head_names
from marginface.heads.subcenter import SubCenterArcFace

__all__ = [
    "ARCFACE", "COSFACE", "NORMFACE", "SCALE", "SPHEREFACE", "AdaFace", "ArcFace", "ClassSample", "CosFace",
    "CurricularFace", "ElasticFace", "Head", "MagFace", "Margin", "MarginHead", "NormFace", "Softmax", "SphereFace",
    "SphereFaceOriginal", "SubCenterArcFace", "apply_margin", "cosine_logits", "get_head", "head_names",
    "margin_softmax_cross_entropy", "sample_classes", "sampled_count", "spread_centres",
]
