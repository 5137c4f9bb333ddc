"""`marginface export onnx`: a trained model as ONNX, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from marginface.cli.common import non_negative_float


def register(commands: argparse._SubParsersAction) -> None:
    ex = commands.add_parser("export", help="export a trained model")
    sub = ex.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    onnx = sub.add_parser("onnx", help="RUN_DIR (or exported model dir) -> ONNX, checked against PyTorch")
    onnx.add_argument("run_dir")
    onnx.add_argument("--out", help="output .onnx (default RUN_DIR/model/model.onnx)")
    onnx.add_argument("--tolerance", type=non_negative_float, default=1e-4, help="max |ONNX - PyTorch| accepted")
    onnx.set_defaults(handler=_run_export_onnx)


def _run_export_onnx(args: argparse.Namespace) -> int:
    from marginface.infer.embedder import load_model, model_folder
    from marginface.infer.export import export_onnx_checked

    folder = model_folder(args.run_dir)
    out = Path(args.out) if args.out else folder / "model.onnx"  # a folder here is refused before the export
    out, difference = export_onnx_checked(load_model(folder), out, check_tolerance=args.tolerance)
    print(f"wrote {out} (max |ONNX - PyTorch| = {difference:.2e})")
    return 0
