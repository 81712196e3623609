"""Input files of the file-based sources (photo folders, replay folders): listing, reading, splits.

Everything goes through ``pipelines.storage.filesystem``, so a local folder and an
``s3://bucket/prefix`` are listed and read the same way. Inputs are identified by their path
relative to the input root (``ref``): that is what rejects, manifests and split hashing use.
"""

from __future__ import annotations

import hashlib
import posixpath

from fsspec import AbstractFileSystem

from pipelines.storage import filesystem


def _url(protocol: str | tuple[str, ...], path: str) -> str:
    """A path that ``filesystem`` resolves again on a worker (local paths stay plain)."""
    proto = protocol[0] if isinstance(protocol, tuple) else protocol
    return path if proto in ("file", "local") else f"{proto}://{path}"


def list_files(root_url: str) -> list[tuple[str, str, int | None]]:
    """Every file under ``root_url`` as (url, ref, size), sorted by ref.

    ``size`` is the listing's byte count (free on object stores; a link's target size), or None
    when the file cannot be read (a broken link). Such files are listed too: reading them fails
    later and they become rejects, never silent omissions.
    """
    fs, root = filesystem(root_url)
    if not fs.exists(root):
        raise FileNotFoundError(f"input {root_url} does not exist")
    if not fs.isdir(root):
        raise ValueError(f"input {root_url} is a file; pass the folder (or bucket prefix) above it")
    found = fs.find(root, withdirs=False, detail=True)
    if not found:
        raise ValueError(f"input {root_url} holds no files")
    files = [
        (_url(fs.protocol, path), posixpath.relpath(path, root), _size(fs, path, info))
        for path, info in found.items()
    ]
    return sorted(files, key=lambda item: item[1])


def _size(fs: AbstractFileSystem, path: str, info: dict) -> int | None:
    if info.get("type") == "file":
        return int(info["size"])
    try:  # a link (fsspec reports "other"): its target's size, if the target exists
        return int(fs.size(path)) if fs.isfile(path) else None
    except OSError:
        return None


def resolve(root_url: str, path: str) -> str:
    """A labels-file path: absolute paths and URLs as they are, others relative to the root."""
    if "://" in path or path.startswith("/"):
        return path
    fs, root = filesystem(root_url)
    return _url(fs.protocol, posixpath.join(root, path))


def read_bytes(url: str) -> bytes:
    """The whole content of one input file."""
    fs, path = filesystem(url)
    return fs.cat_file(path)


def hash_split(ref: str, *, val_fraction: float, test_fraction: float) -> str:
    """A deterministic split from the input's relative path.

    sha256 of the ref, read as a number in [0, 1): below ``test_fraction`` → test, below
    ``test_fraction + val_fraction`` → val, else train. Adding or removing other files never moves
    a file to another split.
    """
    u = int.from_bytes(hashlib.sha256(ref.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def check_fractions(owner: str, val_fraction: float, test_fraction: float) -> None:
    """Validate split fractions of a config named ``owner``."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"{owner}: val_fraction={val_fraction} and test_fraction={test_fraction} must be in "
            "[0, 1) and leave room for training (sum < 1)"
        )
