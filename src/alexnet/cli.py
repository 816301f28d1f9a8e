"""The ``alexnet`` command: one entry point, one sub-command per job.

Errors a user can fix (bad paths, unknown names, malformed options, a full disk) print one line
and exit 2; a diverged run exits 3; anything else is a bug and keeps its traceback.
ALEXNET_DEBUG=1 shows the traceback always.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from alexnet import __version__
from alexnet.config import recipe_names, split_assignment

# What every command that uses a trained network accepts (trained.load_trained reads them all).
TRAINED = ("a checkpoint, a run folder (its best.pt), a .safetensors or .pth weights file, or "
           "'torchvision' for torchvision's ImageNet weights")  # fmt: skip


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


# Types for the parser: every number a user gives has a range, so zero, negative, empty and
# absurd values are refused with the flag named before anything runs (argparse adds it).
def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {low} to {high}")
        return value

    return parse


def positive(high: float) -> Callable[[str], float]:
    """A number above 0, at most ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range: above 0, at most {high:g}")
        return value

    return parse


def minutes(text: str) -> float:
    """A time budget in minutes: at least one (a sweep alone takes longer), at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 7 * 24 * 60:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is out of range: 1 to {7 * 24 * 60} minutes")
    return value


def names(text: str) -> list[str]:
    """A comma-separated list of one or more names."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of names, none empty")
    return items


def folder_name(text: str) -> str:
    """One plain folder name: a split of a data set."""
    if not text or text in (".", "..") or "/" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: one folder name, e.g. train or val")
    return text


def rates(text: str) -> list[float]:
    """A comma-separated list of learning rates, each above 0 and at most 10."""
    one = positive(10.0)
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("needs one or more rates, e.g. 0.01,0.03")
    return [one(t) for t in items]


def cmd_summary(args: argparse.Namespace) -> None:
    from alexnet.summary import format_table, parse_input, summarise, to_json

    shape = parse_input(args.input) if args.input else None
    summary = summarise(args.arch, shape, **dict(split_assignment(o) for o in args.option))
    print(to_json(summary) if args.json else format_table(summary))


