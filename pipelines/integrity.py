"""Per-row integrity: a digest of what a row stores, written once at build time and checked
whenever the row is read (training, evaluation) or by ``python -m jobs.verify``.

A row's digest is the SHA-256 of its stored image (the encoded tiles, the pooled level's tiles,
the proxy) together with the scalars needed to decode them and what the row claims (id, label),
each part length-prefixed so that no two rows' contents collide by concatenation. Every source's
rows pass through ``pipelines.build.write_shard``, which stamps the digest there (one place).

A version's manifest records, per split, the digest of its rows' digests (``data_digests``): file
by file in name order, row by row in file order. A copy whose bytes changed has another
``data_digests`` when recomputed from what it stores, so two copies that share a manifest but not
their data can be told apart (``observed_digests``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipelines.codec import CodecError
from pipelines.schema import SchemaError, validate_schema
from pipelines.tiling import decode_proxy

DIGEST_COLUMN = "digest"
# The columns a digest covers, in this order: scalars first, then the stored bytes.
SCALAR_COLUMNS = (
    "image_id",
    "label",
    "height",
    "width",
    "channels",
    "tile_size",
    "tile_format",
    "level_factor",
)
BLOB_COLUMNS = ("tiles", "level_tiles")  # lists of encoded tiles
DIGEST_INPUTS = (*SCALAR_COLUMNS, *BLOB_COLUMNS, "proxy")


def _update(h: Any, blob: bytes) -> None:
    h.update(len(blob).to_bytes(8, "little"))
    h.update(blob)


def row_digest(row: Mapping[str, Any]) -> str:
    """The hex SHA-256 of one row (a dict with the `DIGEST_INPUTS` columns)."""
    h = hashlib.sha256()
    for name in SCALAR_COLUMNS:
        _update(h, repr(row.get(name)).encode())
    for name in BLOB_COLUMNS:
        blobs = row.get(name) or []
        h.update(len(blobs).to_bytes(8, "little"))
        for blob in blobs:
            _update(h, blob)
    _update(h, row.get("proxy") or b"")
    return h.hexdigest()


def table_digests(table: pa.Table) -> list[str]:
    """The digest of every row of `table`, recomputed from what it holds."""
    present = [c for c in DIGEST_INPUTS if c in table.column_names]
    return [row_digest(r) for r in table.select(present).to_pylist()]


def with_digests(table: pa.Table) -> pa.Table:
    """`table` with its `digest` column (re)computed from its rows."""
    if DIGEST_COLUMN in table.column_names:
        table = table.drop_columns([DIGEST_COLUMN])
    return table.append_column(DIGEST_COLUMN, pa.array(table_digests(table), pa.string()))


def digest_of(digests: Iterable[str]) -> str:
    """One digest over a sequence of digests (a file's rows, a split's files), order kept."""
    h = hashlib.sha256()
    for digest in digests:
        h.update(digest.encode() + b"\n")
    return h.hexdigest()


def split_digest(file_digests: Mapping[str, str]) -> str:
    """A split's digest from its files' (base name → digest of its rows' digests)."""
    return digest_of(f"{name} {file_digests[name]}" for name in sorted(file_digests))


@dataclass
class RowCheck:
    """The rows of one table checked against their stored digests."""

    intact: list[bool]  # per row: stored digest present and equal to the recomputed one
    recomputed: list[str]  # per row: the digest of what the row holds now
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (row, image_id, reason)


def check_digests(table: pa.Table) -> RowCheck:
    """Recompute every row's digest and compare it with the stored one. A table without a
    `digest` column (prediction requests, made on the fly) has nothing to compare: all intact."""
    recomputed = table_digests(table)
    if DIGEST_COLUMN not in table.column_names:
        return RowCheck(intact=[True] * table.num_rows, recomputed=recomputed)
    stored = table.column(DIGEST_COLUMN).to_pylist()
    ids = (
        table.column("image_id").to_pylist()
        if "image_id" in table.column_names
        else [None] * table.num_rows
    )
    check = RowCheck(intact=[], recomputed=recomputed)
    for index, (want, have, image_id) in enumerate(zip(stored, recomputed, ids, strict=True)):
        ok = want == have
        check.intact.append(ok)
        if not ok:
            reason = "no digest stored" if want is None else "digest mismatch: its bytes changed"
            check.problems.append((index, str(image_id), reason))
    return check


class SplitDigest:
    """Accumulates a split's digest from the rows as they are read, file by file."""

    def __init__(self) -> None:
        self._files: dict[str, list[str]] = {}

    def add(self, file_name: str, digests: Iterable[str]) -> None:
        self._files.setdefault(file_name, []).extend(digests)

    def hexdigest(self) -> str:
        return split_digest({name: digest_of(rows) for name, rows in self._files.items()})


@dataclass
class VerifyReport:
    """What `verify_version` found: every problem names its file and, where there is one, its
    row and image id."""

    url: str
    rows: int = 0  # rows checked
    problems: list[str] = field(default_factory=list)  # one line each

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, limit: int = 50) -> str:
        head = (
            f"dataset {self.url}: {self.rows} rows checked, "
            f"{'no problem' if self.ok else f'{len(self.problems)} problem(s)'}"
        )
        lines = [head, *(f"  {p}" for p in self.problems[:limit])]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def verify_version(version: Any, *, decode: bool = False, batch_size: int = 64) -> VerifyReport:
    """Check every row of a published version (a `pipelines.storage.DatasetVersion`): its stored
    digest against its bytes (and, with `decode`, that every tile and the proxy decode), each
    split's row count and data digest against the manifest."""
    report = VerifyReport(url=version.url)
    recorded = version.manifest.data_digests or {}
    counts = version.manifest.counts
    for split in ("train", "val", "test"):
        files = version.files(split)
        if not files and not counts.get(split):
            continue
        observed, rows = SplitDigest(), 0
        for path in files:
            rows += _verify_file(version, path, observed, report, decode, batch_size)
        report.rows += rows
        if counts.get(split, 0) != rows:
            report.problems.append(
                f"split {split}: {rows} rows stored, the manifest says {counts.get(split, 0)}"
            )
        if split not in recorded:
            report.problems.append(f"split {split}: the manifest records no data digest")
        elif observed.hexdigest() != recorded[split]:
            report.problems.append(
                f"split {split}: its data digest differs from the manifest's (rows changed, "
                "added, removed or reordered, or files renamed)"
            )
    return report


