"""The training loop: one recipe in, a run folder out.

``fit`` reads top to bottom: choose the runtime, load the data, build the network and its
training state (from a checkpoint when resuming), then epochs of ``train_one_epoch`` and
``evaluate`` until the recipe's last, each ending with a checkpoint and then its log line.

Under torchrun the same code runs data-parallel (DDP): gloo on the CPU, NCCL on CUDA; each rank
reads its shard of the global batch and only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from alexnet.checkpoint import CheckpointError
from alexnet.config import OptimSettings, Recipe, recipe_from_dict
from alexnet.data import DATA_SOURCES, BatchLoader, ImageSet, Request, load_source
from alexnet.data.batches import PCA, batch_maker_for
from alexnet.data.imageset import write_skip_list
from alexnet.data.stats import PixelStats
from alexnet.errors import UserError
from alexnet.files import shell_word, write_text
from alexnet.models import build_model, check_options, network
from alexnet.models.memory import free_bytes, on_meta, training_bytes, where
from alexnet.ops.lrn import choose_ahead
from alexnet.runtime import Runtime, StopFlag, any_rank, autocast, start_runtime
from alexnet.settings import SettingError
from alexnet.training.budget import Clock, Pacer, plan
from alexnet.training.evaluate import evaluate
from alexnet.training.finetune import (
    check_start_weights,
    freeze_features,
    is_published,
    load_start_weights,
)
from alexnet.training.logger import RunLogger, format_epoch
from alexnet.training.lr_find import RangeTest, range_test
from alexnet.training.schedules import (
    build_optimizer,
    build_schedule,
    change_learning_rate,
    per_step,
)
from alexnet.training.state import EpochSums, TrainingState


class TrainingError(Exception):
    """Training cannot go on (non-finite loss or weights); the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------
# Before the first step: the recipe made concrete, the data, the network


def resolve(recipe: Recipe) -> Recipe:
    """The recipe with every "the source's own" value filled in and the data path absolute,
    so the saved recipe says exactly what ran and resumes from any folder."""
    r = copy.deepcopy(recipe)
    d, source, net = r.data, DATA_SOURCES[r.data.source], network(r.model.arch)
    if source.image_size and d.image_size not in (0, source.image_size):
        raise UserError(f"data.image_size: {source.name} images are {source.image_size}x"
                         f"{source.image_size}; leave it 0")  # fmt: skip
    if source.image_size and d.channels not in (0, source.channels):
        raise UserError(f"data.channels: {source.name} images have {source.channels} channel(s)")
    d.image_size = d.image_size or source.image_size or net.input_size
    d.channels = d.channels or source.channels
    grey = d.channels == 1 and len(source.mean) == 3  # photos read as grey: one mean of three
    d.mean = d.mean or ([sum(source.mean) / 3] if grey else list(source.mean))
    d.std = d.std or ([sum(source.std) / 3] if grey else list(source.std))
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        if len(values) != d.channels:
            raise UserError(f"{key} needs one value per channel ({d.channels}), got {values}")
    if d.root:
        d.root = str(Path(d.root).expanduser().resolve())
    if r.train.budget_minutes and r.schedule.name == "plateau":
        raise UserError("train.budget_minutes needs a schedule with a length (onecycle, step or "
                        "constant): plateau divides the rate when the validation error stops "
                        "improving, which no clock can lay out; add --set schedule.name=onecycle")  # fmt: skip
    if r.model.weights and not is_published(r.model.weights):
        r.model.weights = str(Path(r.model.weights).expanduser().resolve())
    return r


def load_data(recipe: Recipe) -> tuple[ImageSet, ImageSet]:
    d = recipe.data
    request = Request(d.root, d.image_size, d.channels, d.verify, int(d.max_megapixels * 1e6))
    train_set, test_set = load_source(d.source, request)
    if d.limit_train:
        train_set = train_set.subset(d.limit_train)
    if d.limit_test:
        test_set = test_set.subset(d.limit_test)
    return train_set, test_set


def load_data_once(recipe: Recipe, rt: Runtime) -> tuple[ImageSet, ImageSet]:
    """Under DDP the first rank of each machine downloads, unpacks and decodes into the cache
    while the others wait, then they read its result: no two ranks write the same files."""
    first = rt.local_rank == 0
    if rt.world_size > 1 and not first:
        dist.barrier()
    try:
        return load_data(recipe)
    finally:
        if rt.world_size > 1 and first:
            dist.barrier()  # also on failure: the others then meet the same error themselves


