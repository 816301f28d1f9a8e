"""The training loop: one recipe in, a run folder out.

A run folder holds ``recipe.toml`` (fully resolved), ``metrics.jsonl`` (a line per epoch),
``tb/`` (TensorBoard events), ``last.pt`` and ``best.pt`` (checkpoints) and ``report.md``.

Resuming is exact: a checkpoint holds the model, optimiser and schedule, the position inside
the epoch, the partial epoch's running sums and every random state, and batch augmentations are
seeded per batch, so a run killed at any moment and resumed ends with the same weights as an
uninterrupted one (on the CPU, in deterministic mode). Checkpoints are written to a temporary
file and renamed, so a kill never leaves a half-written ``last.pt``.

Under torchrun the same code runs data-parallel (DDP): gloo on the CPU, NCCL on CUDA; each rank
reads its shard of the global batch and only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from alexnet.config import apply_overrides, load_recipe, to_toml
from alexnet.data import BatchAugment, BatchLoader, load_source
from alexnet.evaluate import evaluate
from alexnet.models import build_model


class TrainingError(Exception):
    """Training cannot go on (non-finite loss); the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------
# Hardware


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(d: Dist) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """bfloat16 pays on CPUs with AMX or AVX512-BF16 (about 3x there); without them it is
    emulated and measured 10x slower than float32 on an AVX2-only Zen 3."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def pick_precision(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32."""
    if setting not in ("auto", "fp32", "bf16"):
        raise ValueError(f"train.precision must be auto, fp32 or bf16, got {setting!r}")
    if setting == "fp32":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def pick_channels_last(setting: Any) -> bool:
    """channels_last (NHWC) lets oneDNN and cuDNN skip layout reorders and vectorises max-pooling
    over channels: alexnet-small on Fashion-MNIST measured 677 against 585 images/s in fp32 on a
    2-core AVX2 CPU, and it is the layout bf16 kernels expect, so "auto" turns it on."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"train.channels_last must be auto, true or false, got {setting!r}")
    return True


def set_threads(setting: int, d: Dist) -> None:
    if setting > 0:
        torch.set_num_threads(setting)
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", d.world_size))
    torch.set_num_threads(max(1, cores // max(1, local)))


# --------------------------------------------------------------------------------------------
# Optimiser and schedule


def build_optimizer(model: nn.Module, optim: dict) -> torch.optim.Optimizer:
    if optim["name"] != "sgd":
        raise ValueError(f"unknown optimiser {optim['name']!r}; valid: sgd")
    return torch.optim.SGD(
        model.parameters(),
        lr=optim["lr"],
        momentum=optim["momentum"],
        nesterov=optim["nesterov"],
        weight_decay=optim["weight_decay"],
    )


SCHEDULES = ("plateau", "onecycle", "step", "constant")


def build_schedule(opt: torch.optim.Optimizer, recipe: dict, steps_per_epoch: int):
    """Per-step (onecycle) or per-epoch (plateau, step, constant) learning-rate schedule.

    ``plateau`` is the paper's: divide by ``factor`` when the validation error stops improving,
    at most ``max_reductions`` times (the paper: three).
    """
    s, lr = recipe["schedule"], recipe["optim"]["lr"]
    name = s["name"]
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min",
            factor=s["factor"],
            patience=s["patience"],
            min_lr=lr * s["factor"] ** s["max_reductions"] * (1 - 1e-6),
        )
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=lr,
            total_steps=max(1, recipe["epochs"] * steps_per_epoch)
            + 1,  # the last step stays in range
            pct_start=max(1e-3, s["warmup_fraction"]),
            anneal_strategy="linear",
            div_factor=10.0,
            final_div_factor=100.0,
            cycle_momentum=False,
        )
    if name == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=list(s["milestones"]), gamma=s["factor"]
        )
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")


# --------------------------------------------------------------------------------------------
# Checkpoints


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Checkpoints hold tensors and plain data only: ``weights_only=True`` refuses code."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no checkpoint there (was the run started with this folder?)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class EpochSums:
    """Running sums of the epoch in progress (checkpointed, so a resumed epoch reports right)."""

    loss: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    seconds: float = 0.0


class StopFlag:
    """SIGTERM and the first Ctrl-C ask for a checkpoint at the end of the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def new_run_dir(runs: Path, name: str | None, recipe_name: str, d: Dist) -> Path:
    if name is None:
        name = f"{recipe_name}-{datetime.now():%Y%m%d-%H%M%S}"
        if d.world_size > 1:  # every rank must use rank 0's name
            box = [name]
            dist.broadcast_object_list(box, src=0)
            name = box[0]
    run_dir = runs / name
    if d.main:
        if (run_dir / "last.pt").exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; resume it with --resume {run_dir}"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def fit(
    recipe: dict, run_dir: Path, *, resume_from: dict | None = None, progress: bool = True
) -> dict:
    """Train ``recipe`` into ``run_dir``; returns the final metrics.

    ``resume_from`` is the run's loaded ``last.pt`` (the caller has it already, for the recipe).
    """
    resume = resume_from is not None
    d = init_distributed()
    device = pick_device(d)
    train_cfg = recipe["train"]
    set_threads(train_cfg["threads"], d)
    if train_cfg["deterministic"]:
        torch.use_deterministic_algorithms(True)
    amp = pick_precision(train_cfg["precision"], device)
    channels_last = pick_channels_last(train_cfg["channels_last"])

    data_cfg = recipe["data"]
    train_set, test_set = load_source(
        data_cfg["source"],
        data_cfg["root"],
        data_cfg["image_size"],
        data_cfg["channels"],
        data_cfg["verify"],
    )
    if data_cfg["limit_train"]:
        train_set = train_set.subset(data_cfg["limit_train"])
    if data_cfg["limit_test"]:
        test_set = test_set.subset(data_cfg["limit_test"])
    if train_set.images.shape[1] != data_cfg["channels"]:
        raise ValueError(
            f"data.channels is {data_cfg['channels']} but the images have {train_set.images.shape[1]}"
        )
    mean, std = torch.tensor(data_cfg["mean"]), torch.tensor(data_cfg["std"])
    if len(mean) != data_cfg["channels"] or len(std) != data_cfg["channels"]:
        raise ValueError("data.mean and data.std need one value per channel")

    seed = recipe["seed"]
    torch.manual_seed(seed)
    options = dict(recipe["model"].get("options", {}))
    options.setdefault("num_classes", len(train_set.classes))
    options.setdefault("in_channels", data_cfg["channels"])
    if recipe["model"]["arch"] in ("alexnet-small", "convnet4"):
        options.setdefault("input_size", data_cfg["image_size"])
    model = build_model(recipe["model"]["arch"], **options).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    augment = BatchAugment(recipe["augment"]["crop_padding"], recipe["augment"]["flip"])
    loader_args = {
        "mean": mean,
        "std": std,
        "seed": seed,
        "rank": d.rank,
        "world_size": d.world_size,
        "device": device,
        "channels_last": channels_last,
    }
    train_loader = BatchLoader(
        train_set, data_cfg["batch_size"], train=True, augment=augment, **loader_args
    )
    test_loader = BatchLoader(test_set, data_cfg["eval_batch_size"], train=False, **loader_args)
    if len(train_loader) == 0:
        raise ValueError(
            f"{len(train_set)} training images make no full batch of {data_cfg['batch_size']}"
        )

    opt = build_optimizer(model, recipe["optim"])
    sched = build_schedule(opt, recipe, len(train_loader))
    per_step = isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe["optim"]["label_smoothing"])

    start_epoch, start_batch, global_step, best, sums, history = 0, 0, 0, math.inf, EpochSums(), []
    if resume_from is not None:
        ckpt = resume_from
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch, start_batch, global_step = ckpt["epoch"], ckpt["batch"], ckpt["global_step"]
        best, sums, history = (
            ckpt["best_top1_err"],
            EpochSums(**ckpt["epoch_sums"]),
            ckpt["history"],
        )
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])

    net: nn.Module = model
    if d.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if train_cfg["compile"]:
        net = torch.compile(net)

    logger = RunLogger(run_dir, recipe, d.main, resume)
    if d.main and resume:
        logger.say(f"resuming {run_dir} at epoch {start_epoch + 1}, batch {start_batch + 1}")
    if d.main and not resume:
        logger.say(
            f"run {run_dir}: {recipe['model']['arch']} on {data_cfg['source']} "
            f"({len(train_set)} train / {len(test_set)} test images), {device}, "
            f"{'bf16' if amp else 'fp32'}{', channels_last' if channels_last else ''}, "
            f"{torch.get_num_threads()} threads, {d.world_size} process(es)"
        )
        for note in train_set.notes + test_set.notes:
            logger.say(note)

    def checkpoint(epoch: int, batch: int, name: str = "last.pt") -> None:
        if not d.main:
            return
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        state = {
            "model": unwrap(model).state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "global_step": global_step,
            "best_top1_err": best,
            "epoch_sums": vars(sums).copy(),
            "history": history,
            "rng": rng,
            "recipe": recipe,
        }
        atomic_save(state, run_dir / name)

    every = train_cfg["checkpoint_every"]
    last: dict = history[-1] if history else {}
    with StopFlag() as stop:
        for epoch in range(start_epoch, recipe["epochs"]):
            train_loader.set_epoch(epoch)
            net.train()
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                sums = EpochSums()
            bar = logger.bar(len(train_loader), epoch, recipe["epochs"], progress, initial=first)
            tick = time.perf_counter()
            for b, (x, y, _valid) in enumerate(train_loader.batches(first), start=first):
                with torch.autocast(
                    device.type, dtype=amp or torch.float32, enabled=amp is not None
                ):
                    logits = net(x)
                    loss = criterion(logits.float(), y)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    where = run_dir / "last.pt"
                    kept = (
                        f"last good checkpoint: {where}"
                        if where.exists()
                        else "no checkpoint was written yet"
                    )
                    raise TrainingError(
                        f"loss became {loss_value} at epoch {epoch + 1}, batch {b + 1}; {kept}. "
                        f"Lower the learning rate (optim.lr={recipe['optim']['lr']}) or check the data."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if per_step:
                    sched.step()
                global_step += 1
                n = y.shape[0]
                sums.loss += loss_value * n
                sums.correct += (logits.argmax(1) == y).sum().item()
                sums.seen += n
                now = time.perf_counter()
                sums.seconds += now - tick
                tick = now
                if bar is not None:
                    bar.update(1)
                    if b % train_cfg["log_every"] == 0 or b == len(train_loader) - 1:
                        bar.set_postfix(
                            loss=f"{sums.loss / sums.seen:.3f}",
                            top1=f"{100 * sums.correct / sums.seen:.1f}%",
                            lr=f"{opt.param_groups[0]['lr']:.4g}",
                            img_s=f"{sums.seen * d.world_size / max(sums.seconds, 1e-9):.0f}",
                        )
                if stop.signal is not None:
                    checkpoint(epoch, b + 1)
                    if bar is not None:
                        bar.close()
                    logger.say(
                        f"stopped by signal {stop.signal}; resume with: alexnet train --resume {run_dir}"
                    )
                    logger.close()
                    raise SystemExit(128 + stop.signal)
                if every and global_step % every == 0 and b + 1 < len(train_loader):
                    checkpoint(epoch, b + 1)
            if bar is not None:
                bar.close()

            totals = torch.tensor(
                [sums.loss, sums.correct, sums.seen, sums.seconds], dtype=torch.float64
            )
            if d.world_size > 1:
                dist.all_reduce(totals)
                totals[3] /= d.world_size
            val = evaluate(
                net, test_loader, criterion, amp, recipe["eval"]["tta_flip"], d.world_size > 1
            )
            if not per_step:
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(val["top1_err"])
                else:
                    sched.step()
            last = {
                "epoch": epoch + 1,
                "train_loss": totals[0].item() / totals[2].item(),
                "train_top1_err": 1 - totals[1].item() / totals[2].item(),
                "val_loss": val["loss"],
                "val_top1_err": val["top1_err"],
                "val_top5_err": val["top5_err"],
                "lr": opt.param_groups[0]["lr"],
                "epoch_seconds": totals[3].item(),
                "images_per_s": totals[2].item() / max(totals[3].item(), 1e-9),
                "train_seconds": (history[-1]["train_seconds"] if history else 0.0)
                + totals[3].item(),
            }
            history.append(last)
            logger.epoch(last, unwrap(model))
            improved = val["top1_err"] < best
            best = min(best, val["top1_err"])
            sums = EpochSums()
            checkpoint(epoch + 1, 0)
            if improved:
                checkpoint(epoch + 1, 0, "best.pt")
    logger.close()
    if d.main:
        from alexnet.report import write_report

        report = write_report(run_dir, unwrap(model), test_set, mean, std, channels_last, device)
        logger.say(f"report: {report}")
    return last


# --------------------------------------------------------------------------------------------
# Logging: progress bars, a line per epoch, TensorBoard, metrics.jsonl (rank 0 only)


class RunLogger:
    def __init__(self, run_dir: Path, recipe: dict, main: bool, resume: bool) -> None:
        self.main, self.run_dir = main, run_dir
        self.writer = None
        if not main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"))
        if not resume:
            (run_dir / "recipe.toml").write_text(to_toml(recipe))
            self.writer.add_text("recipe", "```\n" + to_toml(recipe) + "\n```")

    def say(self, text: str) -> None:
        if self.main:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def bar(self, total: int, epoch: int, epochs: int, enabled: bool, initial: int = 0):
        if not (self.main and enabled):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                    dynamic_ncols=True, leave=False, file=sys.stderr)  # fmt: skip

    def epoch(self, m: dict, model: nn.Module) -> None:
        if not self.main:
            return
        self.say(
            f"epoch {m['epoch']:3d}  train loss {m['train_loss']:.4f} top-1 err {100 * m['train_top1_err']:5.2f}%"
            f"  |  val loss {m['val_loss']:.4f} top-1 err {100 * m['val_top1_err']:5.2f}%"
            f" top-5 err {100 * m['val_top5_err']:5.2f}%  |  lr {m['lr']:.4g}"
            f"  {m['epoch_seconds']:.1f}s  {m['images_per_s']:.0f} img/s"
        )
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(m) + "\n")
        assert self.writer is not None
        step = m["epoch"]
        for key in (
            "train_loss",
            "train_top1_err",
            "val_loss",
            "val_top1_err",
            "val_top5_err",
            "lr",
            "images_per_s",
        ):
            group, _, name = key.partition("_")
            self.writer.add_scalar(
                f"{group}/{name}" if group in ("train", "val") else key, m[key], step
            )
        from alexnet.report import first_layer_grid

        self.writer.add_image("conv1_kernels", first_layer_grid(model), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------------------------
# Command line


def resolve_recipe(recipe_name: str, data: str | None, overrides: list[str]) -> dict:
    recipe = load_recipe(recipe_name)
    if data is not None:
        if not Path(data).exists():
            raise FileNotFoundError(f"--data {data}: no such file or folder")
        recipe["data"]["root"] = str(data)
    return apply_overrides(recipe, overrides)


def train_from_args(args: argparse.Namespace) -> None:
    if args.resume:
        if args.recipe or args.overrides or args.data:
            raise ValueError("--resume continues a run as it was; drop --recipe, --data and --set")
        run_dir = Path(args.resume)
        resume_from = load_checkpoint(run_dir / "last.pt")
        recipe = resume_from["recipe"]
    elif args.recipe:
        resume_from = None
        recipe = resolve_recipe(args.recipe, args.data, args.overrides)
        run_dir = new_run_dir(Path(args.runs), args.name, recipe["name"], init_distributed())
    else:
        raise ValueError(
            "give --recipe NAME (fashion-mnist, cifar10, imagenet-paper) or --resume RUN_DIR"
        )
    try:
        fit(recipe, run_dir, resume_from=resume_from, progress=not args.no_progress)
    except TrainingError as exc:
        print(f"alexnet train: error: {exc}", file=sys.stderr)
        sys.exit(3)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
