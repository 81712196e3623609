"""Tier 1: versions are published atomically, read back validated, and bad outputs are refused."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from manifest_support import manifest

from pipelines.build import BuildConfig, preflight, write_shard
from pipelines.digits import load_digits, split_digits
from pipelines.schema import ManifestError, SchemaError
from pipelines.sources import generate_rows
from pipelines.storage import (
    STALE_STAGING_S,
    DatasetVersion,
    Staging,
    StorageError,
    filesystem,
    list_versions,
    next_version,
    read_latest,
    url_scheme,
    with_scheme,
)


def _rows(counts: dict[str, int], tile_format: str = "png", **params):
    """Staging rows of small cluttered-MNIST images, as the pipeline's stage makes them."""
    return generate_rows(
        {"id": np.arange(sum(counts.values()))},
        source="cluttered_mnist",
        params={"original_size": 128, **params},
        pools=split_digits(load_digits(), seed=0),
        seed=0,
        counts=counts,
        tile_size=64,
        tile_format=tile_format,
    )


def _stage_rows(staging: Staging, n: int, **params) -> None:
    write_shard(_rows({"train": n - 1, "test": 1}, **params), staging_url=staging.path)


def test_unpublished_version_is_invisible_until_the_manifest(tmp_path: Path) -> None:
    staging = Staging.create(str(tmp_path), "v0001")
    _stage_rows(staging, 3)
    assert list_versions(str(tmp_path)) == []
    with pytest.raises(StorageError, match="no published dataset version"):
        DatasetVersion.open(str(tmp_path / "v0001"))
    staging.publish(manifest())
    assert list_versions(str(tmp_path)) == ["v0001"]
    assert next_version(str(tmp_path)) == "v0002"
    version = DatasetVersion.open(str(tmp_path / "v0001"))
    assert version.read("train").num_rows == 2
    assert version.read("test", columns=["label"]).num_rows == 1
    assert version.read("val").num_rows == 0
    assert version.read_rejects().num_rows == 0
    assert not any((tmp_path / "_staging").iterdir())


def test_rejects_are_written_beside_the_rows(tmp_path: Path) -> None:
    staging = Staging.create(str(tmp_path), "v0001")
    _stage_rows(staging, 3, canvas_size=56, original_size=56, max_place_tries=1, clutter=0)
    staging.publish(manifest())
    version = DatasetVersion.open(str(tmp_path / "v0001"))
    rejects = version.read_rejects()
    assert rejects.num_rows + version.read("train").num_rows + version.read("test").num_rows == 3
    assert rejects.num_rows > 0
    assert "no room for digit" in rejects.column("reason")[0].as_py()
    assert json.loads(rejects.column("ref")[0].as_py())["seed"] == 0


def test_existing_version_is_refused(tmp_path: Path) -> None:
    Staging.create(str(tmp_path), "v0001").publish(manifest())
    with pytest.raises(StorageError, match=r"v0001 already exists \(published\)"):
        Staging.create(str(tmp_path), "v0001")


def test_incomplete_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v0003").mkdir()
    with pytest.raises(StorageError, match=r"incomplete \(no manifest\)"):
        Staging.create(str(tmp_path), "v0003")


def test_unwritable_root_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot write under"):
        Staging.create(str(blocker / "datasets"), "v0001")


@pytest.mark.parametrize("name", ["", "../up", "_staging", "a/b", "-x"])
def test_bad_version_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(StorageError, match="invalid version name"):
        Staging.create(str(tmp_path), name)


def test_discard_removes_the_staging_copy(tmp_path: Path) -> None:
    staging = Staging.create(str(tmp_path), "v0001")
    _stage_rows(staging, 2)
    staging.discard()
    assert not Path(staging.path).exists()
    assert list_versions(str(tmp_path)) == []


def test_manifest_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    Staging.create(str(tmp_path), "v0001").publish(manifest(schema_version=99))
    with pytest.raises(SchemaError, match="schema version 99"):
        DatasetVersion.open(str(tmp_path / "v0001"))


def test_unknown_split_is_named(tmp_path: Path) -> None:
    Staging.create(str(tmp_path), "v0001").publish(manifest())
    with pytest.raises(ValueError, match="unknown split 'training'"):
        DatasetVersion.open(str(tmp_path / "v0001")).files("training")


@pytest.mark.parametrize(("tile_format", "tiles_codec"), [("png", "UNCOMPRESSED"), ("raw", "ZSTD")])
def test_column_codecs_reach_the_list_columns(
    tmp_path: Path, tile_format: str, tiles_codec: str
) -> None:
    """Encoded tiles stay uncompressed; raw tiles and the raw level are zstd (pyarrow needs the
    list columns' leaf paths for that: a bare name is silently ignored)."""
    import fsspec
    import pyarrow.parquet as pq

    from pipelines.storage import write_parquet

    table = _rows({"train": 2}, tile_format)
    path = str(tmp_path / "part.parquet")
    write_parquet(
        fsspec.filesystem("file"), path, table.drop_columns(["reject_reason", "reject_ref"])
    )
    group = pq.ParquetFile(path).metadata.row_group(0)
    codecs = {
        group.column(i).path_in_schema: group.column(i).compression
        for i in range(group.num_columns)
    }
    assert codecs["tiles.list.element"] == tiles_codec
    assert codecs["level_tiles.list.element"] == "ZSTD"
    assert codecs["proxy"] == "UNCOMPRESSED" and codecs["label"] == "ZSTD"


