"""The `marginface` command: one entry point, one thin subcommand per library feature. Only this prints."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from marginface import __version__
from marginface.errors import EXIT_BUG, EXIT_USER_ERROR, MarginfaceError, Unavailable, UsageError, user_error

# The library is imported inside each handler: marginface.data, .train, .infer and .backbones load torch and
# OpenCV (about 6 s), which `marginface --help`, `--version` and argument errors should not wait for.

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="marginface",
        description="Train, evaluate and deploy face recognizers with margin-based softmax losses.",
    )
    parser.add_argument("--version", action="version", version=f"marginface {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_data_commands(commands)
    _add_eval_command(commands)
    _add_train_command(commands)
    _add_export_command(commands)
    _add_recognition_commands(commands)
    _add_serve_command(commands)
    return parser


class _Progress:
    """A tqdm bar driven by (done, total) callbacks from the library."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="img", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on errors, so the error line is not glued to a half-drawn bar


def _add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="prepare data sets (pack RecordIO, build .bin, align photos)")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    pack = sub.add_parser("pack", help="aligned identity folder -> train.rec/.idx/property (insightface layout)")
    pack.add_argument("folder", help="folder with one sub-folder of aligned 112x112 images per identity")
    pack.add_argument("out", help="output directory")
    pack.set_defaults(handler=_run_data_pack)

    bin_ = sub.add_parser("bin", help="pairs.txt + image folder -> insightface verification .bin")
    bin_.add_argument("pairs", help="LFW-style pairs.txt")
    bin_.add_argument("folder", help="image folder the pairs refer to (<name>/<name>_<i:04d>.jpg)")
    bin_.add_argument("out", help="output .bin path")
    bin_.add_argument("--ext", default=".jpg", help="image file extension (default .jpg)")
    bin_.set_defaults(handler=_run_data_bin)

    align = sub.add_parser("align", help="detect + 5-point align raw photos into 112x112 crops")
    align.add_argument("raw", help="folder of raw photos (<identity>/<image>)")
    align.add_argument("out", help="output folder (same layout, JPEG)")
    align.add_argument("--detector", required=True, help="YuNet ONNX model file (face_detection_yunet_*.onnx)")
    align.add_argument("--score", type=float, default=0.6, help="detection score threshold (default 0.6)")
    align.set_defaults(handler=_run_data_align)
    _add_data_check_command(sub)

    lfw = sub.add_parser("lfw-split", help="LFW -> aligned training identities minus held-out folds' people "
                                            "(RecordIO) + the held-out folds' pairs")
    lfw.add_argument("raw", help="LFW photo folder (e.g. lfw-deepfunneled)")
    lfw.add_argument("pairs", help="LFW pairs.txt (its folds are identity-disjoint)")
    lfw.add_argument("out", help="output folder: train/, test/, rec/, test_pairs.txt, split.json")
    lfw.add_argument("--detector", required=True, help="YuNet ONNX model file (face_detection_yunet_*.onnx)")
    lfw.add_argument("--test-folds", type=int, nargs="+", default=[0, 1], help="held-out folds (default 0 1)")
    lfw.add_argument("--min-images", type=int, default=2, help="training identities need this many photos")
    lfw.set_defaults(handler=_run_data_lfw_split)


def _run_data_pack(args: argparse.Namespace) -> int:
    from marginface.data.pack import pack_folder

    with _Progress("pack") as progress:
        report = pack_folder(args.folder, args.out, progress)
    print(f"packed {report.images} images of {report.classes} identities into {args.out} "
          f"(resized {report.resized}, skipped {len(report.skipped)} undecodable)")
    return 0


def _run_data_bin(args: argparse.Namespace) -> int:
    from marginface.data.pairs import read_pairs_txt, write_bin
    from marginface.data.staging import ensure_writable

    ensure_writable(Path(args.out).parent)
    pair_set = read_pairs_txt(args.pairs, args.folder, ext=args.ext)
    write_bin(pair_set, args.out)
    print(f"wrote {len(pair_set)} pairs ({int(pair_set.issame.sum())} same) to {args.out}")
    return 0


def _run_data_align(args: argparse.Namespace) -> int:
    from marginface.data.staging import ensure_writable
    from marginface.infer.detect import YuNetDetector
    from marginface.infer.prepare import align_folder

    ensure_writable(args.out)
    with _Progress("align") as progress:
        report = align_folder(args.raw, args.out, YuNetDetector(args.detector, score_threshold=args.score),
                              progress=progress)
    print(f"aligned {report.aligned} of {report.total} images ({len(report.no_face)} without a face, "
          f"{len(report.unreadable)} unreadable); list in {args.out}/no_face.txt")
    return 0