def check_memory(recipe: Recipe, rt: Runtime, options: dict) -> None:
    """Refuse, in one line, a network and batch that the device cannot hold, measured on the
    meta device (shapes only, no memory, whatever the sizes asked). Called once before the
    data is read, with one class (a lower bound: the data's classes only widen the last
    layer), so that a size no machine holds is refused before minutes of decoding and a
    cached store of gigabytes, and again with the data's classes."""
    d = recipe.data
    shape = (d.channels, d.image_size, d.image_size)
    local = max(1, d.batch_size // rt.world_size)  # each process's share of a batch
    try:
        need = training_bytes(on_meta(recipe.model.arch, options), shape, local)
    except UserError:  # the options themselves (widths of the wrong length...): as they say
        raise
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"model {recipe.model.arch} cannot take the data's {d.channels}x"
                         f"{d.image_size}x{d.image_size} images: {exc}") from None  # fmt: skip
    if rt.device.type == "cpu":
        need *= rt.world_size  # the processes of a run on one machine share its memory
    have = free_bytes(rt.device)
    if 0 <= have < need:
        raise UserError(f"{recipe.model.arch} on {d.channels}x{d.image_size}x{d.image_size} "
                         f"images at batch {d.batch_size} needs about {need / 1e9:.1f} GB to "
                         f"train and {where(rt.device)} {have / 1e9:.1f} GB available; lower "
                         "data.image_size or data.batch_size, or the network's widths")  # fmt: skip


def with_data_shape(recipe: Recipe, options: dict) -> dict:
    """``options`` with the channels and size the data gives, where the recipe leaves them."""
    options.setdefault("in_channels", recipe.data.channels)
    if network(recipe.model.arch).sized_by_option and "input_size" not in options:
        options["input_size"] = recipe.data.image_size
        try:  # a side the network cannot take is the key the user set, not the option it fills
            check_options(recipe.model.arch, options)
        except SettingError as exc:
            if not str(exc).startswith("input_size "):
                raise
            raise UserError(f"data.image_size {str(exc).removeprefix('input_size ')} for "
                             f"{recipe.model.arch}, whose input side it sets") from None  # fmt: skip
    return options


def before_the_data(recipe: Recipe, rt: Runtime) -> None:
    """The memory check with one class, before any data is read (see check_memory)."""
    check_memory(recipe, rt, with_data_shape(recipe, {"num_classes": 1, **recipe.model.options}))


def build_network(recipe: Recipe, classes: list[str], rt: Runtime) -> nn.Module:
    """The recipe's network for its data, checked against one image before anything else
    runs; the classes, channels and size it takes are filled in the recipe's options (the
    run's one recipe, made concrete)."""
    options = recipe.model.options
    if options.setdefault("num_classes", len(classes)) < len(classes):
        raise UserError(f"model.options.num_classes is {options['num_classes']} but the data "
                         f"has {len(classes)} classes")  # fmt: skip
    check_memory(recipe, rt, with_data_shape(recipe, options))
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.arch, **options)
    model.train()
    if recipe.model.freeze_features:
        freeze_features(model)
    model = model.to(rt.device)
    return model.to(memory_format=torch.channels_last) if rt.channels_last else model


def preprocessing(recipe: Recipe, train_set, checkpoint: dict | None,
                  where: Path | None = None) -> PixelStats | None:  # fmt: skip
    """The training set's mean image and colour PCA where the recipe uses them: a resumed run's
    from its checkpoint ``where`` (what it trained with), a store's as prepared, else computed
    now."""
    d, a = recipe.data, recipe.augment
    if d.normalise != "mean-image" and not a.pca_std:
        return None
    saved = (checkpoint or {}).get("preprocessing")
    if not saved:
        return train_set.pixel_stats()
    try:
        stats = PixelStats.from_dict(saved)
        if tuple(stats.mean_image.shape) != train_set.stored_shape:
            raise UserError(f"its mean image is {tuple(stats.mean_image.shape)}, the images "
                            f"{train_set.stored_shape}")  # fmt: skip
    except UserError as exc:
        raise CheckpointError(f"{where}: its preprocessing statistics are damaged ({exc}); a "
                              "damaged or edited checkpoint") from None  # fmt: skip
    return stats


def batch_makers(recipe: Recipe, train_set, test_set, stats: PixelStats | None):
    """(training, evaluation) batch makers for the recipe's data (data/batches.py)."""
    d, a = recipe.data, recipe.augment
    std = torch.tensor(d.std)
    pca = PCA(stats.eigval, stats.eigvec, a.pca_std) if a.pca_std and stats else None
    mean = stats.mean_image / 255 if d.normalise == "mean-image" else torch.tensor(d.mean)
    train = batch_maker_for(train_set, d.image_size, mean, std, train=True, flip=a.flip,
                            padding=a.crop_padding, pca=pca)  # fmt: skip
    return train, batch_maker_for(test_set, d.image_size, mean, std)


