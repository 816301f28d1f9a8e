"""``alexnet train``: a new run from a recipe, or a run resumed from its folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from alexnet.cli.options import UserError, given, minutes
from alexnet.config import recipe_names


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a network from a recipe, or resume a run")
    p.add_argument(
        "--recipe",
        type=given,
        help=f"recipe name ({', '.join(recipe_names())}) or .toml path",
    )
    p.add_argument(
        "--data", type=given, help="data folder or archive (sets data.root, stored absolute)"
    )
    p.add_argument("--weights", type=given, metavar="FILE",
                   help="fine-tune: start from these weights (a checkpoint, run folder, "
                        ".safetensors or .pth file, or 'torchvision'); an output layer of "
                        "another class count is replaced (sets model.weights)")  # fmt: skip
    p.add_argument(
        "--freeze-features",
        action="store_true",
        help="fine-tune the classifier only (sets model.freeze_features)",
    )
    p.add_argument("--budget", type=minutes, metavar="MIN",
                   help="end the whole command within MIN minutes: the epochs that fit are "
                        "chosen from this machine's speed, and a run that falls behind is "
                        "shortened (sets train.budget_minutes)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe key, e.g. --set optim.lr=0.02; with --resume only "
                        "optim.lr and epochs")  # fmt: skip
    p.add_argument(
        "--resume", type=given, metavar="RUN_DIR", help="continue the run saved in RUN_DIR"
    )
    p.add_argument("--checkpoint-recipe", action="store_true",
                   help="with --resume: continue under the checkpoint's recipe even where the "
                        "folder's recipe.toml says otherwise")  # fmt: skip
    p.add_argument("--runs", type=given, help="folder that holds run folders (default runs)")
    p.add_argument("--name", type=given, help="run folder name (default: recipe and time)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="no report.md and figures at the end (alexnet figures draws them later)",
    )
    p.set_defaults(func=run)


def _start_run(args: argparse.Namespace):
    """A new run's recipe and folder; under torchrun rank 0 makes the folder, all use it."""
    import torch.distributed as dist

    from alexnet.config import apply_overrides, load_recipe
    from alexnet.runtime import init_distributed
    from alexnet.training.runs import create_run_dir

    recipe = load_recipe(args.recipe)
    if args.data is not None:
        if not Path(args.data).exists():
            raise FileNotFoundError(f"--data {args.data}: no such file or folder")
        recipe.data.root = args.data  # made absolute with the rest of the recipe (train.resolve)
    if args.weights is not None:
        recipe.model.weights = args.weights
    recipe.model.freeze_features |= args.freeze_features
    if args.budget is not None:
        recipe.train.budget_minutes = args.budget
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

    from alexnet.training.runs import hold_run

    writer = int(os.environ.get("RANK", "0")) == 0 and run_dir.is_dir()
    return hold_run(run_dir) if writer else contextlib.nullcontext()


def _check_options(args: argparse.Namespace) -> None:
    """Options that go together: a new run's, or a resume's."""
    if args.resume and (args.recipe or args.data or args.name or args.weights
                        or args.freeze_features or args.runs or args.budget):  # fmt: skip
        raise UserError("--resume continues a run as it was, in its folder (a budget run with "
                        "what is left of its budget); drop --recipe, --data, --name, --runs, "
                        "--weights, --freeze-features and --budget")  # fmt: skip
    if args.checkpoint_recipe and not args.resume:
        raise UserError("--checkpoint-recipe goes with --resume RUN (it says which recipe a "
                        "resumed run continues under)")  # fmt: skip
    if not (args.resume or args.recipe):
        raise UserError(f"give --recipe NAME ({', '.join(recipe_names())}) or --resume RUN_DIR")


def run(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from alexnet.checkpoint import CheckpointError
    from alexnet.files import WriteError, missing_folders, remove_empty, shell_word
    from alexnet.processes import Stopped
    from alexnet.runtime import StopFlag
    from alexnet.training.runs import open_run, remove_failed_start
    from alexnet.training.train import TrainingError, fit

    _check_options(args)
    progress = not args.no_progress
    run_dir = Path(args.resume) if args.resume else None  # a new run's, once it is made
    try:
        stop = StopFlag()
        with stop:  # a signal before training stops at once, leaving nothing
            if args.resume:
                with _hold(Path(args.resume)):
                    r = open_run(Path(args.resume), args.overrides, args.checkpoint_recipe)
                    fit(r.recipe, r.run_dir, resume_from=r.checkpoint, changes=r.changes,
                        progress=progress, stop=stop, report=not args.no_report,
                        started=args.started, rewrite_recipe=r.rewrite_recipe)  # fmt: skip
            else:
                runs = Path(args.runs or "runs")
                made = missing_folders(runs)
                recipe, run_dir = _start_run(args)
                with _hold(run_dir):
                    try:
                        fit(recipe, run_dir, progress=progress, stop=stop,
                            report=not args.no_report, started=args.started)  # fmt: skip
                    except BaseException:
                        remove_failed_start(run_dir)
                        remove_empty(made)  # and the runs folder made for it
                        raise
            if stop.signal is not None:  # after the run's end last looked: it was not said
                raise Stopped(stop.signal)
    except TrainingError as exc:
        print(f"alexnet train: error: {exc}", file=sys.stderr)
        sys.exit(3)
    except (WriteError, CheckpointError) as exc:  # a disk that filled mid-run: what was saved
        written = run_dir is not None and (run_dir / "last.pt").is_file()
        if not (written and str(exc).startswith("cannot write")):
            raise
        fix = "make room" if "is full" in str(exc) else "put that right"  # not all are space
        raise type(exc)(f"{exc}; the run is kept to its last checkpoint: {fix}, then "
                        f"alexnet train --resume {shell_word(run_dir)}") from None  # fmt: skip
    except Stopped as exc:
        print(f"alexnet train: stopped by signal {exc.signum} " + (
              "as it was ending; the training is complete and saved" if stop.armed else
              "before training began; nothing was kept"), file=sys.stderr)  # fmt: skip
        sys.exit(128 + exc.signum)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