def _run_data_lfw_split(args: argparse.Namespace) -> int:
    from marginface.data.image import decode_image, encode_image
    from marginface.data.lfw_split import link_photos, plan_lfw_split, write_split_files
    from marginface.data.pack import pack_folder
    from marginface.infer.detect import YuNetDetector
    from marginface.infer.prepare import FacePreprocessor, align_folder

    out = Path(args.out)
    split = plan_lfw_split(args.pairs, args.raw, args.test_folds, args.min_images)
    detector = YuNetDetector(args.detector)
    for part, files in (("train", [p for ps in split.train.values() for p in ps]), ("test", split.test_images)):
        link_photos(files, args.raw, out / "raw" / part)
        progress = _Progress(f"align {part}")
        report = align_folder(out / "raw" / part, out / part, detector, progress=progress)
        progress.close()
        print(f"{part}: aligned {report.aligned} of {report.total} images ({len(report.no_face)} without a face)")
    fallback = FacePreprocessor(None)  # a held-out photo without a face still takes part: centre crop, counted
    for path in split.test_images:
        target = out / "test" / path.parent.name / f"{path.stem}.jpg"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_image(fallback(decode_image(path.read_bytes(), str(path))), ".jpg"))
    report = pack_folder(out / "train", out / "rec")
    pairs, info = write_split_files(split, out)
    print(f"packed {report.images} images of {report.classes} identities into {out / 'rec'}; held-out folds "
          f"{split.test_folds}: {len(split.pair_lines)} pairs in {pairs} over {out / 'test'} "
          f"({fallback.fallbacks} centre-crop fallbacks); counts in {info}")
    return 0


def _add_eval_command(commands) -> None:
    ev = commands.add_parser("eval", help="verification (k-fold accuracy, ROC, TAR@FAR) and identification",
                             description="Evaluate an embedding model: an .onnx file, an exported model "
                                         "directory (model.json + model.safetensors) or a training run directory.")
    ev.add_argument("model", help="ONNX file, exported model directory, or run directory")
    ev.add_argument("--bin", action="append", default=[], metavar="FILE", help="insightface .bin set (repeatable)")
    ev.add_argument("--pairs", action="append", nargs=2, default=[], metavar=("PAIRS_TXT", "IMAGES"),
                    help="LFW-style pairs.txt and its image folder (repeatable)")
    ev.add_argument("--synthetic", action="store_true", help="held-out synthetic identities (the demo set)")
    ev.add_argument("--identification", action="append", default=[], metavar="FOLDER",
                    help="identity folder for closed/open-set identification (repeatable)")
    ev.add_argument("--detector", help="YuNet ONNX file: detect + align photos that are not already 112x112")
    ev.add_argument("--folds", help="comma-separated fold ids to keep (e.g. 0,1 for a quick check)")
    ev.add_argument("--no-flip", action="store_true", help="disable flip-test embeddings")
    ev.add_argument("--search", choices=["exact", "grid"], default="exact",
                    help="threshold search: exact over all scores (default) or arcface_torch's 0.01 grid")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--min-images", type=int, default=10, help="identification: images an identity needs")
    ev.add_argument("--unknown-fraction", type=float, default=0.3,
                    help="identification: share of identities kept out of the gallery as impostors")
    onnx = ev.add_argument_group("ONNX input (read from the model where possible)")
    onnx.add_argument("--input-name")
    onnx.add_argument("--layout", choices=["NCHW", "NHWC"])
    onnx.add_argument("--channels", choices=["RGB", "BGR"], default="RGB")
    onnx.add_argument("--mean", type=float, default=127.5)
    onnx.add_argument("--std", type=float, default=127.5)
    ood = ev.add_argument_group("out of distribution (docs/paper_ood.md)")
    ood.add_argument("--perturb", action="append", default=[], metavar="KIND:LEVEL",
                     help="perturb every image, seeded per image (repeatable, applied in order): blur:SIGMA, "
                          "downscale:PX, jpeg:QUALITY, occlude:FRACTION, gamma:G, gray, motion:LENGTH, pixelate:PX")
    ood.add_argument("--perturb-before-detection", action="store_true",
                     help="apply --perturb to the photo before detection (needs --detector; failures are counted)")
    ood.add_argument("--pairs-from", action="append", default=[], metavar="FOLDER",
                     help="identity folder without a pairs file: draw seeded pairs with pairs.txt's fold structure")
    ood.add_argument("--pairs-per-fold", type=int, default=300,
                     help="--pairs-from: same (and different) pairs per fold, fewer if a fold cannot supply them")
    ood.add_argument("--pair-seed", type=int, default=0, help="--pairs-from: sampler seed (default 0)")
    ev.add_argument("--out", help="write report.json and plots here")
    ev.set_defaults(handler=_run_eval)


