"""``alexnet export``: a trained network as ONNX, safetensors or a ``.pt2`` program, checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alexnet.cli.options import (
    TRAINED,
    given,
    whole,
)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a network as ONNX, safetensors or a .pt2 program",
                       description="Write a trained network for use elsewhere: ONNX (any batch "
                       "size, preprocessing in its metadata), safetensors (weights, statistics "
                       "and recipe; no code runs when read) or .pt2 (torch.export, needs only "
                       "PyTorch). The written file is read back and its outputs compared with "
                       "PyTorch's (ONNX: in onnxruntime, where installed).")  # fmt: skip
    p.add_argument("checkpoint", type=given, metavar="CHECKPOINT", help=TRAINED)
    p.add_argument(
        "out", type=given, metavar="OUT", help="the file to write (its folder must exist)"
    )
    p.add_argument("--format", metavar="{onnx,safetensors,pt2}",
                   help="default: from OUT's suffix (.onnx, .safetensors, .pt2)")  # fmt: skip
    p.add_argument("--batch", type=whole(1, 1024), default=7,
                   help="the check compares outputs at batch 1 and this (default 7)")  # fmt: skip
    p.add_argument("--opset", type=whole(7, 99), help="ONNX opset (default: the exporter's own)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it exists (default: refuse)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.inference.export import check_request, export
    from alexnet.inference.trained import load_trained

    out = Path(args.out)
    check_request(out, args.format, batch=args.batch, opset=args.opset,
                  overwrite=args.overwrite)  # before any loading  # fmt: skip
    net = load_trained(args.checkpoint)
    if out.exists() and out.resolve() == net.path.resolve():
        raise FileExistsError(f"{out}: the checkpoint being exported; write to another name")
    if out.resolve().parent == net.path.resolve().parent and out.name in ("best.pt", "last.pt"):
        raise FileExistsError(f"{out}: a checkpoint of the run being exported (--resume needs "
                              "last.pt); write to another name")  # fmt: skip
    result = export(net, out, args.format, batch=args.batch, opset=args.opset,
                    overwrite=args.overwrite)  # fmt: skip
    c, h, w = result.input_shape
    print(f"wrote {out} ({result.format}, {out.stat().st_size / 1e6:.1f} MB): input "
          f"(batch, {c}, {h}, {w}), any batch size")  # fmt: skip
    if result.note:
        print(result.note)
    if result.check is not None:
        print(result.check.line())
        if not result.check.ok:
            print(f"alexnet export: warning: {out} differs from PyTorch by "
                  f"{result.check.relative:.2g} of the largest logit", file=sys.stderr)  # fmt: skip
            sys.exit(1)