def cmd_lrn_divisor(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    from alexnet.lrn_divisor import describe, format_table, measure, open_network

    net = open_network(args.network, args.scale, args.seed)
    rows, skipped = measure(net, [Path(p) for p in args.images])
    heading = describe(net, len(args.images) - len(skipped))
    if args.json:
        print(json.dumps({"network": heading, "layers": [asdict(r) for r in rows]}, indent=1))
    else:
        print(format_table(rows, heading))
    for line in skipped:
        print(f"alexnet lrn-divisor: skipped {line}", file=sys.stderr)


def _start_run(args: argparse.Namespace):
    """A new run's recipe and folder; under torchrun rank 0 makes the folder, all use it."""
    import torch.distributed as dist

    from alexnet.config import apply_overrides, load_recipe
    from alexnet.runs import create_run_dir
    from alexnet.runtime import init_distributed

    recipe = load_recipe(args.recipe)
    if args.data is not None:
        if not Path(args.data).exists():
            raise FileNotFoundError(f"--data {args.data}: no such file or folder")
        recipe.data.root = args.data  # made absolute with the rest of the recipe (train.resolve)
    if args.weights is not None:
        recipe.model.weights = args.weights
    recipe.model.freeze_features |= args.freeze_features
    recipe = apply_overrides(recipe, args.overrides)
    rank, world, _ = init_distributed()
    made = [None]
    if rank == 0:
        try:
            made[0] = create_run_dir(Path(args.runs or "runs"), args.name, recipe.name)
        except (ValueError, FileExistsError) as exc:
            made[0] = exc  # every rank raises it, so none waits forever
    if world > 1:
        dist.broadcast_object_list(made, src=0)
    if isinstance(made[0], Exception):
        raise made[0]
    return recipe, Path(made[0])


def _hold(run_dir: Path):
    """The run folder's lock, taken by the process that writes it (rank 0 under torchrun)."""
    import contextlib

    from alexnet.runs import hold_run

    writer = int(os.environ.get("RANK", "0")) == 0 and run_dir.is_dir()
    return hold_run(run_dir) if writer else contextlib.nullcontext()


def cmd_train(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from alexnet.files import missing_folders, remove_empty
    from alexnet.processes import Stopped
    from alexnet.runs import open_run, remove_failed_start
    from alexnet.runtime import StopFlag
    from alexnet.train import TrainingError, fit

    if args.resume and (args.recipe or args.data or args.name or args.weights
                        or args.freeze_features or args.runs):  # fmt: skip
        raise UserError("--resume continues a run as it was, in its folder; drop --recipe, "
                        "--data, --name, --runs, --weights and --freeze-features")  # fmt: skip
    if args.checkpoint_recipe and not args.resume:
        raise UserError("--checkpoint-recipe goes with --resume RUN (it says which recipe a "
                        "resumed run continues under)")  # fmt: skip
    if not (args.resume or args.recipe):
        raise UserError(f"give --recipe NAME ({', '.join(recipe_names())}) or --resume RUN_DIR")
    progress = not args.no_progress
    try:
        with StopFlag() as stop:  # a signal before training stops at once, leaving nothing
            if args.resume:
                with _hold(Path(args.resume)):
                    r = open_run(Path(args.resume), args.overrides, args.checkpoint_recipe)
                    fit(r.recipe, r.run_dir, resume_from=r.checkpoint, changes=r.changes,
                        progress=progress, stop=stop, report=not args.no_report)  # fmt: skip
            else:
                runs = Path(args.runs or "runs")
                made = missing_folders(runs)
                recipe, run_dir = _start_run(args)
                with _hold(run_dir):
                    try:
                        fit(recipe, run_dir, progress=progress, stop=stop,
                            report=not args.no_report)  # fmt: skip
                    except BaseException:
                        remove_failed_start(run_dir)
                        remove_empty(made)  # and the runs folder made for it
                        raise
    except TrainingError as exc:
        print(f"alexnet train: error: {exc}", file=sys.stderr)
        sys.exit(3)
    except Stopped as exc:
        print(f"alexnet train: stopped by signal {exc.signum} before training began; "
              "nothing was kept", file=sys.stderr)  # fmt: skip
        sys.exit(128 + exc.signum)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def cmd_prepare(args: argparse.Namespace) -> None:
    from alexnet.data.prepare import Plan, finished_chunks, prepare, verify_store
    from alexnet.files import WriteError
    from alexnet.processes import Stopped
    from alexnet.runtime import StopFlag

    if args.verify:
        if len(args.paths) != 1:
            raise UserError("--verify takes one store folder: alexnet prepare --verify STORE")
        problems = verify_store(Path(args.paths[0]))
        for line in problems:
            print(line)
        print(
            f"{args.paths[0]}: {'damaged: ' + str(len(problems)) + ' problem(s)' if problems else 'every chunk matches its sha256'}"
        )
        sys.exit(1 if problems else 0)
    if len(args.paths) != 2:
        raise UserError("give the images and the store to write: alexnet prepare SRC OUT")
    src, out = map(Path, args.paths)
    if args.quality is not None and args.layout != "jpeg":
        raise UserError(f"--quality {args.quality}: applies to --layout jpeg only (this store's "
                        f"layout is {args.layout})")  # fmt: skip
    plan = Plan(args.layout, args.size, 3, args.quality or Plan.quality,
                int(args.max_megapixels * 1e6))  # fmt: skip
    workers = len(os.sched_getaffinity(0)) if args.workers is None else args.workers
    try:
        with StopFlag():  # SIGTERM as Ctrl-C: the workers end now, the chunks done are kept
            meta = prepare(src, out, splits=args.split or None, plan=plan, workers=workers,
                           chunk=args.chunk, progress=not args.no_progress)  # fmt: skip
    except Stopped as exc:
        print(f"alexnet prepare: interrupted by signal {exc.signum}; the chunks written are "
              "kept, and the same command continues from them", file=sys.stderr)  # fmt: skip
        sys.exit(128 + exc.signum)
    except WriteError as exc:
        if not finished_chunks(out):
            raise
        raise WriteError(f"{exc}; the chunks finished are kept: make room, then the same "
                         "command continues from them") from None  # fmt: skip
    for split, info in sorted(meta["splits"].items()):
        skipped = len(info["skipped"])
        listed = f" (listed in {out / split / 'skipped.txt'})" if skipped else ""
        print(f"{out}: {split} {info['images']} images, {skipped} skipped{listed}")


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    from alexnet.eval_checkpoints import evaluate_checkpoints
    from alexnet.trained import load_trained

    nets = [load_trained(Path(c)) for c in args.checkpoints]
    data = _existing_data(args.data)
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


def cmd_predict(args: argparse.Namespace) -> None:
    import json

    from alexnet.predict import predict_files
    from alexnet.trained import load_trained

    net = load_trained(args.checkpoint)
    answers = predict_files(
        net,
        [Path(p) for p in args.images],
        top=args.top,
        crops=args.crops,
        precision=args.precision,
        max_megapixels=args.max_megapixels,
    )
    if args.json:
        print(json.dumps([a.to_dict() for a in answers], indent=1))
    for a in answers:
        if a.error:
            print(f"alexnet predict: {a.image}: {a.error}", file=sys.stderr)
        elif not args.json:
            print(a.image)
            for cls, name, p in a.top:
                print(f"  {100 * p:6.2f}%  {name}" + (f" ({cls})" if cls != name else ""))
    sys.exit(1 if any(a.error for a in answers) else 0)


def cmd_figures(args: argparse.Namespace) -> None:
    from alexnet.figure_data import figures_of_checkpoint
    from alexnet.processes import Stopped
    from alexnet.runtime import StopFlag

    data = _existing_data(args.data)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: a file, not a folder for the figures")
    try:
        with StopFlag():  # a signal midway leaves none of the set (figure_data.write_figures)
            written, data, tb = figures_of_checkpoint(
                args.run, data, Path(args.out) if args.out else None, args.split,
                args.neighbours_limit, progress=sys.stderr.isatty() and not args.no_progress)  # fmt: skip
    except Stopped as exc:
        print(f"alexnet figures: stopped by signal {exc.signum}; nothing was kept",
              file=sys.stderr)  # fmt: skip
        sys.exit(128 + exc.signum)
    for path in written.values():
        print(path)
    if data.neighbours is None:
        print(f"{args.data}: no training images apart from the ones shown; Figure 4 right "
              "(nearest training images) left out")  # fmt: skip
    else:
        print(f"neighbours searched among {data.searched} of {data.training} training images")
    print(f"TensorBoard: {tb} (tensorboard --logdir {tb})")


def cmd_export(args: argparse.Namespace) -> None:
    from alexnet.export import check_request, export
    from alexnet.trained import load_trained

    out = Path(args.out)
    check_request(out, args.format, batch=args.batch, opset=args.opset,
                  overwrite=args.overwrite)  # before any loading  # fmt: skip
    net = load_trained(args.checkpoint)
    if out.exists() and out.resolve() == net.path.resolve():
        raise FileExistsError(f"{out}: the checkpoint being exported; write to another name")
    if out.resolve().parent == net.path.resolve().parent and out.name in ("best.pt", "last.pt"):
        raise FileExistsError(f"{out}: a checkpoint of the run being exported (--resume needs "
                              "last.pt); write to another name")  # fmt: skip
    result = export(net, out, args.format, batch=args.batch, opset=args.opset)
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


def cmd_lr_find(args: argparse.Namespace) -> None:
    from alexnet.config import apply_overrides, load_recipe
    from alexnet.train import find_learning_rate

    recipe = load_recipe(args.recipe)
    if args.data is not None:
        recipe.data.root = args.data
    recipe = apply_overrides(recipe, args.overrides)
    plot = Path(args.plot)
    if (plot.exists() or plot.is_symlink()) and not plot.is_file():
        raise UserError(f"--plot {plot}: not a regular file (a device, pipe, socket or a link to "
                        "nothing); give the name of a file to write")  # fmt: skip
    if not plot.parent.is_dir() or plot.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg"):
        raise UserError(f"--plot {plot}: needs an existing folder and a .png, .pdf, .svg or "
                        ".jpg name")  # fmt: skip
    test = find_learning_rate(recipe, args.steps, plot)
    print(f"loss lowest at learning rate {test.minimum:.3g}; suggested {test.suggestion:.3g} "
          f"(--set optim.lr={test.suggestion:.3g}); plot: {plot}")  # fmt: skip
    if test.at_edge:
        print(f"warning: the lowest loss is at the {'first' if test.minimum == test.rates[0] else 'last'} "
              "rate tried, so no real minimum was found: the suggestion is unreliable; try more "
              "--steps, or look at the plot", file=sys.stderr)  # fmt: skip


def cmd_experiment(args: argparse.Namespace) -> None:
    from alexnet.config import load_recipe
    from alexnet.experiments import run_ablations, run_relu_vs_tanh
    from alexnet.experiments.sweep import AGAIN
    from alexnet.files import text_name
    from alexnet.processes import Stopped
    from alexnet.runtime import StopFlag

    recipe = load_recipe(args.recipe)
    if args.data is not None:
        recipe.data.root = str(_existing_data(args.data).resolve())
    out = Path(args.out or Path("runs") / "experiments" / f"{args.experiment}-{recipe.name}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file; an experiment writes a folder of runs")
    text_name(out, "TensorBoard")  # each of its runs logs there
    if (out / "last.pt").exists() or (out / "recipe.toml").is_file():
        raise UserError(f"--out {out}: a training run's folder; give the experiment a folder "
                        "of its own")  # fmt: skip
    progress = not args.no_progress and sys.stderr.isatty()
    given = {o for o, v in (("--budget", args.budget), ("--rates", args.rates),
                            ("--seeds", args.seeds), ("--epochs", args.epochs),
                            ("--variants", args.variants)) if v is not None}  # fmt: skip
    given |= {"--full"} if args.full else set()
    other = given - ({"--budget", "--rates"} if args.experiment == "relu-vs-tanh" else
                     {"--seeds", "--epochs", "--variants", "--full"})  # fmt: skip
    if other or {"--full", "--seeds"} <= given or {"--full", "--epochs"} <= given:
        wrong = ", ".join(sorted(other)) or "--full with --seeds or --epochs"
        raise UserError(f"{wrong}: not for {args.experiment} (see --help)")
    try:
        with StopFlag():  # between runs (within one, the run checkpoints first)
            if args.experiment == "relu-vs-tanh":
                budget = 15.0 if args.budget is None else args.budget
                run_relu_vs_tanh(recipe, out, budget_minutes=budget, progress=progress,
                                 **({"rates": args.rates} if args.rates is not None else {}))  # fmt: skip
            else:
                if args.full:
                    seeds, epochs = 3, None
                else:
                    seeds = 2 if args.seeds is None else args.seeds
                    epochs = 3 if args.epochs is None else args.epochs
                run_ablations(recipe, out, seeds=seeds, epochs=epochs, progress=progress,
                              **({"variants": args.variants} if args.variants else {}))  # fmt: skip
    except Stopped as exc:
        print(f"alexnet experiment: stopped by signal {exc.signum}; {AGAIN}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    print((out / "results.md").read_text())
    print(f"written: {out / 'results.md'}, {out / 'results.json'} and the plot beside them")


def cmd_cache(args: argparse.Namespace) -> None:
    from alexnet.data.cache import PARTS, cache_dir, cache_usage, clear_cache

    if args.action == "info" and args.parts:
        raise UserError(f"alexnet cache info takes no parts (got {' '.join(args.parts)})")
    if args.action == "clear":
        parts = args.parts or [p for p in PARTS if p != "downloads"]
        freed = clear_cache(parts)
        print(f"cleared {', '.join(parts)} in {cache_dir()}: {freed / 1e6:.1f} MB freed")
        return
    usage = cache_usage()
    print(f"{cache_dir()} ($ALEXNET_CACHE to move it)")
    for part, size in usage.items():
        print(f"  {part:10s} {size / 1e6:10.1f} MB")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network from a recipe, or resume a run")
    p.add_argument(
        "--recipe",
        help=f"recipe name ({', '.join(recipe_names())}) or .toml path",
    )
    p.add_argument("--data", help="data folder or archive (sets data.root, stored absolute)")
    p.add_argument("--weights", metavar="FILE",
                   help="fine-tune: start from these weights (a checkpoint, run folder, "
                        ".safetensors or .pth file, or 'torchvision'); an output layer of "
                        "another class count is replaced (sets model.weights)")  # fmt: skip
    p.add_argument(
        "--freeze-features",
        action="store_true",
        help="fine-tune the classifier only (sets model.freeze_features)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe key, e.g. --set optim.lr=0.02; with --resume only "
                        "optim.lr and epochs")  # fmt: skip
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    p.add_argument("--checkpoint-recipe", action="store_true",
                   help="with --resume: continue under the checkpoint's recipe even where the "
                        "folder's recipe.toml says otherwise")  # fmt: skip
    p.add_argument("--runs", help="folder that holds run folders (default runs)")
    p.add_argument("--name", help="run folder name (default: recipe and time)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="no report.md and figures at the end (alexnet figures draws them later)",
    )
    p.set_defaults(func=cmd_train)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode a folder of images once into a store for training",
                       description="Decode, rescale (short side 256) and centre-crop every image "
                       "once into a store that training reads without decoding, with the "
                       "training set's mean image and colour PCA. Resumes after a kill.")  # fmt: skip
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="SRC OUT: the images (train/<class>/*, val/<class>/*, ILSVRC's flat val/ "
                        "with its labels, or <wnid>_*.JPEG files; a folder or a .tar(.gz)) and "
                        "the store folder to write; with --verify, the store alone")  # fmt: skip
    p.add_argument("--split", action="append", metavar="NAME", type=folder_name,
                   help="prepare only this split (repeatable; a flat folder is one split, "
                        "train unless named)")  # fmt: skip
    p.add_argument("--layout", default="raw", choices=("raw", "jpeg", "files"),
                   help="raw uint8 (fastest, largest), jpeg at 256 (about 1/6 the size), or "
                        "files (an index of the originals, decoded at each use)")  # fmt: skip
    p.add_argument(
        "--size", type=whole(8, 4096), default=256, help="stored side in pixels (default 256)"
    )
    p.add_argument("--workers", type=whole(0, 256),
                   help="processes (default: every core; 0: this one)")  # fmt: skip
    p.add_argument(
        "--chunk", type=whole(1, 100_000), default=1000, help="images per chunk (default 1000)"
    )
    p.add_argument(
        "--quality", type=whole(1, 100), help="JPEG quality of --layout jpeg (default 90)"
    )
    p.add_argument("--max-megapixels", type=positive(10_000), default=64.0,
                   help="larger images are skipped and listed (default 64)")  # fmt: skip
    p.add_argument("--verify", action="store_true",
                   help="check a store's chunks against their sha256: alexnet prepare --verify STORE")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


def _existing_data(data: str | None) -> Path | None:
    if data is not None and not Path(data).exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    return Path(data) if data is not None else None


def _crops_option(p) -> None:
    p.add_argument("--crops", type=int, choices=(1, 2, 10),
                   help="1: the centre; 2: and its mirror image; 10: the paper's corners and "
                        "centre, each mirrored too (default: as the run evaluated, 2 with "
                        "eval.tta_flip, else 1)")  # fmt: skip


def _precision_option(p, default: str | None) -> None:
    said = (
        default or "the recipe's train.precision (auto: bfloat16 where the hardware is fast at it)"
    )
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=default,
                   help=f"arithmetic of the network (default: {said})")  # fmt: skip