def _load_embedder(args: argparse.Namespace):
    from marginface.infer.embedder import OnnxInputSpec, load_embedder

    spec = None
    if args.layout or args.channels != "RGB" or args.mean != 127.5 or args.std != 127.5:
        spec = OnnxInputSpec(args.layout or "NCHW", args.channels, args.mean, args.std)
    return load_embedder(args.model, spec, args.input_name)


def _run_eval(args: argparse.Namespace) -> int:
    from marginface.data.pair_sampler import sample_pairs
    from marginface.data.pairs import read_bin, read_pairs_txt
    from marginface.data.perturb import describe_perturbations, parse_perturbations
    from marginface.data.synthetic import synthetic_pairs
    from marginface.eval.pipeline import evaluate_identity_folder, evaluate_pair_set
    from marginface.eval.report import summary_table, write_report
    from marginface.infer.detect import YuNetDetector
    from marginface.infer.prepare import FacePreprocessor

    if args.out:  # before any work: a read-only or full destination must not cost a whole evaluation
        from marginface.fileio import ensure_writable_dir

        ensure_writable_dir(args.out, "--out directory")
    perturbations = parse_perturbations(args.perturb)
    if args.perturb_before_detection and not (perturbations and args.detector):
        raise UsageError("--perturb-before-detection needs --perturb and --detector (it degrades the photo "
                         "that the detector sees)")
    embedder = _load_embedder(args)
    detector = YuNetDetector(args.detector) if args.detector else None
    sets = [read_bin(path) for path in args.bin]
    sets += [read_pairs_txt(pairs, images) for pairs, images in args.pairs]
    sets += [sample_pairs(folder, pairs_per_fold=args.pairs_per_fold, seed=args.pair_seed)
             for folder in args.pairs_from]
    if args.synthetic:
        sets.append(synthetic_pairs())
    if not sets and not args.identification:
        raise UsageError("nothing to evaluate: give --bin, --pairs, --pairs-from, --synthetic or --identification")
    if args.folds:
        keep = [int(f) for f in args.folds.split(",")]
        sets = [s.subset(keep) for s in sets]
    results, identification = [], {}
    for pair_set in sets:
        progress = _Progress(pair_set.name)
        results.append(evaluate_pair_set(pair_set, embedder, FacePreprocessor(detector, embedder.input_size),
                                         not args.no_flip, args.batch_size, args.search, progress,
                                         perturbations, args.perturb_before_detection))
        progress.close()
    for folder in args.identification:
        name = Path(folder).name
        progress = _Progress(name)
        identification[name] = evaluate_identity_folder(
            folder, embedder, FacePreprocessor(detector, embedder.input_size), args.min_images,
            unknown_fraction=args.unknown_fraction, flip=not args.no_flip, batch_size=args.batch_size,
            progress=progress, perturbations=perturbations, perturb_before_detection=args.perturb_before_detection)
        progress.close()
    print(summary_table(results, identification))
    for r in results:
        folds = " ".join(f"{100 * f.accuracy:.2f}" for f in r.verification.folds)
        print(f"{r.name} folds: {folds}  (aligned {r.aligned}, centre-crop fallbacks {r.fallbacks})")
        for warning in r.warnings:
            print(f"marginface: warning: {r.name}: {warning}", file=sys.stderr)
    for name, result in identification.items():
        for warning in result.warnings:
            print(f"marginface: warning: {name}: {warning}", file=sys.stderr)
    perturbation = describe_perturbations(perturbations, args.perturb_before_detection) if perturbations else None
    if perturbation:
        print(f"perturbed ({perturbation['applied_to']}): {' then '.join(perturbation['specs'])}")
    if args.out:
        options = {k: v for k, v in vars(args).items() if k != "handler"}
        print(f"report: {write_report(args.out, args.model, options, results, identification, perturbation)}")
    return 0


