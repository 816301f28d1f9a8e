"""``alexnet eval``: top-1 and top-5 error of a network or an ensemble, at 1, 2 or 10 crops."""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet.cli.options import (
    TRAINED,
    UserError,
    crops_option,
    eval_data_option,
    existing_data,
    folder_name,
    given,
    precision_option,
    whole,
)


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="top-1 and top-5 error of a network or an ensemble",
                       description="Top-1 and top-5 error, overall and per class, of one trained "
                       "network or of several whose softmax outputs are averaged, over the "
                       "centre crop or the paper's ten crops.")  # fmt: skip
    p.add_argument(
        "checkpoints",
        type=given,
        nargs="+",
        metavar="CHECKPOINT",
        help=f"{TRAINED}; several: an ensemble",
    )
    eval_data_option(p)
    p.add_argument("--split", type=folder_name, help="which split (default: val, else test)")
    crops_option(p)
    precision_option(p, None)
    p.add_argument("--batch", type=whole(1, 4096), default=50, help="images per batch (default 50)")
    p.add_argument(
        "--workers", type=whole(0, 64), default=0, help="processes reading images (default 0)"
    )
    p.add_argument("--json", action="store_true", help="print every figure, per class too, as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import json

    from alexnet.inference.eval_checkpoints import evaluate_checkpoints
    from alexnet.inference.trained import load_trained

    nets = [load_trained(Path(c)) for c in args.checkpoints]
    for i, a in enumerate(nets):  # a network with itself is that network, weighted: by path,
        for b in nets[i + 1 :]:  # or as the same weights in another file (an export of it)
            if a.path.resolve() == b.path.resolve() or _same_weights(a.model, b.model):
                raise UserError(f"{b.path} holds the same network as {a.path}; an ensemble "
                                "averages different networks")  # fmt: skip
    data = existing_data(args.data)
    result = evaluate_checkpoints(nets, data, split=args.split, crops=args.crops,
                                  precision=args.precision,
                                  batch=args.batch, workers=args.workers,
                                  progress=not args.no_progress)  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return
    what = f"{len(nets)} networks averaged" if len(nets) > 1 else str(nets[0].path)
    print(f"{what}, {result['crops']} crop(s), {result['images']} images of {result['data']}"
          f" ({len(result['skipped'])} skipped)")  # fmt: skip
    print(f"top-1 error {100 * result['top1_err']:.2f}%  top-5 error {100 * result['top5_err']:.2f}%"
          f"  (mean per-class top-1 accuracy {100 * result['mean_class_top1_acc']:.2f}%)")  # fmt: skip
    worst = sorted(result["per_class"], key=lambda c: -c["top1_err"])[:5]
    if len(result["per_class"]) > 5:
        print("hardest classes (top-1 error): " + ", ".join(
            f"{c['name']} {100 * c['top1_err']:.0f}%" for c in worst))  # fmt: skip
    for path, why in result["skipped"][:5]:
        print(f"skipped {path}: {why}")


def _same_weights(a, b) -> bool:
    import torch

    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
