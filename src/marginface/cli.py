"""The `marginface` command: one entry point, one thin subcommand per library feature. Only this prints."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from marginface import __version__

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
    return parser


class _Progress:
    """A tqdm bar driven by (done, total) callbacks from the library."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.description, unit="img", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def _run_data_pack(args: argparse.Namespace) -> int:
    from marginface.data.pack import pack_folder

    progress = _Progress("pack")
    report = pack_folder(args.folder, args.out, progress)
    progress.close()
    print(f"packed {report.images} images of {report.classes} identities into {args.out} "
          f"(resized {report.resized}, skipped {len(report.skipped)} undecodable)")
    return 0


def _run_data_bin(args: argparse.Namespace) -> int:
    from marginface.data.pairs import read_pairs_txt, write_bin

    pair_set = read_pairs_txt(args.pairs, args.folder, ext=args.ext)
    write_bin(pair_set, args.out)
    print(f"wrote {len(pair_set)} pairs ({int(pair_set.issame.sum())} same) to {args.out}")
    return 0


def _run_data_align(args: argparse.Namespace) -> int:
    from marginface.infer.detect import YuNetDetector
    from marginface.infer.prepare import align_folder

    progress = _Progress("align")
    report = align_folder(args.raw, args.out, YuNetDetector(args.detector, score_threshold=args.score),
                          progress=progress)
    progress.close()
    print(f"aligned {report.aligned} of {report.total} images ({len(report.no_face)} without a face, "
          f"{len(report.unreadable)} unreadable); list in {args.out}/no_face.txt")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"marginface: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