def loader_workers(recipe: Recipe, rt: Runtime, train_set) -> int:
    """``data.workers``, or for -1: none for in-memory sets (a batch is one gather); for a
    store on CUDA a few per GPU, and on a CPU one, which reads while the step computes."""
    if recipe.data.workers >= 0:
        return recipe.data.workers
    if not train_set.streamed:
        return 0
    if rt.device.type == "cuda":
        per_node = max(1, torch.cuda.device_count())
        return max(1, min(8, len(os.sched_getaffinity(0)) // per_node - 1))
    return 1


def make_loaders(recipe: Recipe, rt: Runtime, train_set, test_set, stats: PixelStats | None):
    d = recipe.data
    common = {"seed": recipe.seed, "rank": rt.rank, "world_size": rt.world_size,
              "device": rt.device, "channels_last": rt.channels_last,
              "workers": loader_workers(recipe, rt, train_set)}  # fmt: skip
    train_batches, test_batches = batch_makers(recipe, train_set, test_set, stats)
    train = BatchLoader(train_set, d.batch_size, train_batches, train=True, **common)
    test = BatchLoader(test_set, d.eval_batch_size, test_batches, train=False, **common)
    if len(train) == 0:
        raise UserError(f"{len(train_set)} training images make no full batch of "
                         f"{d.batch_size} (data.batch_size)")  # fmt: skip
    return train, test


# --------------------------------------------------------------------------------------------
# One epoch, its evaluation, its checkpoint


@dataclass
class Loop:
    """What every step needs, gathered once."""

    net: nn.Module
    state: TrainingState
    criterion: nn.Module
    rt: Runtime
    logger: RunLogger
    run_dir: Path
    stop: StopFlag
    recipe_pending: bool = False  # a resume's changes, for recipe.toml after the next save
    clock: Clock | None = None  # a time budget's (its seconds spent go into every checkpoint)

    def save(self, name: str = "last.pt", probe: torch.Tensor | None = None) -> None:
        """Checkpoint on rank 0, unless the weights have diverged (then stop, exit 3); every
        rank learns whether it worked, so none waits for a rank that gave up."""
        sick = probe is not None and not healthy(self.state.model, probe, self.rt)
        if any_rank(self.rt, sick)[0]:
            raise self.diverged("the weights no longer give finite outputs", self.where())
        failed: CheckpointError | None = None
        if self.clock is not None:
            self.state.budget["spent_seconds"] = self.clock.used()
        if self.rt.main:
            try:
                self.state.save(self.run_dir / name)
            except CheckpointError as exc:
                failed = exc
            if failed is None and self.recipe_pending and name == "last.pt":
                # After the checkpoint: a folder recipe ahead of its checkpoint is refused.
                write_text(self.run_dir / "recipe.toml", self.state.recipe.to_toml())
                self.recipe_pending = False
        if any_rank(self.rt, failed is not None)[0]:
            raise failed or CheckpointError("rank 0 could not write its checkpoint")

    def where(self) -> str:
        return f"epoch {self.state.epoch + 1}, batch {self.state.batch + 1}"

    def diverged(self, what: str, when: str) -> TrainingError:
        s, where = self.state, self.run_dir / "last.pt"
        # What --set optim.lr replaces: the current rate under plateau, the base rate (or the
        # one-cycle peak) under the others; a tenth of it is the usual first retry.
        plateau = isinstance(s.schedule, ReduceLROnPlateau)
        lr = s.optimizer.param_groups[0]["lr"] if plateau else s.recipe.optim.lr
        if where.exists():
            advice = (f"last good checkpoint: {where}; continue it at a lower rate with: alexnet "
                      f"train --resume {shell_word(self.run_dir)} --set optim.lr={lr / 10:.3g}")  # fmt: skip
        else:
            advice = f"no checkpoint was written yet; lower the learning rate (optim.lr={lr:.3g})"
        return TrainingError(f"{what} at {when}; {advice}, or check the data")


def healthy(model: nn.Module, x: torch.Tensor, rt: Runtime) -> bool:
    """Finite weights that give finite outputs on ``x`` (evaluation mode: no random draws,
    so checking does not change what the run computes next)."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return False
    was = model.training
    model.eval()
    with torch.no_grad(), autocast(rt.device, rt.amp):
        ok = bool(torch.isfinite(model(x[:8]).float()).all())
    model.train(was)
    return ok


def forward_loss(
    net: nn.Module, criterion: nn.Module, rt: Runtime, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss (in float32) and the logits of one batch, in the run's precision."""
    with autocast(rt.device, rt.amp):
        logits = net(x)
        return criterion(logits.float(), y), logits


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step from ``loss``; gradients are dropped (not zeroed) first, which saves
    a pass over all 61 million of them."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@dataclass
class Step:
    """One step's numbers, left on the device until read: [loss x images, top-1 hits, top-5
    hits], with where it was, for a divergence found only when they are read."""

    numbers: torch.Tensor
    images: int
    where: str


def step_numbers(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    hits = logits.detach().topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
    counts = torch.stack([hits[:, 0].sum(), hits.any(1).sum()]).double()
    return torch.cat([(loss.detach().double() * y.shape[0]).reshape(1), counts])


def read_step(loop: Loop, step: Step | None, stopping: bool = False) -> bool:
    """Read ``step``'s numbers into the epoch's sums (the host waits for that step alone),
    stop if any rank's loss is not finite; returns whether any rank was signalled to stop."""
    numbers = step.numbers.tolist() if step is not None else [0.0, 0.0, 0.0]
    diverged, stopping = any_rank(loop.rt, not math.isfinite(numbers[0]), stopping)
    if diverged:
        raise loop.diverged(f"loss became {numbers[0] / max(step.images, 1)}", step.where)
    if step is not None:
        sums = loop.state.sums
        sums.loss, sums.correct, sums.correct5 = (a + b for a, b in zip(
            (sums.loss, sums.correct, sums.correct5), numbers, strict=True))  # fmt: skip
        sums.seen += step.images
    return stopping


def show(loop: Loop, bar, log_every: int, total: int) -> None:
    s = loop.state
    if bar is None:
        return
    bar.update(1)
    # A step's numbers are read one step late: nothing to show until the first is in.
    due = (s.batch - 1) % log_every == 0 or s.batch == total or not bar.postfix
    if due and s.sums.seen:
        bar.set_postfix(loss=f"{s.sums.loss / max(s.sums.seen, 1):.3f}",
                        top1=f"{100 * s.sums.correct / max(s.sums.seen, 1):.1f}%",
                        lr=f"{s.optimizer.param_groups[0]['lr']:.4g}",
                        img_s=f"{s.sums.seen * loop.rt.world_size / max(s.sums.seconds, 1e-9):.0f}")  # fmt: skip


def train_one_epoch(loop: Loop, loader: BatchLoader, every: int, log_every: int) -> None:
    """Batches ``state.batch`` onward of epoch ``state.epoch``; checkpoints every ``every``
    steps and on a stop signal (then exits 128 + signal).

    A step's loss and hits are read one step late: reading them at once would make the host
    wait for the GPU to finish the step before it queues the next, and the GPU idle while the
    host reads the next batch and launches its kernels (on one H200 at batch 512, 17,700
    images/s from a store against 25,100 for the network alone). A non-finite loss is still
    found before anything is saved: the step is read before every checkpoint."""
    s, rt, total = loop.state, loop.rt, len(loader)
    loader.set_epoch(s.epoch)
    loop.net.train()
    bar = loop.logger.bar(total, s.epoch, s.recipe.epochs, initial=s.batch)
    tick, late = time.perf_counter(), None
    for x, y, _valid in awaited(loop, loader.batches(s.batch)):
        where = loop.where()
        loss, logits = forward_loss(loop.net, loop.criterion, rt, x, y)
        update(s.optimizer, loss)
        if per_step(s.schedule):
            s.schedule.step()
        s.global_step += 1
        s.batch += 1
        # Every rank must stop at the same step, or the others wait in the next all-reduce.
        stopping = read_step(loop, late, loop.stop.signal is not None)
        late = Step(step_numbers(loss, logits, y), y.shape[0], where)
        now = time.perf_counter()
        s.sums.seconds, tick = s.sums.seconds + now - tick, now
        show(loop, bar, log_every, total)
        due = every and s.global_step % every == 0 and s.batch < total
        if stopping or due:
            read_step(loop, late)
            late = None
            loop.save(probe=x)
        if stopping:
            stop_now(loop, bar)
    read_step(loop, late)
    if loop.stop.signal is not None:  # it came while a batch was awaited
        loop.save()
        stop_now(loop, bar)
    if bar is not None:
        bar.close()


def awaited(loop: Loop, batches: Iterator[tuple]) -> Iterator[tuple]:
    """The batches; a stop signal that comes while one is awaited ends them, and the run
    stops at the step before (nothing of the run changes while it waits). ``kill -TERM`` to
    the process group ends the loader's workers with the command: the loader, waiting for
    their batch, found them gone 5 s later and raised a traceback (10 tries in 16)."""
    while True:
        batch = None
        with loop.stop.at_once(loop.rt.world_size == 1):
            batch = next(batches, None)
        if batch is None:  # the last, or a stop signal (loop.stop.signal)
            return
        yield batch


def stop_now(loop: Loop, bar) -> None:
    if bar is not None:
        bar.close()
    signum = loop.stop.signal or signal.SIGTERM  # another rank's signal
    again = loop.stop.again or f"resume with: alexnet train --resume {shell_word(loop.run_dir)}"
    loop.logger.say(f"stopped by signal {signum}; {again}")
    loop.logger.close()
    raise SystemExit(128 + signum)


def end_epoch(loop: Loop, test_loader: BatchLoader, tta_flip: bool) -> dict[str, float]:
    """Evaluate, step the per-epoch schedule, checkpoint, then log: a kill between the
    checkpoint and the log line cannot log an epoch twice (the log is rebuilt on resume)."""
    s, rt = loop.state, loop.rt
    totals = torch.tensor([s.sums.loss, s.sums.correct, s.sums.seen, s.sums.seconds,
                           s.sums.correct5], dtype=torch.float64)  # fmt: skip
    if rt.world_size > 1:
        dist.all_reduce(totals)
        totals[3] /= rt.world_size
    val = None
    with loop.stop.at_once(rt.world_size == 1):  # the run resumes at this evaluation
        val = evaluate(loop.net, test_loader, loop.criterion, rt.amp, tta_flip, rt.world_size > 1)
    if val is None:  # a stop signal ended it
        loop.save()
        stop_now(loop, None)
    if not all(math.isfinite(val[k]) for k in ("loss", "top1_err")):
        raise loop.diverged(
            f"validation loss became {val['loss']}", f"the end of epoch {s.epoch + 1}"
        )
    if isinstance(s.schedule, ReduceLROnPlateau):
        s.schedule.step(val["top1_err"])
    elif not per_step(s.schedule):
        s.schedule.step()
    loss, correct, seen, seconds, correct5 = totals.tolist()
    m = {"epoch": s.epoch + 1, "train_loss": loss / seen, "train_top1_err": 1 - correct / seen,
         "train_top5_err": 1 - correct5 / seen,
         "val_loss": val["loss"], "val_top1_err": val["top1_err"], "val_top5_err": val["top5_err"],
         "lr": s.optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
         "images_per_s": seen / max(seconds, 1e-9),
         "train_seconds": (s.history[-1]["train_seconds"] if s.history else 0.0) + seconds}  # fmt: skip
    s.history.append(m)
    improved = val["top1_err"] < s.best_top1_err
    s.best_top1_err = min(s.best_top1_err, val["top1_err"])
    s.epoch, s.batch, s.sums = s.epoch + 1, 0, EpochSums()
    loop.save()
    if improved:
        loop.save("best.pt")
    loop.logger.epoch(m, conv1_image(unwrap(s.model)) if loop.logger.main else None)
    return m


def conv1_image(model: nn.Module) -> torch.Tensor:
    """conv1's kernels as Figure 3 draws them, tower by tower, for TensorBoard."""
    from alexnet.inference.figure_data import first_layer
    from alexnet.inference.figures import kernel_grid

    return kernel_grid(*first_layer(model))[0]


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def wrap(model: nn.Module, rt: Runtime, train) -> nn.Module:
    """DDP across ranks (with ``train.grad_compression``), then ``torch.compile`` if asked.

    "bf16" all-reduces the gradients in bfloat16 (DDP's own bf16_compress_hook: divided by
    the number of ranks, cast, summed, cast back to float32): half the bytes on the wire for
    the 61 million gradients of every step, which is what limits AlexNet across machines
    (docs/scaling.md), at the cost of bfloat16's 8-bit mantissa in each summed gradient."""
    net = model
    if rt.world_size > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if train.grad_compression == "bf16":
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            net.register_comm_hook(None, default_hooks.bf16_compress_hook)
    if not train.compile:
        return net
    # The LRN kernel is chosen now, so that the compiled graph is one graph, not three.
    choose_ahead(rt.device, (torch.float32,) + ((rt.amp,) if rt.amp else ()))
    return torch.compile(net)


# --------------------------------------------------------------------------------------------
# The run


def fit(
    recipe: Recipe | dict,
    run_dir: Path,
    *,
    resume_from: dict | None = None,
    changes: dict[str, tuple[Any, Any]] | None = None,
    progress: bool = True,
    stop: StopFlag | None = None,
    report: bool = True,
    started: float | None = None,
    rewrite_recipe: bool = False,
) -> dict[str, float]:
    """Train ``recipe`` into ``run_dir``; returns the last epoch's metrics.

    ``resume_from`` is the run's loaded ``last.pt``; ``changes`` the keys changed on resuming
    (``--set``), as key -> (old, new); ``stop`` the caller's signal handling, if it has
    installed it already; ``report``: write report.md and its figures at the end (sweeps of
    many runs leave them out); ``started``: ``time.monotonic()`` when the command began, from
    which a time budget counts (default: now); ``rewrite_recipe`` (--checkpoint-recipe): the
    run folder's recipe.toml is written from the checkpoint's with the resume's first
    checkpoint, not before (a resume refused on its way lost the user's edited file).
    """
    with contextlib.nullcontext(stop) if stop else StopFlag() as flag:
        return _fit(recipe, run_dir, resume_from, changes or {}, progress, flag, report, started,
                    rewrite_recipe)  # fmt: skip


def _fit(recipe, run_dir, resume_from, changes, progress, stop: StopFlag,
         report: bool = True, started: float | None = None,
         rewrite_recipe: bool = False) -> dict[str, float]:  # fmt: skip
    if isinstance(recipe, dict):
        recipe = recipe_from_dict(recipe, "recipe")
    # One typed recipe: resolved once (a copy: the caller's stays as given), then made
    # concrete in place (the network's options from the data in build_network, a measured
    # rate in find_rate) and kept by the state, which trains by it and saves it; a resumed
    # run's is its checkpoint's, unchanged.
    recipe = resolve(recipe)
    if recipe.model.weights and resume_from is None:
        check_start_weights(recipe.model.weights)  # before the data is loaded
    rt = start_runtime(recipe.train)
    before_the_data(recipe, rt)
    train_set, test_set = load_data_once(recipe, rt)
    model = build_network(recipe, train_set.classes, rt)
    stats = preprocessing(recipe, train_set, resume_from, run_dir / "last.pt")
    train_loader, test_loader = make_loaders(recipe, rt, train_set, test_set, stats)
    logger = RunLogger(run_dir, rt.main, progress)
    if recipe.model.weights and resume_from is None:  # fine-tuning (finetune.py)
        logger.say(load_start_weights(model, recipe))
    elif recipe.model.freeze_features and resume_from is None:
        logger.say("warning: model.freeze_features without model.weights: the convolutional "
                   "layers stay at their random initialisation (a random-features baseline)")  # fmt: skip
    if recipe.optim.lr_find and resume_from is None:
        find_rate(recipe, model, train_loader, rt, logger, run_dir)
    clock, planned = budget_clock(recipe, resume_from, started, run_dir / "last.pt"), None
    if clock is not None and resume_from is None:  # the epochs that fit, now the rate is known
        conv1_image(model)  # what each epoch's end imports (0.5 s), before epochs are timed
        planned = plan(recipe, model, train_loader, test_loader, rt, clock, report and rt.main)
    state = training_state(recipe, model, len(train_loader), train_set, test_set, stats)
    state.budget = planned[0] if planned else {}
    if resume_from is not None:
        restore(state, resume_from, changes, logger, run_dir, len(train_loader))
        check_counts(state, len(train_loader), run_dir / "last.pt")
    else:
        announce(recipe, rt, train_set, test_set, logger, run_dir)
    net = wrap(model, rt, recipe.train)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.optim.label_smoothing)
    lost = resume_from is not None and not (run_dir / "recipe.toml").exists()  # deleted
    loop = Loop(net, state, criterion, rt, logger, run_dir, stop,
                recipe_pending=bool(changes) or lost or rewrite_recipe, clock=clock)  # fmt: skip
    if lost:
        logger.say(f"note: {run_dir / 'recipe.toml'} was missing; the next checkpoint writes it "
                   "again from the run's recipe")  # fmt: skip
    elif rewrite_recipe:
        logger.say(f"note: {run_dir / 'recipe.toml'} is written again from the checkpoint's "
                   "recipe with the next checkpoint (--checkpoint-recipe)")  # fmt: skip
    if resume_from is not None:
        recover_best(loop)
    if clock is not None:
        logger.say(planned[1] if planned else f"time budget {clock.seconds / 60:g} min: "
                   f"{max(clock.left(), 0):.0f} s of it left")  # fmt: skip
    pacer = Pacer(clock, report and rt.main, state.budget.get("epoch_seconds", 0.0)) \
        if clock else None  # fmt: skip
    stop.armed = True  # from here a signal asks for a checkpoint instead of stopping at once
    train_epochs(loop, train_loader, test_loader, pacer)
    if loop.recipe_pending:  # no epoch was left to train (--set epochs=N ending it where it
        loop.save()  # stopped): its change was reported, then lost, and a resume trained on
    return finish(loop, report, train_set, test_set)


def check_counts(state: TrainingState, steps: int, where: Path) -> None:
    """A resumed run's counts agree with each other and with its schedule: an edited batch
    skipped every batch; an edited epoch sent a finished schedule past its end, a traceback
    ("Tried to step 9 times") after the run had trained on."""
    stepped = state.schedule.last_epoch  # a per-step schedule counts steps, the others epochs
    counted = state.global_step if per_step(state.schedule) else state.epoch
    if state.batch > steps:
        problem = f"its batch {state.batch} is past the epoch's {steps}"
    elif state.global_step != state.epoch * steps + state.batch:
        problem = (f"its step count {state.global_step} is not epoch {state.epoch} of {steps} "
                   f"steps and batch {state.batch}")  # fmt: skip
    elif stepped != counted:
        problem = f"its schedule has stepped {stepped} times, its counts say {counted}"
    else:
        return
    raise CheckpointError(f"{where}: {problem}; a damaged or edited checkpoint (best.pt, if "
                          "there, may still be sound)")  # fmt: skip


def training_state(recipe: Recipe, model: nn.Module, steps_per_epoch: int, train_set, test_set,
                   stats: PixelStats | None) -> TrainingState:  # fmt: skip
    """A new run's state: the optimiser and schedule for the recipe, and the records of its
    data and preprocessing that evaluation and prediction read later."""
    opt = build_optimizer(model, recipe.optim)
    state = TrainingState(model, opt, build_schedule(opt, recipe, steps_per_epoch), recipe)
    state.data = {"train": len(train_set), "test": len(test_set), "classes": train_set.classes}
    state.data |= train_set.evaluation_record()  # to read images later as training did
    state.preprocessing = stats.to_dict() if stats else {}
    return state


def train_epochs(loop: Loop, train_loader: BatchLoader, test_loader: BatchLoader,
                 pacer: Pacer | None) -> None:  # fmt: skip
    """Epochs until the recipe's last; with a time budget, the last is brought forward when
    the run falls behind (budget.py), and that shorter plan is saved at once."""
    s, t = loop.state, loop.state.recipe.train
    while s.epoch < s.recipe.epochs:
        train_one_epoch(loop, train_loader, t.checkpoint_every, t.log_every)
        end_epoch(loop, test_loader, s.recipe.eval.tta_flip)
        if pacer and (cut := pacer.after_epoch(s, len(train_loader), loop.rt)):
            loop.logger.say(cut)
            loop.recipe_pending = True
            loop.save()


def finish(loop: Loop, report: bool, train_set, test_set) -> dict[str, float]:
    """After the last epoch: the report (on rank 0, unless left out or a signal came), what a
    time budget bought; returns the last epoch's metrics."""
    s, rt, logger, clock = loop.state, loop.rt, loop.logger, loop.clock
    reported = False
    if clock is not None:
        s.budget["spent_seconds"] = clock.used()  # what the report says of the budget
    if rt.main and report and loop.stop.signal is None:
        from alexnet.training.report import write_report

        path = write_report(loop.run_dir, unwrap(s.model), s.recipe, rt, s, train_set, test_set,
                            logger.writer)  # fmt: skip
        logger.say(f"report: {path}")
        reported = True
    if loop.stop.signal is not None:  # during the last evaluation or the report: said
        stopped_after_training(logger, loop.stop.signal, loop.run_dir, reported)
    if clock is not None:
        logger.say(f"time budget {clock.seconds / 60:g} min: {s.epoch} epochs in "
                   f"{clock.used() / 60:.1f} min")  # fmt: skip
    logger.close()
    return s.history[-1]


def stopped_after_training(logger: RunLogger, signum: int, run_dir: Path, reported: bool):
    """A signal that came after the last epoch's checkpoint: the run is complete; say so, and
    end with the signal's status."""
    later = "and its report written" if reported else \
        f"(alexnet figures {run_dir} draws its figures)"  # fmt: skip
    logger.say(f"stopped by signal {signum} after the last epoch; the training is complete and "
               f"saved {later}")  # fmt: skip
    logger.close()
    raise SystemExit(128 + signum)


def budget_clock(recipe: Recipe, resume_from: dict | None, started: float | None,
                 where: Path) -> Clock | None:  # fmt: skip
    """The run's time budget, if it has one; a resumed run's clock goes on from the seconds
    its last checkpoint ``where`` had spent (a record deleted would start it again)."""
    if not recipe.train.budget_minutes:
        return None
    if resume_from is None:
        return Clock(recipe.train.budget_minutes * 60, 0.0, started)
    record = resume_from.get("budget")
    record = record if isinstance(record, dict) else {}
    spent, began = record.get("spent_seconds"), record.get("began")
    if problem := spent_problem(spent, began, resume_from.get("history", [])):
        raise CheckpointError(f"{where}: its time budget's record of the seconds spent {problem}; "
                              "a damaged or edited checkpoint (best.pt, if there, may still be "
                              "sound)")  # fmt: skip
    return Clock(recipe.train.budget_minutes * 60, spent, started)


def spent_problem(spent, began, history: list[dict]) -> str | None:
    """What is wrong with a checkpoint's seconds spent, ``spent``, by a run whose clock began
    at the Unix time ``began``, if anything: it must have been spent since then (an absurd
    1e12 s was taken and reported as "in 16666666666.8 min") and cover at least its epochs'
    own seconds (an edit to 0 restarted the clock). A minute's grace covers a resume on a
    machine whose clock is a little behind."""
    if spent is None:
        return "is missing"
    if not (isinstance(spent, int | float) and 0 <= spent < math.inf):
        return f"is {repr(spent)[:40]}"
    if not (isinstance(began, int | float) and 0 < began < math.inf):
        return f"has {'no' if began is None else 'a damaged'} time the run began"
    since = time.time() - began
    if spent > since + 60:
        return f"({spent:.6g} s) is more than the {since:.0f} s since the run began"
    epochs = sum(m.get("epoch_seconds", 0.0) for m in history)
    if spent < 0.99 * epochs:
        return f"({spent:.6g} s) is less than its {len(history)} epochs took ({epochs:.0f} s)"
    return None


def recover_best(loop: Loop) -> None:
    """A run stopped between its last.pt and its best.pt (a full disk) has the best epoch's
    network only in last.pt, which records it as the best: best.pt is written from it now,
    and the epoch's log line that did not follow is written too."""
    s, best, last_pt = loop.state, loop.run_dir / "best.pt", loop.run_dir / "last.pt"
    last = s.history[-1] if s.history else None
    lost = (loop.rt.main and last is not None and s.batch == 0  # an epoch's end, the best one
            and last["val_top1_err"] <= s.best_top1_err
            and not (best.is_file() and best.stat().st_mtime >= last_pt.stat().st_mtime))  # fmt: skip
    if not any_rank(loop.rt, lost)[0]:  # rank 0 decides; every rank takes part in the save
        return
    loop.save("best.pt")
    log = loop.run_dir / "log.txt"
    if loop.logger.main and format_epoch(last) not in (log.read_text() if log.exists() else ""):
        loop.logger.say(format_epoch(last))


def find_rate(recipe: Recipe, model: nn.Module, loader: BatchLoader, rt: Runtime,
              logger: RunLogger, run_dir: Path | None) -> None:  # fmt: skip
    """The recipe's ``optim.lr`` set from a range test on rank 0 (lr_find.py), shared with the
    other ranks; its plot saved as ``lr_find.png`` in the run folder."""
    found = [0.0]
    if rt.main:
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.optim.label_smoothing)
        test = range_test(model, loader, recipe.optim, rt, criterion, progress=logger.progress)
        found[0] = test.suggestion
        if run_dir is not None:
            test.plot(run_dir / "lr_find.png")
            doubt = "; no real minimum in the range tried, see the plot" if test.at_edge else ""
            logger.say(f"learning-rate range test: loss lowest at {test.minimum:.3g}; training "
                       f"at {test.suggestion:.3g} (plot: {run_dir / 'lr_find.png'}){doubt}")  # fmt: skip
            if test.repeated():
                logger.say(f"warning: {test.repeated()}")
    if rt.world_size > 1:
        dist.broadcast_object_list(found, src=0)
    recipe.optim.lr = float(found[0])


def find_learning_rate(recipe: Recipe, steps: int, plot: Path) -> RangeTest:
    """``alexnet lr-find``: the range test alone, on the recipe's data and network."""
    recipe = resolve(recipe)
    rt = start_runtime(recipe.train)
    before_the_data(recipe, rt)
    train_set, test_set = load_data(recipe)
    model = build_network(recipe, train_set.classes, rt)
    stats = preprocessing(recipe, train_set, None)
    loader = make_loaders(recipe, rt, train_set, test_set, stats)[0]
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.optim.label_smoothing)
    test = range_test(model, loader, recipe.optim, rt, criterion, steps=steps, progress=True)
    test.plot(plot)
    return test


