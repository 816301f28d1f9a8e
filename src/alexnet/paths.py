"""Where the package keeps what it makes once and reuses: the user cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$ALEXNET_CACHE``, else ``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``."""
    given = os.environ.get("ALEXNET_CACHE")
    if given is not None and not given.strip():  # `ALEXNET_CACHE= alexnet cache clear` cleared
        raise ValueError("ALEXNET_CACHE is set but empty; unset it for the default cache "  # the
                         "folder, or give it a folder")  # user's own cache, 41.6 GB  # fmt: skip
    if given:
        path, said = Path(given), "ALEXNET_CACHE"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path, said = Path(base) / "alexnet", "the cache folder"
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{said} {path} is a symbolic link to nothing, or to itself; point "
                         "ALEXNET_CACHE at a folder")  # fmt: skip
    if path.exists() and not path.is_dir():  # every write under it failed, as "Not a directory"
        raise ValueError(f"{said} {path} is a file, not a folder; point ALEXNET_CACHE at a "
                         "folder (made if missing)")  # fmt: skip
    return path