def _add_train_command(commands) -> None:
    tr = commands.add_parser("train", help="train a recognizer (single process or under torchrun)",
                             description="Train from a YAML config (default: the embedded synthetic demo). "
                                         "Under torchrun every process runs this same command.")
    tr.add_argument("config", nargs="?", help="YAML config (see configs/); omitted: the embedded synthetic demo")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optim.lr=0.05 (repeatable)")
    tr.add_argument("--resume", help="'auto' (newest usable checkpoint of the run directory; refuses when all are "
                                     "unusable), 'none' (start over) or a checkpoint path")
    tr.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from marginface.train.config import DEMO_CONFIG, load_config
    from marginface.train.distributed import init_distributed
    from marginface.train.events import CheckpointEvent, EvalEvent, StartEvent, StepEvent, TrainEvent
    from marginface.train.trainer import Trainer

    if args.config is None:
        logging.getLogger("marginface.cli").info("no config given: training the embedded synthetic demo (%s)",
                                                 DEMO_CONFIG)
    config = load_config(args.config or DEMO_CONFIG, args.set)
    _refuse_mixing_runs(Path(config.output_dir), args.resume)
    ctx = init_distributed(config.device)
    bar = None

    def on_event(event: TrainEvent) -> None:
        nonlocal bar
        if not ctx.is_main:
            return
        # the bar starts before the first step, so its rate is not measured from step 5
        if isinstance(event, StartEvent):
            bar = tqdm(total=event.total, initial=event.step, desc="train", unit="step", file=sys.stderr)
        elif isinstance(event, StepEvent):
            bar.update(event.step - bar.n)
            bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}", lr=f"{event.lr:.4g}",
                            img_s=f"{event.images_per_s:.0f}")
        elif isinstance(event, EvalEvent):
            message = f"step {event.step}: {event.set_name} accuracy {100 * event.accuracy:.2f} %"
            (bar.write(message) if bar is not None else print(message))
        elif isinstance(event, CheckpointEvent) and bar is not None:
            bar.set_description(f"train (saved step {event.step})")

    trainer = Trainer(config, ctx, on_event)
    if args.resume:
        trainer.resume(args.resume)
    result = trainer.train()
    if bar is not None:
        bar.close()
    if ctx.is_main:
        accuracy = ", ".join(f"{k} {100 * v:.2f} %" for k, v in result.verification.items())
        print(f"done: {result.steps} steps in {result.seconds / 60:.1f} min, final loss {result.final_loss:.3f}; "
              f"held-out verification: {accuracy or 'none configured'}")
        print(f"run directory: {result.run_dir} (model in {result.run_dir / 'model'})")
    return 0


def _add_export_command(commands) -> None:
    ex = commands.add_parser("export", help="export a trained model")
    sub = ex.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    onnx = sub.add_parser("onnx", help="RUN_DIR (or exported model dir) -> ONNX, checked against PyTorch")
    onnx.add_argument("run_dir")
    onnx.add_argument("--out", help="output .onnx (default RUN_DIR/model/model.onnx)")
    onnx.add_argument("--tolerance", type=_non_negative_float, default=1e-4, help="max |ONNX - PyTorch| accepted")
    onnx.set_defaults(handler=_run_export_onnx)


def _refuse_mixing_runs(run_dir: Path, resume: str | None) -> None:
    """A fresh run must not land in a folder holding another run's checkpoints (a later --resume auto would
    continue the wrong one, and metrics.csv would mix both)."""
    from marginface.train.checkpoint import list_checkpoints

    if resume not in (None, "none"):
        return
    found = list_checkpoints(run_dir) if run_dir.is_dir() else []
    if found:
        raise UsageError(f"{run_dir} already holds a run (checkpoints up to step {max(c.step for c in found)}): "
                         f"continue it with --resume auto, or train into another folder (--set output_dir=...)")


def _run_export_onnx(args: argparse.Namespace) -> int:
    from marginface.infer.embedder import load_model, model_folder
    from marginface.infer.export import export_onnx_checked

    folder = model_folder(args.run_dir)
    out = Path(args.out) if args.out else folder / "model.onnx"  # a folder here is refused before the export
    out, difference = export_onnx_checked(load_model(folder), out, check_tolerance=args.tolerance)
    print(f"wrote {out} (max |ONNX - PyTorch| = {difference:.2e})")
    return 0


