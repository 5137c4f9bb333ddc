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
    _add_eval_command(commands)
    _add_train_command(commands)
    _add_export_command(commands)
    _add_serve_command(commands)
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
    ev.add_argument("--out", help="write report.json and plots here")
    ev.set_defaults(handler=_run_eval)


def _load_embedder(args: argparse.Namespace):
    from marginface.infer.embedder import OnnxInputSpec, load_embedder

    spec = None
    if args.layout or args.channels != "RGB" or args.mean != 127.5 or args.std != 127.5:
        spec = OnnxInputSpec(args.layout or "NCHW", args.channels, args.mean, args.std)
    return load_embedder(args.model, spec, args.input_name)


def _run_eval(args: argparse.Namespace) -> int:
    from marginface.data.pairs import read_bin, read_pairs_txt
    from marginface.data.synthetic import synthetic_pairs
    from marginface.eval.pipeline import evaluate_identity_folder, evaluate_pair_set
    from marginface.eval.report import summary_table, write_report
    from marginface.infer.detect import YuNetDetector
    from marginface.infer.prepare import FacePreprocessor

    embedder = _load_embedder(args)
    detector = YuNetDetector(args.detector) if args.detector else None
    sets = [read_bin(path) for path in args.bin]
    sets += [read_pairs_txt(pairs, images) for pairs, images in args.pairs]
    if args.synthetic:
        sets.append(synthetic_pairs())
    if not sets and not args.identification:
        raise ValueError("nothing to evaluate: give --bin, --pairs, --synthetic or --identification")
    if args.folds:
        keep = [int(f) for f in args.folds.split(",")]
        sets = [s.subset(keep) for s in sets]
    results, identification = [], {}
    for pair_set in sets:
        progress = _Progress(pair_set.name)
        results.append(evaluate_pair_set(pair_set, embedder, FacePreprocessor(detector, embedder.input_size),
                                         not args.no_flip, args.batch_size, args.search, progress))
        progress.close()
    for folder in args.identification:
        from pathlib import Path

        name = Path(folder).name
        progress = _Progress(name)
        identification[name] = evaluate_identity_folder(
            folder, embedder, FacePreprocessor(detector, embedder.input_size), args.min_images,
            unknown_fraction=args.unknown_fraction, flip=not args.no_flip, batch_size=args.batch_size,
            progress=progress)
        progress.close()
    print(summary_table(results, identification))
    for r in results:
        folds = " ".join(f"{100 * f.accuracy:.2f}" for f in r.verification.folds)
        print(f"{r.name} folds: {folds}  (aligned {r.aligned}, centre-crop fallbacks {r.fallbacks})")
    if args.out:
        options = {k: v for k, v in vars(args).items() if k != "handler"}
        print(f"report: {write_report(args.out, args.model, options, results, identification)}")
    return 0


def _add_train_command(commands) -> None:
    tr = commands.add_parser("train", help="train a recognizer (single process or under torchrun)",
                             description="Train from a YAML config (default: the embedded synthetic demo). "
                                         "Under torchrun every process runs this same command.")
    tr.add_argument("config", nargs="?", help="YAML config (see configs/); omitted: built-in defaults")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optim.lr=0.05 (repeatable)")
    tr.add_argument("--resume", help="'auto' (newest valid checkpoint in the run directory) or a checkpoint path")
    tr.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from marginface.train.config import load_config
    from marginface.train.distributed import init_distributed
    from marginface.train.trainer import Trainer

    config = load_config(args.config, args.set)
    ctx = init_distributed(config.device)
    bar = None

    def on_event(event: dict) -> None:
        nonlocal bar
        if not ctx.is_main:
            return
        kind = event["type"]
        if kind == "step":
            if bar is None:
                from tqdm import tqdm

                bar = tqdm(total=event["total"], desc="train", unit="step", file=sys.stderr)
            bar.update(event["step"] - bar.n)
            bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.3f}", lr=f"{event['lr']:.4g}",
                            img_s=f"{event['images_per_s']:.0f}")
        elif kind == "eval":
            message = f"step {event['step']}: {event['set']} accuracy {100 * event['accuracy']:.2f} %"
            (bar.write(message) if bar is not None else print(message))
        elif kind == "checkpoint" and bar is not None:
            bar.set_description(f"train (saved step {event['step']})")

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
    onnx.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch| accepted")
    onnx.set_defaults(handler=_run_export_onnx)


def _run_export_onnx(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marginface.backbones import load
    from marginface.infer.export import export_onnx, max_abs_difference

    root = Path(args.run_dir)
    folder = root / "model" if (root / "model" / "model.json").is_file() else root
    model = load(folder)
    out = Path(args.out) if args.out else folder / "model.onnx"
    export_onnx(model, out, check_tolerance=args.tolerance)
    print(f"wrote {out} (max |ONNX - PyTorch| = {max_abs_difference(model, out):.2e})")
    return 0


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
    sv.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import os

    try:
        from marginface.serve.server import serve
    except ImportError as err:
        raise RuntimeError(f"the HTTP service needs the serve extra: pip install 'marginface[serve]' ({err})") from err
    api_key = args.api_key or os.environ.get("MARGINFACE_API_KEY") or None
    serve(args.gallery, host=args.host, port=args.port, api_key=api_key, max_upload_mb=args.max_upload_mb)
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
    except (ValueError, FileNotFoundError, RuntimeError) as err:  # TrainingDiverged is a RuntimeError
        print(f"marginface: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