def _eval_data_option(p) -> None:
    p.add_argument("--data",
                   help="a store (alexnet prepare) or an image folder, or the data of a network "
                        "trained in memory (as its recipe's --data); default: the data it was "
                        "trained on")  # fmt: skip


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="top-1 and top-5 error of a network or an ensemble",
                       description="Top-1 and top-5 error, overall and per class, of one trained "
                       "network or of several whose softmax outputs are averaged, over the "
                       "centre crop or the paper's ten crops.")  # fmt: skip
    p.add_argument(
        "checkpoints", nargs="+", metavar="CHECKPOINT", help=f"{TRAINED}; several: an ensemble"
    )
    _eval_data_option(p)
    p.add_argument("--split", help="which split (default: val, else test)")
    _crops_option(p)
    _precision_option(p, None)
    p.add_argument("--batch", type=whole(1, 4096), default=50, help="images per batch (default 50)")
    p.add_argument(
        "--workers", type=whole(0, 64), default=0, help="processes reading images (default 0)"
    )
    p.add_argument("--json", action="store_true", help="print every figure, per class too, as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="top classes of image files, with probabilities",
                       description="The top classes of each image, with their names and "
                       "probabilities, preprocessed as the network's training images were. A file "
                       "that cannot be read is reported and the others answered; the exit status "
                       "is 1 when any failed.")  # fmt: skip
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=TRAINED)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files of any size and mode")
    p.add_argument("--top", type=whole(1, 100_000), default=5, help="classes per image (default 5)")
    _crops_option(p)
    _precision_option(p, "fp32")
    p.add_argument("--max-megapixels", type=positive(10_000),
                   help="larger images are refused (default: the network's data.max_megapixels, "
                        "64 unless its recipe said otherwise)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the answers as JSON")
    p.set_defaults(func=cmd_predict)


