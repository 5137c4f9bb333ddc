"""`marginface data ...`: pack, bin, align, check and lfw-split over the data library."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from marginface.cli.common import Progress


def register(commands: argparse._SubParsersAction) -> None:
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
    _add_check_command(sub)

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

    with Progress("pack") as progress:
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
    with Progress("align") as progress:
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
        progress = Progress(f"align {part}")
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


def _add_check_command(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="full scan of a pack, .bin or identity folder before a long run",
                           description="Read everything: every RecordIO header and framing, every image decode, "
                                       "labels against the class range and identity records, counts per "
                                       "identity. Exit status 0 when nothing is wrong, 2 when problems were found.")
    check.add_argument("path", help="pack directory or train.rec, verification .bin, or identity folder")
    check.add_argument("--max-problems", type=int, default=20, help="problems listed in full (default 20)")
    check.set_defaults(handler=_run_data_check)


def _run_data_check(args: argparse.Namespace) -> int:
    from marginface.data.check import check_data

    with Progress("check") as progress:
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