def test_an_interrupted_publish_is_skipped_by_the_next_default_build(tmp_path: Path) -> None:
    Staging.create(str(tmp_path), "v0001").publish(manifest())
    (tmp_path / "v0002" / "split=train").mkdir(parents=True)  # files moved, no manifest yet
    assert list_versions(str(tmp_path)) == ["v0001"]
    assert next_version(str(tmp_path)) == "v0003"
    preflight(BuildConfig(source="cluttered_mnist", out=str(tmp_path)))  # a default build


def test_the_staging_of_a_killed_build_is_removed_by_the_next_build(tmp_path: Path) -> None:
    dead = tmp_path / "_staging" / "v0001-dead0000"
    live = tmp_path / "_staging" / "v0001-live0000"  # a build running now
    for folder in (dead, live):
        (folder / "split=train").mkdir(parents=True)
        (folder / "split=train" / "part-00000000.parquet").write_bytes(b"rows")
    stale = time.time() - STALE_STAGING_S - 60
    for path in (dead, dead / "split=train", dead / "split=train" / "part-00000000.parquet"):
        os.utime(path, (stale, stale))
    staging = Staging.create(str(tmp_path), "v0001")
    left = sorted(p.name for p in (tmp_path / "_staging").iterdir())
    assert left == sorted([live.name, Path(staging.path).name])


@pytest.mark.parametrize("content", [b'{"schema_version": 3, "cou', b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_manifest_is_named(tmp_path: Path, content: bytes) -> None:
    Staging.create(str(tmp_path), "v0001").publish(manifest())
    (tmp_path / "v0001" / "manifest.json").write_bytes(content)
    path = str(tmp_path / "v0001" / "manifest.json")
    with pytest.raises(StorageError, match=f"{path} is not"):
        DatasetVersion.open(str(tmp_path / "v0001"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("counts"), "has no 'counts'"),
        (lambda m: m.update(counts=[3, 1]), "'counts' is a list, expected dict"),
        (lambda m: m.update(num_classes=4), "num_classes 4 but 10 class names"),
    ],
)
def test_a_manifest_without_a_field_or_of_the_wrong_kind_is_named(
    tmp_path: Path, change, message: str
) -> None:
    Staging.create(str(tmp_path), "v0001").publish(manifest())
    path = tmp_path / "v0001" / "manifest.json"
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))
    with pytest.raises(ManifestError, match=re.escape(message)):
        DatasetVersion.open(str(tmp_path / "v0001"))


def test_a_manifest_reads_back_as_written_so_its_hash_is_stable(tmp_path: Path) -> None:
    """Fields this code does not know survive a round trip; the derived ones are checked."""
    written = manifest(class_parts=[[1], [2]], data_digests={"train": "ab"}, extra={"later": 1})
    Staging.create(str(tmp_path), "v0001").publish(written)
    stored = json.loads((tmp_path / "v0001" / "manifest.json").read_text())
    assert stored["num_classes"] == 10 and stored["later"] == 1 and "label_kind" not in stored
    read = DatasetVersion.open(str(tmp_path / "v0001")).manifest
    assert read == written and read.to_json() == stored
    assert read.sha256() == written.sha256()


def test_a_damaged_latest_pointer_is_named(tmp_path: Path) -> None:
    (tmp_path / "latest.json").write_text('{"version": ')
    with pytest.raises(StorageError, match=f"{tmp_path}/latest.json is not valid JSON"):
        read_latest(str(tmp_path))


def test_a_truncated_shard_is_named(tmp_path: Path) -> None:
    from jobs.core.data import open_dataset

    staging = Staging.create(str(tmp_path), "v0001")
    _stage_rows(staging, 3)
    staging.publish(manifest())
    version = DatasetVersion.open(str(tmp_path / "v0001"))
    shard = Path(version.files("train")[0])
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # an interrupted copy
    for read in (lambda: version.read("train"), lambda: open_dataset(version.url)):
        with pytest.raises(StorageError, match=f"shard {shard} is not a readable Parquet file"):
            read()


def test_a_url_names_its_store_and_a_resolved_path_goes_back_to_it(tmp_path: Path) -> None:
    """One reading of "local or object store" for every caller: a resolved path given back in
    the URL's form, as Ray's readers and workers re-resolve it."""
    assert url_scheme("s3://bucket/cm/v0001") == "s3" and url_scheme("data/cm") is None
    assert with_scheme("s3://bucket/cm", "bucket/cm/v0001") == "s3://bucket/cm/v0001"
    _, path = filesystem(str(tmp_path / "cm"))
    assert with_scheme(str(tmp_path / "cm"), path) == path == str(tmp_path / "cm")