def _add_figures(sub) -> None:
    p = sub.add_parser("figures", help="the paper's figures of a trained network, as PNG files",
                       description="Figure 3 (conv1's kernels, tower by tower), Figure 4 (test "
                       "images with their top-5 predictions, and beside their nearest training "
                       "images by the last hidden layer's features), the training curves and "
                       "the test set's confusion matrix, as PNG files and in TensorBoard.")  # fmt: skip
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help=TRAINED)
    _eval_data_option(p)
    p.add_argument("--out", help="folder for the PNG files (default: figures/ in the checkpoint's "
                                 "folder)")  # fmt: skip
    p.add_argument("--split", help="which split to show (default: val, else test)")
    p.add_argument("--neighbours-limit", type=whole(0, 10**9), metavar="N",
                   help="search N evenly spaced training images for the nearest ones (default: "
                        "all of an in-memory set, 10000 of a store's or folder's; 0: all)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_figures)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a network as ONNX, safetensors or a .pt2 program",
                       description="Write a trained network for use elsewhere: ONNX (any batch "
                       "size, preprocessing in its metadata), safetensors (weights, statistics "
                       "and recipe; no code runs when read) or .pt2 (torch.export, needs only "
                       "PyTorch). The written file is read back and its outputs compared with "
                       "PyTorch's (ONNX: in onnxruntime, where installed).")  # fmt: skip
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=TRAINED)
    p.add_argument("out", metavar="OUT", help="the file to write (its folder must exist)")
    p.add_argument("--format", metavar="{onnx,safetensors,pt2}",
                   help="default: from OUT's suffix (.onnx, .safetensors, .pt2)")  # fmt: skip
    p.add_argument("--batch", type=whole(1, 1024), default=7,
                   help="the check compares outputs at batch 1 and this (default 7)")  # fmt: skip
    p.add_argument("--opset", type=whole(7, 99), help="ONNX opset (default: the exporter's own)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it exists (default: refuse)")  # fmt: skip
    p.set_defaults(func=cmd_export)


