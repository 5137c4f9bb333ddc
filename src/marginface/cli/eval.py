"""`marginface eval`: verification and identification of a model, a report and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from marginface.cli.common import Progress
from marginface.errors import UsageError


def register(commands: argparse._SubParsersAction) -> None:
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
        progress = Progress(pair_set.name)
        results.append(evaluate_pair_set(pair_set, embedder, FacePreprocessor(detector, embedder.input_size),
                                         not args.no_flip, args.batch_size, args.search, progress,
                                         perturbations, args.perturb_before_detection))
        progress.close()
    for folder in args.identification:
        name = Path(folder).name
        progress = Progress(name)
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
