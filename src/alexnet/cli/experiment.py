"""``alexnet experiment``: the paper's claims as experiments (relu-vs-tanh, ablations)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from alexnet.cli.options import (
    UserError,
    existing_data,
    given,
    minutes,
    names,
    rates,
    whole,
)


def distinct(parse: Callable[[str], list]) -> Callable[[str], list]:
    """A comma-separated list option's ``parse``, refusing an item given twice: each was run
    twice (``--rates 0.1,0.1``, ``--variants no-lrn,no-lrn``)."""

    def checked(text: str) -> list:
        items = parse(text)
        again = next((item for i, item in enumerate(items) if item in items[:i]), None)
        if again is not None:
            raise argparse.ArgumentTypeError(f"{again} given more than once; give each once")
        return items

    checked.__name__ = parse.__name__  # argparse names the type in some of its messages
    return checked


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="the paper's claims as experiments: relu-vs-tanh, ablations",
                       description="relu-vs-tanh: Figure 1, the four-layer network with ReLU, "
                       "tanh and sigmoid units, each at its best rate, within --budget minutes; "
                       "how many times faster ReLU reaches 25% training error. ablations: the "
                       "network without LRN, overlapping pooling, dropout, PCA colour noise or "
                       "two towers, over several seeds. A killed experiment, started again with "
                       "the same command, continues where it stopped.")  # fmt: skip
    from alexnet.experiments import EXPERIMENTS

    p.add_argument("experiment", choices=tuple(EXPERIMENTS))
    p.add_argument("--recipe", type=given, default="cifar10",
                   help="the base recipe: its data and hardware settings (relu-vs-tanh) or the "
                        "whole network and training (ablations); default cifar10")  # fmt: skip
    p.add_argument("--data", type=given, help="data folder or archive (sets data.root)")
    p.add_argument(
        "--out", type=given, help="the experiment's folder (default runs/experiments/NAME-RECIPE)"
    )
    p.add_argument(
        "--budget",
        type=minutes,
        help="relu-vs-tanh: minutes of wall time, sweep included (default 15)",
    )
    p.add_argument("--rates", type=distinct(rates), help="relu-vs-tanh: the learning rates tried for each activation, "
                                   "comma-separated (default 0.003,0.01,0.03,0.1,0.3)")  # fmt: skip
    p.add_argument("--seeds", type=whole(1, 100), help="ablations: seeds per variant (default 2)")
    p.add_argument("--epochs", type=whole(1, 10_000),
                   help="ablations: epochs per run (default 3)")  # fmt: skip
    p.add_argument("--full", action="store_true",
                   help="ablations: 3 seeds of the recipe's own epochs (CIFAR-10: over 3 hours "
                        "on 2 CPU cores)")  # fmt: skip
    from alexnet.experiments.ablations import BY_NAME

    p.add_argument("--variants", type=distinct(names), help="ablations: a comma-separated subset "
                                      f"({', '.join(BY_NAME)})")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.config import load_recipe
    from alexnet.experiments import EXPERIMENTS, other_experiment
    from alexnet.experiments.sweep import AGAIN
    from alexnet.files import text_name
    from alexnet.processes import Stopped
    from alexnet.runtime import StopFlag

    recipe = load_recipe(args.recipe)
    if args.data is not None:
        recipe.data.root = str(existing_data(args.data).resolve())
    out = Path(args.out or Path("runs") / "experiments" / f"{args.experiment}-{recipe.name}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file; an experiment writes a folder of runs")
    text_name(out, "TensorBoard")  # each of its runs logs there
    if (out / "last.pt").exists() or (out / "recipe.toml").is_file():
        raise UserError(f"--out {out}: a training run's folder; give the experiment a folder "
                        "of its own")  # fmt: skip
    if found := other_experiment(out, args.experiment):
        article = "an" if found[0][0] in "aeiou" else "a"
        raise UserError(f"--out {out}: holds {article} {found[0]} experiment ({found[1].name}); give "
                        f"{args.experiment} a folder of its own")  # fmt: skip
    progress = not args.no_progress and sys.stderr.isatty()
    given = {o for o, v in (("--budget", args.budget), ("--rates", args.rates),
                            ("--seeds", args.seeds), ("--epochs", args.epochs),
                            ("--variants", args.variants)) if v is not None}  # fmt: skip
    given |= {"--full"} if args.full else set()
    other = given - ({"--budget", "--rates"} if args.experiment == "relu-vs-tanh" else
                     {"--seeds", "--epochs", "--variants", "--full"})  # fmt: skip
    if other or {"--full", "--seeds"} <= given or {"--full", "--epochs"} <= given:
        if not other:  # --full is an ablations option: it is the pair that is refused
            raise UserError("--full sets the seeds and epochs itself: give it without --seeds "
                            "and --epochs, or those without it")  # fmt: skip
        raise UserError(f"{', '.join(sorted(other))}: not for {args.experiment} (see --help)")
    try:
        with StopFlag():  # between runs (within one, the run checkpoints first)
            EXPERIMENTS[args.experiment](recipe, out, progress=progress, **_settings(args))
    except Stopped as exc:
        print(f"alexnet experiment: stopped by signal {exc.signum}; {AGAIN}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    print((out / "results.md").read_text())
    print(f"written: {out / 'results.md'}, {out / 'results.json'} and the plot beside them")


def _settings(args: argparse.Namespace) -> dict:
    """The experiment's own arguments from its flags (the other experiment's are refused)."""
    if args.experiment == "relu-vs-tanh":
        return {"budget_minutes": 15.0 if args.budget is None else args.budget,
                "rates": args.rates}  # fmt: skip
    if args.full:
        settings = {"seeds": 3, "epochs": None}
    else:
        settings = {"seeds": 2 if args.seeds is None else args.seeds,
                    "epochs": 3 if args.epochs is None else args.epochs}  # fmt: skip
    return settings | ({"variants": args.variants} if args.variants else {})