def announce(
    recipe: Recipe, rt: Runtime, train_set, test_set, logger: RunLogger, run_dir: Path
) -> None:
    """A new run's first lines, its saved recipe and its list of skipped files."""
    if not rt.main:
        return
    write_text(run_dir / "recipe.toml", recipe.to_toml())
    logger.text("recipe", "```\n" + recipe.to_toml() + "\n```")
    logger.say(f"run {run_dir}: {recipe.model.arch} on {recipe.data.source} ({len(train_set)} "
               f"train / {len(test_set)} test images), {rt.describe()}")  # fmt: skip
    if len(train_set.classes) == 1:
        logger.say(f"warning: the data has one class ({train_set.classes[0]}): every image is "
                   "that class, so the loss goes to 0 and the network learns nothing about "
                   "images; give it two classes or more")  # fmt: skip
    optim = recipe.optim
    if not optim.lr_find and optim.lr_find_divisor != OptimSettings().lr_find_divisor:
        logger.say(f"warning: optim.lr_find_divisor = {optim.lr_find_divisor:g} does nothing "
                   f"without optim.lr_find; the run trains at optim.lr = {optim.lr:g}")  # fmt: skip
    for s in (train_set, test_set):
        line = s.staleness()
        if line:
            logger.say(line)
    skipped = run_dir / "skipped.txt"
    if write_skip_list([train_set, test_set], skipped):
        for s in (train_set, test_set):
            line = s.skip_summary(skipped)
            if line:
                logger.say(line)