def _add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="the paper's claims as experiments: relu-vs-tanh, ablations",
                       description="relu-vs-tanh: Figure 1, the four-layer network with ReLU, "
                       "tanh and sigmoid units, each at its best rate, within --budget minutes; "
                       "how many times faster ReLU reaches 25% training error. ablations: the "
                       "network without LRN, overlapping pooling, dropout, PCA colour noise or "
                       "two towers, over several seeds. A killed experiment, started again with "
                       "the same command, continues where it stopped.")  # fmt: skip
    p.add_argument("experiment", choices=("relu-vs-tanh", "ablations"))
    p.add_argument("--recipe", default="cifar10",
                   help="the base recipe: its data and hardware settings (relu-vs-tanh) or the "
                        "whole network and training (ablations); default cifar10")  # fmt: skip
    p.add_argument("--data", help="data folder or archive (sets data.root)")
    p.add_argument("--out", help="the experiment's folder (default runs/experiments/NAME-RECIPE)")
    p.add_argument(
        "--budget",
        type=minutes,
        help="relu-vs-tanh: minutes of wall time, sweep included (default 15)",
    )
    p.add_argument("--rates", type=rates, help="relu-vs-tanh: the learning rates tried for each activation, "
                                   "comma-separated (default 0.003,0.01,0.03,0.1,0.3)")  # fmt: skip
    p.add_argument("--seeds", type=whole(1, 100), help="ablations: seeds per variant (default 2)")
    p.add_argument("--epochs", type=whole(1, 10_000),
                   help="ablations: epochs per run (default 3)")  # fmt: skip
    p.add_argument("--full", action="store_true",
                   help="ablations: 3 seeds of the recipe's own epochs (CIFAR-10: over 3 hours "
                        "on 2 CPU cores)")  # fmt: skip
    from alexnet.experiments.ablations import BY_NAME

    p.add_argument("--variants", type=names, help="ablations: a comma-separated subset "
                                      f"({', '.join(BY_NAME)})")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment)


