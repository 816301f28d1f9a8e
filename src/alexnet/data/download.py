"""Downloads that are checked before they are used, and fetched only once."""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.request
from pathlib import Path

from alexnet.data.cache import sha256_bytes, sha256_file
from alexnet.errors import UserError


def download(
    url: str, dest: Path, sha256: str | None = None, decompressed_sha256: str | None = None
) -> Path:
    """``dest``, fetched from ``url`` unless a copy with the right checksum is there already.
    The file is written beside ``dest`` and renamed into place only once its checksum holds."""
    if dest.is_file() and _matches(dest, sha256, decompressed_sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
        if not _matches(tmp, sha256, decompressed_sha256):
            raise UserError(f"{url}: checksum mismatch (sha256), download refused; try again later")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return dest


def _matches(path: Path, sha256: str | None, decompressed_sha256: str | None) -> bool:
    if sha256 and sha256_file(path) != sha256:
        return False
    if decompressed_sha256:
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError):
            return False
        return sha256_bytes(data) == decompressed_sha256
    return True