def _add_recognition_commands(commands) -> None:
    """verify, gallery create/list/remove/rename/stats/check, enroll and identify."""
    verify = commands.add_parser("verify", help="are two photos the same person? (exit 0 same, 1 different)")
    verify.add_argument("image1")
    verify.add_argument("image2")
    _add_model_options(verify)
    _add_threshold_options(verify, fpir=False)
    verify.add_argument("--json", action="store_true", help="print the decision as JSON")
    verify.set_defaults(handler=_run_verify)

    gallery = commands.add_parser("gallery", help="a gallery of known people (SQLite file)")
    sub = gallery.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="new gallery bound to one model, detector and threshold")
    create.add_argument("gallery", help="gallery file to create (e.g. people.db)")
    _add_model_options(create)
    _add_threshold_options(create, fpir=True)
    create.set_defaults(handler=_run_gallery_create)
    listing = sub.add_parser("list", help="identities and their template counts")
    listing.add_argument("gallery")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_run_gallery_list)
    remove = sub.add_parser("remove", help="delete an identity and its templates")
    remove.add_argument("gallery")
    remove.add_argument("name")
    remove.set_defaults(handler=_run_gallery_remove)
    rename = sub.add_parser("rename", help="rename an identity")
    rename.add_argument("gallery")
    rename.add_argument("old")
    rename.add_argument("new")
    rename.set_defaults(handler=_run_gallery_rename)
    stats = sub.add_parser("stats", help="counts, model, detector and threshold")
    stats.add_argument("gallery")
    stats.set_defaults(handler=_run_gallery_stats)
    check = sub.add_parser("check", help="verify every template (exit 0 intact, 2 damaged ones listed)",
                           description="Read every stored template and verify it: length, finite values, unit "
                                       "norm, checksum. Exit status 0 when all are intact, 2 when damaged ones "
                                       "were found (listed; with --drop also deleted).")
    check.add_argument("gallery")
    check.add_argument("--drop", action="store_true",
                       help="delete the damaged templates (one transaction); enrol those people again after")
    check.set_defaults(handler=_run_gallery_check)

    enroll = commands.add_parser("enroll", help="add people to a gallery: FOLDER/<name>/<images> or --name NAME IMG...")
    enroll.add_argument("gallery")
    enroll.add_argument("inputs", nargs="+", metavar="FOLDER_OR_IMAGE",
                        help="a folder with one sub-folder per person, or (with --name) images of one person")
    enroll.add_argument("--name", help="enrol the given images (or folders of images) as this one person")
    enroll.add_argument("--allow-shared-photo", action="store_true",
                        help="enrol a photo already enrolled under another name too (refused by default: identify "
                             "would answer whichever came first)")
    enroll.set_defaults(handler=_run_enroll)

    identify = commands.add_parser("identify", help="name every face in photos (or 'unknown'); exit 2 when an "
                                                    "image cannot be read")
    identify.add_argument("gallery")
    identify.add_argument("inputs", nargs="+", metavar="IMG_OR_FOLDER")
    identify.add_argument("--k", type=_positive_int, default=1, help="candidates listed per face (default 1)")
    identify.add_argument("--json", action="store_true",
                          help='print [{"image": path, "faces": [{"name", "score", "box", ...}]}], main face first')
    identify.add_argument("--annotate", metavar="OUT_DIR", help="write copies with boxes and names drawn")
    identify.set_defaults(handler=_run_identify)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (NaN would switch a comparison off silently)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="auto",
                        help="ONNX file, exported model or run directory; 'auto' (default): the published "
                             "MobileFaceNet, downloaded once (sha256 pinned)")
    parser.add_argument("--detector", default="auto", help="YuNet ONNX file; 'auto' (default): the published one")
    parser.add_argument("--no-flip", action="store_true", help="disable flip-test embeddings")


def _add_threshold_options(parser: argparse.ArgumentParser, fpir: bool) -> None:
    group = parser.add_argument_group("threshold (required unless --model auto, which ships calibrated ones)")
    group.add_argument("--threshold", type=float, help="fixed cosine threshold (score >= it accepts)")
    group.add_argument("--report", help="report.json of `marginface eval --out` for this model")
    group.add_argument("--far", type=float, help="with --report: the false accept rate to operate at")
    if fpir:
        group.add_argument("--fpir", type=float, help="with --report: the false positive identification rate")
    group.add_argument("--set", dest="set_name", help="with --report: which evaluated set (when several)")


def _threshold(args: argparse.Namespace, task: str):
    """The Threshold the options ask for; the shipped calibrated one for --model auto; else an error."""
    from marginface.infer.published import published_threshold
    from marginface.infer.thresholds import Threshold

    fpir = getattr(args, "fpir", None)
    if args.threshold is not None:
        if args.report or args.far is not None or fpir is not None:
            raise UsageError("give either --threshold or --report with --far/--fpir, not both")
        return Threshold.fixed(args.threshold)
    if args.report:
        if args.far is None and fpir is None:
            raise UsageError("--report needs --far" + (" or --fpir" if hasattr(args, "fpir") else ""))
        return Threshold.from_report(args.report, far=args.far, fpir=fpir, set_name=args.set_name)
    if args.far is not None or fpir is not None:
        raise UsageError("--far/--fpir need --report (the eval report.json that calibrates them)")
    if args.model != "auto":
        raise UsageError(f"no threshold for model {args.model}: give --report REPORT.json --far/--fpir (from "
                         "`marginface eval MODEL ... --out DIR`) or --threshold T; only --model auto ships "
                         "calibrated thresholds")
    return published_threshold(task)