def _verify_file(
    version: Any,
    path: str,
    observed: SplitDigest,
    report: VerifyReport,
    decode: bool,
    batch_size: int,
) -> int:
    """Check one Parquet file's rows; returns how many rows it holds."""
    import os

    import pyarrow.parquet as pq

    name = os.path.basename(path)
    where = "/".join(path.rstrip("/").split("/")[-2:])  # split=<s>/<file>
    rows = 0
    try:
        with version.fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            validate_schema(parquet.schema_arrow)
            for batch in parquet.iter_batches(
                batch_size=batch_size, columns=[*DIGEST_INPUTS, DIGEST_COLUMN]
            ):
                table = pa.Table.from_batches([batch])
                check = check_digests(table)
                observed.add(name, check.recomputed)
                for index, image_id, reason in check.problems:
                    report.problems.append(f"{where} row {rows + index} ({image_id}): {reason}")
                if decode:
                    for index, image_id, reason in _decode_problems(table, check):
                        report.problems.append(f"{where} row {rows + index} ({image_id}): {reason}")
                rows += table.num_rows
    except (OSError, SchemaError, pa.ArrowException) as exc:
        report.problems.append(f"{where}: unreadable after {rows} rows: {exc}")
    return rows


def _decode_problems(table: pa.Table, check: RowCheck) -> list[tuple[int, str, str]]:
    """Rows whose digest matched but whose tiles, level tiles or proxy fail to decode."""
    # Imported here: pipelines.region imports torch (~2 s), which a digest-only check (the
    # build's, `verify` without --decode) never needs.
    from pipelines.region import TiledImage

    out = []
    for index, row in enumerate(table.to_pylist()):
        if not check.intact[index]:
            continue  # already reported
        try:
            image = TiledImage.from_row(row)
            for tile in range(len(image.tiles)):
                image.decode_tile(tile)
            if image.level_factor:
                level = image.level_image()
                for tile in range(len(level.tiles)):
                    level.decode_tile(tile)
            decode_proxy(row["proxy"])
        except (CodecError, ValueError, OSError) as exc:
            out.append((index, str(row.get("image_id")), f"cannot decode: {exc}"))
    return out