def _check_same_data(before, current: dict, run_dir: Path) -> None:
    """The checkpoint's record of its data (``before``; None in checkpoints of alexnet 0.1.0)
    is of the kinds training writes and equals the data's now: an edited count that is text
    had been blamed on the data."""
    if before is not None and not isinstance(before, dict):
        raise CheckpointError(f"{run_dir / 'last.pt'}: its data record is a "
                              f"{type(before).__name__}; a damaged or edited checkpoint")  # fmt: skip
    edited = [k for k, v in (before or {}).items()
              if k in current and type(v) is not type(current[k])]  # fmt: skip
    if edited:
        raise CheckpointError(f"{run_dir / 'last.pt'}: its data record's {edited[0]} is "
                              f"{before[edited[0]]!r}, not a {type(current[edited[0]]).__name__}; "
                              "a damaged or edited checkpoint")  # fmt: skip
    if before and before != current:
        was, now = (f"{d.get('train')} train / {d.get('test')} test images, "
                    f"{len(d.get('classes') or [])} classes" for d in (before, current))  # fmt: skip
        changed = sorted(k for k in {*before, *current} if before.get(k) != current.get(k))
        raise UserError(f"{run_dir}: its data changed since the run began ({was}; now {now}; "
                        f"what differs: {', '.join(changed)}), so it cannot continue as it was; "
                        "start a new run")  # fmt: skip