def _add_lrn_divisor(sub) -> None:
    from alexnet.models import NETWORKS

    p = sub.add_parser("lrn-divisor", help="how much each LRN layer divides by, on given images",
                       description="The distribution of LRN's divisor (k + alpha * sum a^2)^beta "
                       "at every LRN layer (percentiles over images, positions and channels), "
                       "under both conventions of alpha (the paper's alpha, and alpha/n as "
                       "cuda-convnet, Caffe and torch use). A constant 2^0.75 = 1.682 means the "
                       "layer only divides: its activations are too small to normalise.")  # fmt: skip
    p.add_argument("network", metavar="NETWORK",
                   help=f"{TRAINED}; or a network's name ({', '.join(NETWORKS)}) for it at its "
                        "initialisation")  # fmt: skip
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (the centre view of each)"
    )
    p.add_argument("--scale", choices=("paper", "unit"),
                   help="a network at initialisation only: 'paper' feeds values 0-255 minus the "
                        "mean, as the paper did (default); 'unit' divides by ImageNet's deviation "
                        "too (a trained network's images are prepared as it was trained)")  # fmt: skip
    p.add_argument(
        "--seed", type=whole(0, 2**63 - 1), default=0, help="a network at initialisation: its seed"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_lrn_divisor)


def _add_lr_find(sub) -> None:
    p = sub.add_parser("lr-find", help="a learning-rate range test: plot and suggested rate",
                       description="Train a few dozen steps while the learning rate grows "
                       "geometrically, plot the loss, and suggest a rate (a tenth of the one "
                       "where the loss is lowest). optim.lr_find = true does this at the start "
                       "of a run.")  # fmt: skip
    p.add_argument("--recipe", required=True, help="recipe name or .toml path")
    p.add_argument("--data", help="data folder or archive (sets data.root)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe key")  # fmt: skip
    p.add_argument(
        "--steps", type=whole(3, 1_000_000), default=100, help="steps of the test (default 100)"
    )
    p.add_argument("--plot", default="lr_find.png", help="where to write the plot")
    p.set_defaults(func=cmd_lr_find)


