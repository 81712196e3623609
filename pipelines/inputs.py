"""Input files of the file-based sources (photo folders, replay folders): listing, reading, splits.

Everything goes through ``pipelines.storage.filesystem``, so a local folder and an
``s3://bucket/prefix`` are listed and read the same way. Inputs are identified by their path
relative to the input root (``ref``): that is what rejects, manifests and split hashing use.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from typing import NamedTuple

from fsspec import AbstractFileSystem

from pipelines.storage import filesystem


def _url(protocol: str | tuple[str, ...], path: str) -> str:
    """A path that ``filesystem`` resolves again on a worker (local paths stay plain)."""
    proto = protocol[0] if isinstance(protocol, tuple) else protocol
    return path if proto in ("file", "local") else f"{proto}://{path}"


class Listed(NamedTuple):
    """One file of a listing."""

    url: str | None  # where to read it; None when its name cannot be carried (see `reason`)
    ref: str  # path relative to the root, printable (undecodable bytes as \\xNN escapes)
    size: int | None  # the listing's byte count; None when unknown (a link, a special file)
    reason: str | None  # why the file is no input, known from the listing alone; else None


class NotRegularFileError(OSError):
    """A FIFO, socket or device: never opened (opening or reading a FIFO blocks forever)."""


def list_files(root_url: str) -> list[Listed]:
    """Every file under ``root_url``, sorted by ref.

    Files that cannot be inputs are listed too, never silently left out: a broken link (its size
    is None: reading it fails later, saying why), a FIFO, socket or device (``reason``: "not a
    regular file: ..."; never opened) and a name that is not valid UTF-8 (``reason``; no url, as
    such a name cannot travel in an Arrow string).
    """
    fs, root = filesystem(root_url)
    if not fs.exists(root):
        raise FileNotFoundError(f"input {root_url} does not exist")
    if not fs.isdir(root):
        raise ValueError(f"input {root_url} is a file; pass the folder (or bucket prefix) above it")
    found = fs.find(root, withdirs=False, detail=True)
    if not found:
        raise ValueError(f"input {root_url} holds no files")
    files = [_listed(fs, path, posixpath.relpath(path, root), info) for path, info in found.items()]
    return sorted(files, key=lambda item: item.ref)


def printable(name: str) -> str:
    """`name` with the bytes that are not UTF-8 (os.fsdecode's surrogates) as \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _listed(fs: AbstractFileSystem, path: str, ref: str, info: dict) -> Listed:
    if printable(ref) != ref:
        reason = "file name is not valid UTF-8; rename the file"
        return Listed(None, printable(ref), None, reason)
    if info.get("type") == "file":
        return Listed(_url(fs.protocol, path), ref, int(info["size"]), None)
    size, reason = _inspect(fs, path)
    return Listed(_url(fs.protocol, path), ref, size, reason)


def _inspect(fs: AbstractFileSystem, path: str) -> tuple[int | None, str | None]:
    """(size, reason) of what the listing does not call a plain file: a link's target size, a
    special file's reason, (None, None) for a broken link."""
    if not _is_local(fs):
        try:
            return (int(fs.size(path)) if fs.isfile(path) else None), None
        except OSError:
            return None, None
    try:
        mode = os.stat(path)  # follows links: a link to a FIFO is a FIFO
    except OSError:
        return None, None
    kind = _special_kind(mode.st_mode)
    if kind:
        return None, f"not a regular file: {kind}"
    return (mode.st_size if stat.S_ISREG(mode.st_mode) else None), None


def _special_kind(mode: int) -> str | None:
    kinds = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), None)


def _is_local(fs: AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


class RefusedPathError(ValueError):
    """A labels-file path that is never read (it could lead out of the input folder, or no file
    can have that name); the message is the reject reason."""


def resolve(root_url: str, path: str) -> str:
    """A labels-file path, relative to the input root, as a URL under that root.

    An absolute path, a URL (``file://``, ``s3://``, any scheme) or a path whose ``..`` climbs
    above the root raises RefusedPathError: a labels file must not make the build read (or
    stat: a size in a reject reason leaks too) a file the input does not hold. So does a path
    holding a NUL byte, which no file name can (the OS calls refuse it with a ValueError).
    """
    if "\0" in path:
        raise RefusedPathError("bad path in the labels file: a file name cannot hold a NUL byte")
    normal = posixpath.normpath(path)  # "a/../b" → "b", "x/../../b" → "../b"
    if "://" in path or path.startswith("/") or normal.split("/")[0] == "..":
        raise RefusedPathError(
            "path outside the input folder: the labels file's paths are relative to the input "
            "(no absolute paths, URLs or '..' above it)"
        )
    fs, root = filesystem(root_url)
    return _url(fs.protocol, posixpath.join(root, normal))


def read_bytes(url: str) -> bytes:
    """The whole content of one input file; a NotRegularFileError (never blocking) for a FIFO,
    socket or device."""
    fs, path = filesystem(url)
    if not _is_local(fs):
        return fs.cat_file(path)
    _check_regular(os.stat(path).st_mode, url)
    # O_NONBLOCK: a FIFO put in the file's place after the check opens without blocking, and
    # fstat then refuses it; on a regular file the flag changes nothing.
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        _check_regular(os.fstat(f.fileno()).st_mode, url)
        return f.read()


def _check_regular(mode: int, url: str) -> None:
    kind = _special_kind(mode)
    if kind:
        raise NotRegularFileError(f"not a regular file: {kind}: {printable(url)}")


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
    """Validate split fractions of a config named ``owner``. They may sum to 1: a dataset with
    no training split is an evaluation set (StarCraft II's real replays, scored by models trained
    on simulated scenes)."""
    fractions = (val_fraction, test_fraction)
    if not (all(0 <= f <= 1 for f in fractions) and sum(fractions) <= 1):
        raise ValueError(
            f"{owner}: val_fraction={val_fraction} and test_fraction={test_fraction} must be in "
            "[0, 1] and sum to at most 1"
        )