def restore(state: TrainingState, checkpoint: dict, changes: dict, logger: RunLogger,
            run_dir: Path, steps: int) -> None:  # fmt: skip
    """Continue from ``checkpoint``; apply and record the resume's changes (the folder's
    recipe.toml follows with the next checkpoint, so a resume that fails first changes
    nothing); rebuild the log."""
    _check_same_data(checkpoint.get("data"), state.data, run_dir)
    state.load_state_dict(checkpoint, run_dir / "last.pt")
    if changes:
        if "optim.lr" in changes:
            change_learning_rate(state.optimizer, state.schedule, changes["optim.lr"][1])
        state.changes.append({"epoch": state.epoch, "batch": state.batch,
                              **{k: list(v) for k, v in changes.items()}})  # fmt: skip
    if logger.main:
        write_text(run_dir / "metrics.jsonl", "".join(f"{json.dumps(m)}\n" for m in state.history))
        log = run_dir / "log.txt"
        if not log.exists() and state.history:  # deleted: its epochs' lines come back
            write_text(log, f"(log.txt was missing: the epochs of {run_dir / 'last.pt'})\n"
                       + "".join(f"{format_epoch(m)}\n" for m in state.history))  # fmt: skip
    said = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
    if state.epoch >= state.recipe.epochs:  # runs.left_unfinished: stopped by its last writes
        logger.say(f"finishing {run_dir}: its {state.epoch} epochs are trained; writing what "
                   "its end did not write (best.pt, report.md)")  # fmt: skip
        return
    at = (f"epoch {state.epoch + 1}'s evaluation (its {steps} batches are trained)"
          if state.batch == steps else f"epoch {state.epoch + 1}, batch {state.batch + 1}")  # fmt: skip
    logger.say(f"resuming {run_dir} at {at}" + (f" with {said}" if said else ""))
