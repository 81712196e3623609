"""Dataset versions on any fsspec URL: layout, manifest, atomic publication, reading back.

Layout of a dataset root (a local path or ``s3://bucket/prefix``)::

    <root>/<version>/manifest.json          written last: a version without it does not exist
    <root>/<version>/split=<split>/part-*.parquet
    <root>/<version>/rejects/part-*.parquet
    <root>/_staging/<version>-<token>/       where a build writes before it is published
                                            (a killed build's: removed after a day)
    <root>/latest.json                      {"version": ...}: moved only after a publish succeeded

S3 endpoint, credentials and region come from the standard AWS environment/config (for a local
S3-compatible server: ``AWS_ENDPOINT_URL``); they are never logged.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pipelines.schema import (
    IMAGE_SCHEMA,
    REJECT_SCHEMA,
    SCHEMA_VERSION,
    SPLITS,
    Manifest,
    SchemaError,
    validate_schema,
)

MANIFEST = "manifest.json"
LATEST = "latest.json"
STAGING = "_staging"
REJECTS_DIR = "rejects"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A staging directory unchanged this long belongs to a killed build (clean_staging).
STALE_STAGING_S = 24 * 3600
log = logging.getLogger(__name__)


class StorageError(ValueError):
    """A dataset location cannot be used as asked (missing, existing, unwritable, ...)."""


def url_scheme(url: str) -> str | None:
    """The object store a URL names (`s3` for ``s3://bucket/key``); None for a local path."""
    return url.split("://", 1)[0] if "://" in url else None


def with_scheme(url: str, path: str) -> str:
    """`path`, as `filesystem(url)` resolved it, back in `url`'s form: ``s3://`` + path for an
    object-store URL, the path itself for a local one (Ray's readers and workers re-resolve
    their filesystem from it)."""
    scheme = url_scheme(url)
    return f"{scheme}://{path}" if scheme else path


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """Resolve a URL to (filesystem, path). Local paths are made absolute."""
    protocol = url_scheme(url)
    if protocol is None:
        return fsspec.filesystem("file"), os.path.abspath(url)
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        # A listing cache makes a read right after a write miss new files.
        options["use_listings_cache"] = False
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path


def join(*parts: str) -> str:
    """Join path parts with '/', for local and object-store paths alike."""
    return posixpath.join(*parts)


def check_version_name(version: str) -> None:
    """Version names become directory names: keep them simple."""
    if not _VERSION_RE.match(version) or version == STAGING:
        raise StorageError(
            f"invalid version name {version!r}: use letters, digits, '.', '_' or '-', "
            f"not starting with a separator, and not {STAGING!r}"
        )


def list_versions(root_url: str) -> list[str]:
    """Published versions (those with a manifest) under a dataset root, sorted by name."""
    fs, root = filesystem(root_url)
    if not fs.exists(root):
        return []
    names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
    return sorted(n for n in names if n != STAGING and fs.exists(join(root, n, MANIFEST)))


def next_version(root_url: str) -> str:
    """``v0001``, ``v0002``, ... after the highest numbered version directory, published or
    not: a publish interrupted after moving its files (no manifest yet; on S3 the copy takes a
    while) leaves its directory, whose name is skipped, never reused."""
    fs, root = filesystem(root_url)
    names = (
        [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
        if fs.exists(root)
        else []
    )
    numbers = [int(n[1:]) for n in names if re.fullmatch(r"v\d+", n)]
    return f"v{max(numbers, default=0) + 1:04d}"


def read_latest(root_url: str) -> dict[str, Any] | None:
    """The ``latest`` pointer of a dataset root (``{"version": ..., ...}``), or None if unset."""
    fs, root = filesystem(root_url)
    path = join(root, LATEST)
    if not fs.exists(path):
        return None
    pointer = _read_json(fs, path, f"{root_url.rstrip('/')}/{LATEST}")
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise StorageError(f"{root_url.rstrip('/')}/{LATEST} is not a version pointer: {pointer!r}")
    return pointer


def write_latest(root_url: str, pointer: dict[str, Any]) -> None:
    """Point ``latest`` at a published version (atomic: a rename locally, one PUT on S3).

    Refuses a version without a manifest, so the pointer never names an unpublished version.
    """
    version = pointer.get("version")
    fs, root = filesystem(root_url)
    if not isinstance(version, str) or not fs.exists(join(root, version, MANIFEST)):
        raise StorageError(f"cannot point latest at {version!r}: not a published version")
    write_json(fs, join(root, LATEST), pointer)


def resolve_version(url: str) -> str:
    """A version URL as given, or, for a dataset root, the version its ``latest`` names."""
    fs, path = filesystem(url)
    if fs.exists(join(path, MANIFEST)):
        return url
    pointer = read_latest(url)
    return f"{url.rstrip('/')}/{pointer['version']}" if pointer else url


def _version_order(name: str) -> tuple[int, str]:
    match = re.fullmatch(r"v(\d+)", name)
    return (int(match.group(1)), "") if match else (-1, name)


def prune_versions(root_url: str, *, keep: int, protect: set[str] | None = None) -> list[str]:
    """Delete the oldest published versions beyond the newest ``keep``; never one in ``protect``.

    The manifest goes first, so a reader never opens a half-deleted version. Returns the deleted
    version names (oldest first). Versions are ordered by number (``v9`` before ``v10``), then
    by name.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    fs, root = filesystem(root_url)
    versions = sorted(list_versions(root_url), key=_version_order)
    doomed = [v for v in versions[: max(len(versions) - keep, 0)] if v not in (protect or set())]
    for version in doomed:
        fs.rm(join(root, version, MANIFEST))
        fs.rm(join(root, version), recursive=True)
    return doomed


@dataclass
class Staging:
    """A build's private directory; published by moving it to its version name."""

    fs: AbstractFileSystem
    root: str
    version: str
    path: str

    @classmethod
    def create(cls, root_url: str, version: str) -> Staging:
        """Check the version can be written and make its staging directory."""
        check_version_name(version)
        fs, root = filesystem(root_url)
        final = join(root, version)
        if fs.exists(final):
            state = "published" if fs.exists(join(final, MANIFEST)) else "incomplete (no manifest)"
            raise StorageError(
                f"dataset version {root_url.rstrip('/')}/{version} already exists ({state}); "
                "choose another --version or delete it"
            )
        clean_staging(root_url)
        path = join(root, STAGING, f"{version}-{uuid.uuid4().hex[:8]}")
        try:
            fs.makedirs(path, exist_ok=True)
            probe = join(path, ".write-probe")
            with fs.open(probe, "wb") as f:
                f.write(b"ok")
            fs.rm(probe)
        except (OSError, PermissionError) as exc:
            raise StorageError(f"cannot write under {root_url}: {exc}") from exc
        return cls(fs=fs, root=root, version=version, path=path)

    def publish(self, manifest: Manifest) -> str:
        """Move the staged files into place, then write the manifest last; returns its path."""
        final = join(self.root, self.version)
        if self.fs.exists(final):
            raise StorageError(f"dataset version {final} appeared while building; not overwritten")
        if self.fs.protocol == "file" or "file" in self.fs.protocol:
            os.rename(self.path, final)  # atomic on one filesystem
        else:
            # Object stores have no rename: copy each object, then drop the staging copies.
            # Readers ignore the version until the manifest below exists.
            for src in self.fs.find(self.path):
                self.fs.copy(src, join(final, posixpath.relpath(src, self.path)))
            self.fs.rm(self.path, recursive=True)
        write_json(self.fs, join(final, MANIFEST), manifest.to_json())
        return final

    def discard(self) -> None:
        """Remove the staging directory (after a failed build)."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)


def clean_staging(root_url: str, *, stale_after_s: float = STALE_STAGING_S) -> list[str]:
    """Remove the staging directories of killed builds: those where nothing changed for
    `stale_after_s` (a running build writes a shard every few minutes). Returns their names."""
    fs, root = filesystem(root_url)
    staging = join(root, STAGING)
    if not fs.exists(staging):
        return []
    removed = []
    for path in fs.ls(staging, detail=False):
        newest = _newest_change(fs, path)
        if newest is not None and time.time() - newest > stale_after_s:
            fs.rm(path, recursive=True)
            removed.append(posixpath.basename(path.rstrip("/")))
    if removed:
        log.info("removed the staging directories of killed builds: %s", removed)
    return removed


def _newest_change(fs: AbstractFileSystem, path: str) -> float | None:
    """The latest modification time (epoch seconds) of `path` or anything under it."""
    infos = [fs.info(path), *fs.find(path, withdirs=True, detail=True).values()]
    stamps = []
    for info in infos:
        stamp = info.get("mtime") or info.get("LastModified")
        if isinstance(stamp, datetime.datetime):
            stamp = stamp.timestamp()
        if isinstance(stamp, (int, float)):
            stamps.append(float(stamp))
    return max(stamps, default=None)


def write_json(fs: AbstractFileSystem, path: str, payload: dict[str, Any]) -> None:
    """Write JSON so readers never see a half-written file (temp name + rename where possible)."""
    data = json.dumps(payload, indent=2, sort_keys=True).encode()
    if "file" in fs.protocol:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:  # an object PUT is atomic by itself
        with fs.open(path, "wb") as f:
            f.write(data)


def _read_json(fs: AbstractFileSystem, path: str, name: str) -> Any:
    """A JSON file's content; a StorageError naming the file (`name`) when it is not JSON."""
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise StorageError(
            f"{name} is not valid JSON ({exc}; {len(data)} bytes): the file is damaged; rebuild "
            "the version (or, for latest.json, point it at a version again)"
        ) from exc


@contextlib.contextmanager
def open_parquet(fs: AbstractFileSystem, path: str) -> Iterator[pq.ParquetFile]:
    """One shard opened for reading. A file that is no Parquet file (truncated by an interrupted
    copy, overwritten) raises a StorageError naming it, not pyarrow's nameless error."""
    with fs.open(path, "rb") as f:
        try:
            parquet = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StorageError(
                f"shard {path} is not a readable Parquet file ({exc}): the version is damaged; "
                "`python -m jobs.verify --dataset <version>` lists every damaged file"
            ) from exc
        yield parquet


def write_parquet(
    fs: AbstractFileSystem, path: str, table: pa.Table, *, row_group_rows: int = 16
) -> int:
    """Write one Parquet file; returns its size in bytes.

    Encoded tiles do not compress further and must not be dictionary-encoded; everything else
    gets zstd. Row groups of tens of images keep a reader's memory bounded.
    """
    # level tiles are raw pixels (pipelines.pyramid.LEVEL_FORMAT): they do compress
    binary = [n for n in ("tiles", "proxy") if n in table.column_names]
    codecs = {n: ("none" if n in binary else "zstd") for n in table.column_names}
    if "tiles" in binary and _all_raw(table):
        codecs["tiles"] = "zstd"  # raw pixels do compress
    # pyarrow takes a list column's codec under its leaf path; the bare name is ignored
    compression = {
        f"{n}.list.element" if pa.types.is_list(table.schema.field(n).type) else n: codec
        for n, codec in codecs.items()
    }
    blobs = [*binary, "level_tiles"]  # unique per row: a dictionary would only add to them
    dictionary = [n for n in table.column_names if n not in blobs]
    with fs.open(path, "wb") as f:
        pq.write_table(
            table,
            f,
            row_group_size=row_group_rows,
            compression=compression,
            use_dictionary=dictionary,
        )
    return int(fs.size(path))


def _all_raw(table: pa.Table) -> bool:
    return "tile_format" in table.column_names and set(table.column("tile_format").to_pylist()) == {
        "raw"
    }


@dataclass
class DatasetVersion:
    """A published dataset version opened for reading."""

    url: str
    fs: AbstractFileSystem
    path: str
    manifest: Manifest

    @classmethod
    def open(cls, url: str) -> DatasetVersion:
        """Open ``<root>/<version>``; only versions with a manifest can be opened."""
        fs, path = filesystem(url)
        manifest_path = join(path, MANIFEST)
        if not fs.exists(manifest_path):
            raise StorageError(
                f"no published dataset version at {url} (no {MANIFEST}); "
                "build one with `python -m jobs.build_dataset`"
            )
        where = f"{url.rstrip('/')}/{MANIFEST}"
        values = _read_json(fs, manifest_path, where)
        if not isinstance(values, dict):
            raise StorageError(
                f"{where} is not a manifest (a JSON object): "
                f"{type(values).__name__}; rebuild the version"
            )
        if values.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(
                f"dataset {url} has schema version {values.get('schema_version')}; "
                f"this code reads version {SCHEMA_VERSION}: rebuild it with this code"
            )
        return cls(url=url, fs=fs, path=path, manifest=Manifest.from_json(values, where))

    def files(self, split: str) -> list[str]:
        """Parquet files of one split (sorted, so reads are deterministic)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        directory = join(self.path, f"split={split}")
        if not self.fs.exists(directory):
            return []
        return sorted(p for p in self.fs.ls(directory, detail=False) if p.endswith(".parquet"))

    def rejects_files(self) -> list[str]:
        """Parquet files of the rejects table."""
        directory = join(self.path, REJECTS_DIR)
        if not self.fs.exists(directory):
            return []
        return sorted(p for p in self.fs.ls(directory, detail=False) if p.endswith(".parquet"))

    def read(self, split: str, columns: list[str] | None = None) -> pa.Table:
        """Read a whole split into memory, validating each file's schema (small data only)."""
        tables = []
        for path in self.files(split):
            with open_parquet(self.fs, path) as parquet:
                validate_schema(parquet.schema_arrow)
                tables.append(parquet.read(columns=columns))
        if not tables:
            schema = (
                IMAGE_SCHEMA
                if columns is None
                else pa.schema(
                    [IMAGE_SCHEMA.field(c) for c in columns], metadata=IMAGE_SCHEMA.metadata
                )
            )
            return schema.empty_table()
        return pa.concat_tables(tables)

    def read_head(self, split: str, n: int, columns: list[str] | None = None) -> pa.Table:
        """The first ``n`` rows of a split (in file order), reading no more than needed."""
        tables, have = [], 0
        for table in self.iter_tables(self.files(split), batch_size=max(n, 1), columns=columns):
            tables.append(table.slice(0, n - have))
            have += tables[-1].num_rows
            if have >= n:
                return pa.concat_tables(tables)
        if tables:
            return pa.concat_tables(tables)
        return self.read(split, columns).slice(0, 0)

    def iter_tables(
        self, files: list[str], *, batch_size: int, columns: list[str] | None = None
    ) -> Iterator[pa.Table]:
        """Tables of at most `batch_size` rows from `files` (some of this version's), in order,
        each file's schema validated; one row group in memory at a time."""
        for path in files:
            with open_parquet(self.fs, path) as parquet:
                validate_schema(parquet.schema_arrow)
                for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
                    yield pa.Table.from_batches([batch])

    def read_rejects(self) -> pa.Table:
        """The rejects table of this version (may be empty)."""
        tables = []
        for path in self.rejects_files():
            with open_parquet(self.fs, path) as parquet:
                tables.append(parquet.read())
        return pa.concat_tables(tables) if tables else REJECT_SCHEMA.empty_table()