def _run_verify(args: argparse.Namespace) -> int:
    from marginface.infer.recognizer import FaceRecognizer

    threshold = _threshold(args, "verify")
    recognizer = FaceRecognizer(args.model, args.detector, threshold=threshold, flip=not args.no_flip)
    result = recognizer.verify(args.image1, args.image2)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"score {result.score:.4f}: {'same person' if result.same else 'different people'} "
              f"(threshold {result.threshold.value:.4f}, {result.threshold.source})")
    return 0 if result.same else 1


def _run_gallery_create(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery
    from marginface.infer.recognizer import FaceRecognizer

    threshold = _threshold(args, "identify")
    recognizer = FaceRecognizer(args.model, args.detector, threshold=threshold, flip=not args.no_flip)
    with Gallery.create(args.gallery, recognizer.fingerprint, threshold, model=recognizer.model_path,
                        detector=recognizer.detector_path, flip=not args.no_flip):
        pass
    print(f"created {args.gallery}: model {recognizer.model_path}, detector {recognizer.detector_path}, "
          f"threshold {threshold.value:.4f} ({threshold.source})")
    return 0


def _run_gallery_list(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        people = gallery.identities()
    if args.json:
        print(json.dumps([p.to_dict() for p in people]))
    else:
        for person in people:
            print(f"{person.name}\t{person.templates}")
        print(f"{len(people)} identities, {sum(p.templates for p in people)} templates", file=sys.stderr)
    return 0


def _run_gallery_remove(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        gallery.remove(args.name)
    print(f"removed {args.name}")
    return 0


def _run_gallery_rename(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        gallery.rename(args.old, args.new)
    print(f"renamed {args.old} -> {args.new}")
    return 0


def _run_gallery_stats(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        print(json.dumps(gallery.stats(), indent=2))
    return 0


def _run_gallery_check(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        damaged = gallery.check()
        stats = gallery.stats()
        checked = stats["templates"] + len(damaged)
        print(f"{args.gallery}: {checked} templates of {stats['identities']} identities checked")
        if not damaged:
            print("OK: no damaged templates")
            return 0
        print(f"{len(damaged)} damaged templates (never used for a decision):")
        for item in damaged:
            print(f"  {item}")
        if args.drop:
            dropped = gallery.drop_templates([item.template_id for item in damaged])
            people = sorted({item.identity for item in damaged})
            print(f"dropped {dropped} damaged templates; enrol again: {', '.join(people)}")
        else:
            print(f"delete them with `marginface gallery check {args.gallery} --drop`, then enrol those people again")
    return 2


def _enrollment_plan(args: argparse.Namespace) -> tuple[list[tuple[str, list]], list[Path]]:
    """(person, image files) in enrolment order, every name checked before any work; and the images lying
    loose at the top of an enrolment folder (not enrolled: whose are they?)."""
    from marginface.infer.gallery import GalleryError, check_identity_name
    from marginface.infer.recognizer import IMAGE_EXTENSIONS, image_files

    if args.name is not None:
        return [(check_identity_name(args.name), image_files(args.inputs))], []
    if len(args.inputs) != 1 or not Path(args.inputs[0]).is_dir():
        raise UsageError("enroll FOLDER takes one folder with one sub-folder per person; "
                         "to enrol images of one person use --name NAME IMG...")
    root = Path(args.inputs[0])
    people = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise UsageError(f"{root} has no sub-folders (one per person expected)")
    plan = []
    for person in people:
        try:
            plan.append((check_identity_name(person.name), image_files([person])))
        except GalleryError as err:
            raise GalleryError(f"{person}: {err}; rename the folder (nothing was enrolled)") from err
    return plan, sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _run_enroll(args: argparse.Namespace) -> int:
    from marginface.fileio import sha256_file
    from marginface.infer.gallery import Gallery, GalleryError
    from marginface.infer.recognizer import FaceRecognizer

    plan, loose = _enrollment_plan(args)
    total = sum(len(files) for _, files in plan)
    skipped = [f"{path}: not in a person's sub-folder" for path in loose]
    added = people = already = unreadable = 0
    with Gallery.open(args.gallery) as gallery:
        recognizer = FaceRecognizer.from_gallery(gallery)
        progress, offset = _Progress("enroll"), 0
        for position, (name, files) in enumerate(plan):
            if not files:
                skipped.append(f"{name}: no images to enrol")
                continue
            faces, names = [], []
            for path, found in recognizer.scan(files, lambda done, _, o=offset: progress(o + done, total)):
                if isinstance(found, Exception):
                    skipped.append(_about(path, found))
                    unreadable += 1
                elif not found:
                    skipped.append(f"{path}: no face found")
                else:
                    faces.append((found[0], sha256_file(path)))
                    names.append(str(path))
            offset += len(files)
            if faces:  # one transaction per person: a crash keeps every person committed before it
                try:
                    new = gallery.enroll(name, faces, recognizer.fingerprint, photo_names=names,
                                         allow_shared_photos=args.allow_shared_photo)
                except (GalleryError, OSError) as err:
                    progress.close()
                    after = len(plan) - position - 1
                    raise GalleryError(f"{err}; enroll stopped at {name!r}: {people} people ({added} new templates) "
                                       f"were committed before it, {name!r} and the {after} after it were not"
                                       ) from err
                added, already, people = added + new, already + len(faces) - new, people + 1
        progress.close()
    repeats = f"; {already} already in the gallery from the same image" if already else ""
    print(f"enrolled {added} new templates for {people} people into {args.gallery} ({total} images{repeats})")
    if skipped:
        print(f"{len(skipped)} not enrolled:")
        for line in skipped:
            print(f"  {line}")
    if unreadable:  # as identify: every readable image was enrolled, the status says some could not be read
        print(f"marginface: error: {unreadable} of {total} images could not be read (listed above)", file=sys.stderr)
        return 2
    return 0


def _run_identify(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery
    from marginface.infer.recognizer import FaceRecognizer, image_files

    files = image_files(args.inputs)
    if not files:
        raise UsageError(f"no images in {' '.join(args.inputs)}")
    results = []
    with Gallery.open(args.gallery) as gallery:
        recognizer = FaceRecognizer.from_gallery(gallery)
        progress = _Progress("identify")
        for path, found in recognizer.scan(files, progress):
            if isinstance(found, Exception):
                results.append({"image": str(path), "faces": [], "error": str(found)})
                continue
            decisions = gallery.identify_faces(found, args.k, recognizer.fingerprint)
            results.append({"image": str(path), "faces": [d.to_dict() for d in decisions]})
            if args.annotate:
                _annotate(path, decisions, Path(args.annotate))
        progress.close()
    failed = sum("error" in item for item in results)
    status = 2 if failed else 0  # every readable image was still identified; the status says some were not
    if args.json:
        print(json.dumps(results))
        if failed:
            print(f"marginface: error: {failed} of {len(results)} images could not be read (see \"error\")",
                  file=sys.stderr)
        return status
    for item in results:
        if "error" in item:
            print(f"{item['image']}: error: {item['error'].removeprefix(item['image'] + ': ')}")
        elif not item["faces"]:
            print(f"{item['image']}: no face found")
        for face in item["faces"]:
            score = "n/a" if face["score"] is None else f"{face['score']:.4f}"
            box = ",".join(f"{v:.0f}" for v in face["box"])
            print(f"{item['image']}: {face['name']} (score {score}, box {box})")
    if failed:
        print(f"marginface: error: {failed} of {len(results)} images could not be read (listed above)", file=sys.stderr)
    return status


def _annotate(path, decisions, out_dir) -> None:
    """Write `path` with a box and 'name score' drawn for every face into out_dir (same file name, .jpg)."""
    import cv2

    from marginface.data.image import encode_image
    from marginface.infer.images import load_image

    out_dir.mkdir(parents=True, exist_ok=True)
    rgb = load_image(path).copy()  # drawn on
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    for decision in decisions:
        x, y, w, h = (round(v) for v in decision.face.box)
        colour = (0, 200, 0) if decision.name is not None else (230, 0, 0)  # RGB: known green, unknown red
        cv2.rectangle(rgb, (x, y), (x + w, y + h), colour, thickness)
        label = f"{decision.name or 'unknown'} {decision.score:.2f}"
        cv2.putText(rgb, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness)
    target = out_dir / (path.stem + ".jpg")
    counter = 1
    while target.exists():
        target = out_dir / f"{path.stem}_{counter}.jpg"
        counter += 1
    try:
        target.write_bytes(encode_image(rgb, ".jpg"))
    except OSError as err:
        raise OSError(f"{target}: cannot write the annotated copy ({err.strerror or err})") from err


def _add_serve_command(commands) -> None:
    sv = commands.add_parser("serve", help="HTTP service + web page over a gallery (FastAPI + uvicorn)",
                             description="Serve detect/embed/verify/identify and gallery enrolment over HTTP, "
                                         "with a web page at /. Binds 127.0.0.1 unless told otherwise; a "
                                         "non-loopback bind needs an API key.")
    sv.add_argument("gallery", help="gallery file made by `marginface gallery create`")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--api-key", default=None,
                    help="key every request must send as X-API-Key or 'Authorization: Bearer' "
                         "(default: $MARGINFACE_API_KEY; none means no key on loopback)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body in MiB (default 10)")
    sv.add_argument("--body-timeout", type=float, default=60.0, metavar="SECONDS",
                    help="a request body must arrive within this many seconds of its first byte, else 408 "
                         "(default 60)")
    sv.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                    help="also answer requests whose Host is NAME (repeatable; '*' any); without a key only "
                         "loopback names are served, against DNS rebinding")
    sv.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                    help="admit POST/DELETE from web pages of ORIGIN, e.g. https://app.example (repeatable); "
                         "other cross-site ones get 403")
    sv.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        from marginface.serve.server import serve
    except ImportError as err:
        raise Unavailable(f"the HTTP service needs the serve extra: pip install 'marginface[serve]' ({err})") from err
    api_key = args.api_key or os.environ.get("MARGINFACE_API_KEY") or None
    serve(args.gallery, host=args.host, port=args.port, api_key=api_key, max_upload_mb=args.max_upload_mb,
          allowed_hosts=args.allow_host, allowed_origins=args.allow_origin, body_timeout_s=args.body_timeout)
    return 0


def _add_data_check_command(sub) -> None:
    check = sub.add_parser("check", help="full scan of a pack, .bin or identity folder before a long run",
                           description="Read everything: every RecordIO header and framing, every image decode, "
                                       "labels against the class range and identity records, counts per "
                                       "identity. Exit status 0 when nothing is wrong, 2 when problems were found.")
    check.add_argument("path", help="pack directory or train.rec, verification .bin, or identity folder")
    check.add_argument("--max-problems", type=int, default=20, help="problems listed in full (default 20)")
    check.set_defaults(handler=_run_data_check)


def _run_data_check(args: argparse.Namespace) -> int:
    from marginface.data.check import check_data

    with _Progress("check") as progress:
        report = check_data(args.path, progress, keep=max(args.max_problems, 0))
    counts = [report.per_identity[c] for c in range(report.identities)] or list(report.per_identity.values())
    spread = (f" (images per identity: min {min(counts)}, median {statistics.median(counts):g}, max {max(counts)})"
              if counts else "")
    print(f"{report.path} ({report.kind}): {report.images} images, {report.decoded} decode, "
          f"{report.identities or len(report.per_identity)} identities{spread}")
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print("OK: no problems found")
        return 0
    shown = len(report.problems)
    print(f"{report.problem_count} problems found" + (f", the first {shown}:" if shown < report.problem_count else ":"))
    for problem in report.problems:
        print(f"  {problem}")
    return 2
def _error_line(err: BaseException) -> str:
    """A user's error (errors.user_error) as one line: OSError keeps its file name (a file where a folder is
    needed says so), an error re-raised from a DataLoader worker shows the worker's message (not its
    traceback), and under torchrun the line starts with this process's rank."""
    text = str(err)
    if isinstance(err, FileExistsError) and err.filename is not None and not Path(err.filename).is_dir():
        text = f"{err.filename} exists and is not a folder (a folder is needed there)"
    elif isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    if "Original Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(text.split()) or type(err).__name__
    world_size = os.environ.get("WORLD_SIZE", "1")
    return f"rank {os.environ.get('RANK', '?')} of {world_size}: {text}" if world_size not in ("", "1") else text


def _about(path: object, problem: object) -> str:
    """'PATH: problem', without saying PATH twice when the problem's message already starts with it."""
    message = str(problem)
    return message if message.startswith(f"{path}: ") else f"{path}: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # OpenCV's own warnings are not the user's business
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except Exception as err:  # noqa: BLE001 - the one place errors meet the user: theirs, or a bug
        _close_progress_bars()
        known = user_error(err)
        if known is None:
            traceback.print_exc(file=sys.stderr)
            print(f"marginface: internal error (a bug; please report it with the traceback above): "
                  f"{type(err).__name__}: {_error_line(err)}", file=sys.stderr)
            return EXIT_BUG
        if args.verbose:
            logging.getLogger("marginface").error("the traceback behind the error below", exc_info=err)
        print(f"marginface: error: {_error_line(known)}", file=sys.stderr)
        return known.exit_status if isinstance(known, MarginfaceError) else EXIT_USER_ERROR
    finally:
        _leave_process_group()


def _close_progress_bars() -> None:
    """End any progress bar a failed subcommand left open, so that the error starts its own line."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", None) or []):
        bar.close()


def _leave_process_group() -> None:
    """Leave torch.distributed if this process joined it (a no-op outside torchrun)."""
    torch_distributed = sys.modules.get("torch.distributed")
    if torch_distributed is not None and torch_distributed.is_available() and torch_distributed.is_initialized():
        torch_distributed.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
