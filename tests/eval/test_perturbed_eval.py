"""`marginface eval --perturb / --perturb-before-detection / --pairs-from` end to end on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from marginface.backbones import get_backbone, load, save
from marginface.cli import main
from marginface.data.image import decode_image
from marginface.data.pair_sampler import sample_pairs
from marginface.data.perturb import parse_perturbations
from marginface.data.synthetic import synthetic_face
from marginface.data.transforms import to_model_input
from marginface.eval.pipeline import evaluate_pair_set, perturbed_face
from marginface.eval.verification import evaluate_verification
from marginface.infer.detect import YuNetDetector
from marginface.infer.embedder import TorchEmbedder
from marginface.infer.prepare import FacePreprocessor
from tests.data.helpers import write_identity_folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = get_backbone("mbf", num_features=32, blocks=(1, 1, 1, 1), scale=1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # running statistics = the average over the warm-up batch
    faces = np.stack([synthetic_face(7, k, 0) for k in range(16)])
    with torch.no_grad():
        model(to_model_input(torch.from_numpy(faces)))  # BN statistics of face-like images, not the identity
    return save(model.eval(), "mbf", tmp_path_factory.mktemp("model"), blocks=(1, 1, 1, 1), scale=1)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_identity_folder(tmp_path_factory.mktemp("faces"), identities=20, per_identity=3)


def test_cli_perturb_end_to_end(tiny_model: Path, faces: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_model), "--pairs-from", str(faces), "--no-flip", "--folds", "0,1,2",
                 "--perturb", "blur:2", "--perturb", "gray", "--out", str(tmp_path)]) == 0
    assert "perturbed (aligned face): blur:2 then gray" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["perturbation"]["specs"] == ["blur:2", "gray"]
    assert report["perturbation"]["applied_to"] == "aligned face"
    assert report["options"]["perturb"] == ["blur:2", "gray"]
    verification = report["verification"][0]
    assert verification["perturbation"] == ["blur:2", "gray"] and verification["num_pairs"] == 36


def test_pipeline_perturbation_changes_scores_reproducibly(tiny_model: Path, faces: Path) -> None:
    embedder = TorchEmbedder(load(tiny_model))
    pair_set = sample_pairs(faces, pairs_per_fold=2).subset([0, 1, 2])

    def scores(*specs: str) -> np.ndarray:
        return evaluate_pair_set(pair_set, embedder, flip=False, perturbations=parse_perturbations(specs)).scores

    clean, occluded = scores(), scores("occlude:0.3")
    assert not np.allclose(clean, occluded)
    np.testing.assert_array_equal(occluded, scores("occlude:0.3"))


def test_pipeline_passes_the_threshold_search_to_the_verification(tiny_model: Path, faces: Path) -> None:
    pair_set = sample_pairs(faces, pairs_per_fold=2).subset([0, 1, 2])
    grid = evaluate_pair_set(pair_set, TorchEmbedder(load(tiny_model)), flip=False, search="grid")
    assert grid.verification.threshold_search == "grid"
    expected = evaluate_verification(grid.scores, grid.issame, pair_set.folds, search="grid")
    assert [f.threshold for f in grid.verification.folds] == [f.threshold for f in expected.folds]
    assert grid.verification.accuracy_threshold == expected.accuracy_threshold


def test_cli_perturb_errors_are_one_line(tiny_model: Path, faces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_model), "--pairs-from", str(faces), "--perturb", "blur:big"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "marginface: error: bad perturbation 'blur:big': SIGMA must be a number, found 'big'"
    assert main(["eval", str(tiny_model), "--pairs-from", str(faces), "--perturb", "blur:1",
                 "--perturb-before-detection"]) == 2
    assert "--perturb-before-detection needs --perturb and --detector" in capsys.readouterr().err


def test_perturb_before_detection_counts_failures(shared_data: Path) -> None:
    detector = YuNetDetector(shared_data / "face_detection_yunet" / "face_detection_yunet_2023mar.onnx")
    photos = sorted((shared_data / "lfw" / "lfw-deepfunneled" / "Aaron_Peirsol").glob("*.jpg"))[:3]
    rgbs = [decode_image(p.read_bytes(), str(p)) for p in photos]
    counts = {}
    for spec in ("downscale:112", "downscale:4"):
        prep = FacePreprocessor(detector)
        out = [perturbed_face(rgb, prep, parse_perturbations([spec]), before_detection=True) for rgb in rgbs]
        assert all(face.shape == (112, 112, 3) for face in out)
        counts[spec] = (prep.aligned, prep.fallbacks)
    assert counts["downscale:112"] == (3, 0)
    assert counts["downscale:4"][1] == 3  # a face of ~4 pixels is not found: every photo falls back
    prep = FacePreprocessor(detector)
    after = perturbed_face(rgbs[0], prep, parse_perturbations(["downscale:4"]))
    assert prep.fallbacks == 0 and np.unique(after.reshape(-1, 3), axis=0).shape[0] > 1