def build_parser() -> argparse.ArgumentParser:
    from alexnet.models import NETWORKS

    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever and Hinton, 2012): networks, training, tools.",
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="print the layer table of a network")
    p.add_argument(
        "--arch", default="alexnet", choices=list(NETWORKS), help="network (default alexnet)"
    )
    p.add_argument(
        "--input", help="input shape CxHxW (default: the network's own, 3x227x227 for alexnet)"
    )
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="network option, e.g. -o lrn=false -o two_towers=false -o pooling=non-overlapping")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_summary)

    _add_train(sub)
    _add_prepare(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_figures(sub)
    _add_predict(sub)

    _add_lr_find(sub)
    _add_experiment(sub)
    _add_lrn_divisor(sub)

    p = sub.add_parser("cache", help="show or clear the cache of decoded and downloaded data")
    p.add_argument("action", nargs="?", choices=("info", "clear"), default="info")
    p.add_argument("parts", nargs="*", metavar="PART",
                   help="with clear: decoded, extracted, native and/or downloads (default: all "
                        "but downloads)")  # fmt: skip
    p.set_defaults(func=cmd_cache)
    for p in sub.choices.values():
        p.set_defaults(parser=p)  # main's errors name the command
    return parser


def _said_by_us(exc: BaseException) -> bool:
    """An error meant for the user: ours, the system's, or pathlib's symlink loop, which
    ``Path.resolve`` raises as a RuntimeError (Python 3.11 and 3.12)."""
    return not isinstance(exc, RuntimeError) or str(exc).startswith("Symlink loop from")


def _quiet_disk_failures_in_threads() -> None:
    """TensorBoard's writer thread printed a traceback when the disk filled ("Exception in
    thread Thread-1"). Such a failure is said once, in the command's one line: the writer
    raises it again in the main thread, and the next file written meets the same disk."""
    import threading

    from alexnet.files import disk_failure

    default = threading.excepthook

    def hook(args) -> None:
        if args.exc_value is None or disk_failure(args.exc_value) is None:
            default(args)

    threading.excepthook = hook


def main(argv: list[str] | None = None) -> None:
    from alexnet.files import NAMES
    from alexnet.processes import Stopped, raise_stopped

    _quiet_disk_failures_in_threads()
    if sys.stderr is None:  # `2>&-`: nowhere to say anything, but the command itself can run
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8: as \xNN, always
        with contextlib.suppress(AttributeError, ValueError):  # a stream replaced by a caller
            stream.reconfigure(errors=NAMES)
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # said by the command's own parser, so that its name is in the message
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if sys.stdout is None:  # `>&-`: what the command prints would be lost (or a traceback)
        print(f"alexnet {args.command}: error: its standard output is closed; give it one "
              "(> FILE, or > /dev/null to discard it)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    on_term = signal.signal(signal.SIGTERM, raise_stopped) or signal.SIG_DFL
    try:
        args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside the try, not at exit
    except BrokenPipeError:  # `alexnet summary --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
    except (UserError, ValueError, OSError, RuntimeError) as exc:
        if os.environ.get("ALEXNET_DEBUG") or not _said_by_us(exc):
            raise
        message = str(exc).replace("\n", " ") if not isinstance(exc, OSError) or not exc.filename \
            else f"{exc.filename}: {exc.strerror}"  # fmt: skip
        if isinstance(exc, RuntimeError):
            looped = str(exc).removeprefix("Symlink loop from ").strip("'")
            message = f"{looped}: a symbolic link that leads back to itself; point it elsewhere"
        print(f"alexnet {args.command}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Stopped as exc:  # SIGTERM outside a command's own StopFlag
        print(f"alexnet {args.command}: stopped by signal {exc.signum}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    finally:
        signal.signal(signal.SIGTERM, on_term)


if __name__ == "__main__":
    main()
