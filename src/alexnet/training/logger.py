"""What a run tells: progress bars on a terminal, a line per epoch, ``log.txt``,
``metrics.jsonl`` and TensorBoard. Only rank 0 writes; the other ranks' loggers are silent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from alexnet.files import append_text, text_name
from alexnet.progress import bar

SCALARS = ("train_loss", "train_top1_err", "train_top5_err", "val_loss", "val_top1_err",
           "val_top5_err", "lr", "images_per_s")  # fmt: skip


def format_epoch(m: dict[str, float]) -> str:
    return (
        f"epoch {m['epoch']:3d}  train loss {m['train_loss']:.4f} top-1 err {100 * m['train_top1_err']:5.2f}%"
        f"  |  val loss {m['val_loss']:.4f} top-1 err {100 * m['val_top1_err']:5.2f}%"
        f" top-5 err {100 * m['val_top5_err']:5.2f}%  |  lr {m['lr']:.4g}"
        f"  {m['epoch_seconds']:.1f}s  {m['images_per_s']:.0f} img/s"
    )


class RunLogger:
    def __init__(self, run_dir: Path, main: bool, progress: bool) -> None:
        self.main, self.run_dir = main, run_dir
        # Bars redraw with carriage returns: on a log file or a pipe that is noise, so they
        # are drawn on a terminal only; the per-epoch lines are written everywhere.
        self.progress = progress and main and sys.stderr.isatty()
        self.writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            text_name(run_dir, "TensorBoard")  # a run folder renamed since it began
            self.writer = SummaryWriter(str(run_dir / "tb"))

    def say(self, text: str) -> None:
        """A line on stderr (above any bar) and in ``log.txt``."""
        if not self.main:
            return
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
        append_text(self.run_dir / "log.txt", text + "\n")

    def text(self, tag: str, body: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, body)

    def bar(self, total: int, epoch: int, epochs: int, initial: int = 0):
        if not self.progress:
            return None
        return bar(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                   leave=False)  # fmt: skip

    def epoch(self, m: dict[str, Any], kernels: torch.Tensor | None = None) -> None:
        """The epoch's line, its ``metrics.jsonl`` entry, its scalars and, given, the image of
        conv1's kernels (drawn by the caller: the logger draws nothing itself)."""
        if not self.main:
            return
        self.say(format_epoch(m))
        append_text(self.run_dir / "metrics.jsonl", json.dumps(m) + "\n")
        assert self.writer is not None
        for key in SCALARS:
            group, _, name = key.partition("_")
            self.writer.add_scalar(f"{group}/{name}" if group in ("train", "val") else key, m[key],
                                   m["epoch"])  # fmt: skip
        if kernels is not None:
            self.writer.add_image("conv1_kernels", kernels, m["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
