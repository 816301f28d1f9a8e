"""Where the package keeps what it makes once and reuses: the user cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$ALEXNET_CACHE``, else ``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``."""
    if os.environ.get("ALEXNET_CACHE"):
        return Path(os.environ["ALEXNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alexnet"
