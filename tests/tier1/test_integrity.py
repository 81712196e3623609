"""Tier 1: per-row digests written at build time, the version's data digest, `jobs.verify`, and
corrupt rows skipped and counted (never fatal) when training and evaluation read them."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from manifest_support import manifest

from jobs.core.data import run_on_intact_rows
from jobs.core.evaluation import evaluate_tables
from jobs.training.recipes import make_recipe
from model.step import train_step
from model.variants import create_model
from pipelines.build import _data_digests, write_shard
from pipelines.digits import load_digits, split_digits
from pipelines.integrity import (
    SplitDigest,
    check_digests,
    row_digest,
    verify_version,
    with_digests,
)
from pipelines.schema import IMAGE_SCHEMA
from pipelines.sources import generate_rows
from pipelines.storage import DatasetVersion, Staging

BAD = b"not an encoded tile"


@functools.cache
def _staging_rows(n: int, split: str = "train") -> pa.Table:
    """Rows as the generated source's stage emits them (made once per size: a busy machine
    takes seconds to draw them)."""
    return generate_rows(
        {"id": np.arange(n)},
        source="cluttered_mnist",
        params={"original_size": 128},
        pools=split_digits(load_digits(), seed=0),
        seed=0,
        counts={split: n},
        tile_size=64,
        tile_format="png",
    )


def _rows(n: int, split: str = "train") -> pa.Table:
    return with_digests(_staging_rows(n, split)).select(IMAGE_SCHEMA.names).cast(IMAGE_SCHEMA)


pytestmark = pytest.mark.usefixtures("one_thread")


def _replace(table: pa.Table, index: int, **columns: object) -> pa.Table:
    """`table` with row `index`'s columns replaced; the stored digest is left as it was."""
    rows = table.to_pylist()
    rows[index].update(columns)
    return pa.Table.from_pylist(rows, schema=table.schema)


def _broken_tiles(table: pa.Table, index: int) -> dict[str, list[bytes]]:
    row = table.to_pylist()[index]
    return {"tiles": [BAD] * len(row["tiles"]), "level_tiles": [BAD] * len(row["level_tiles"])}


def test_digest_covers_the_stored_bytes_and_what_the_row_claims() -> None:
    row = _rows(4).slice(0, 1).to_pylist()[0]
    assert row["digest"] == row_digest(row)
    tile = bytearray(row["tiles"][0])
    tile[len(tile) // 2] ^= 1
    for change in (
        {"tiles": [bytes(tile), *row["tiles"][1:]]},
        {"level_tiles": row["level_tiles"][:-1]},
        {"proxy": row["proxy"] + b"\0"},
        {"label": row["label"] + 1},
        {"height": row["height"] - 1},
    ):
        assert row_digest({**row, **change}) != row["digest"], change
    # parts are length-prefixed: moving a byte from one tile to the next changes the digest
    a = {**row, "tiles": [b"ab", b"c"]}
    assert row_digest(a) != row_digest({**row, "tiles": [b"a", b"bc"]})


def test_check_digests_names_changed_and_missing_digests() -> None:
    table = _replace(_replace(_rows(4).slice(0, 3), 1, proxy=b"x"), 2, digest=None)
    check = check_digests(table)
    assert check.intact == [True, False, False]
    ids = table.column("image_id").to_pylist()
    assert check.problems == [
        (1, ids[1], "digest mismatch: its bytes changed"),
        (2, ids[2], "no digest stored"),
    ]
    # prediction requests carry no digest: nothing to compare, every row is usable
    assert check_digests(table.drop_columns(["digest"])).intact == [True] * 3


def test_write_shard_stamps_every_row_and_the_file_digest(tmp_path: Path) -> None:
    staging = _staging_rows(4).slice(0, 3)
    assert set(staging.column("digest").to_pylist()) == {None}  # sources leave it to the writer
    summary = write_shard(staging, staging_url=str(tmp_path)).to_pylist()
    written = pq.read_table(tmp_path / "split=train" / summary[0]["file"])
    assert written.column("digest").to_pylist() == [row_digest(r) for r in written.to_pylist()]
    digests = _data_digests(summary)
    observed = SplitDigest()
    observed.add(summary[0]["file"], written.column("digest").to_pylist())
    assert digests == {"train": observed.hexdigest()}


def _publish(root: Path, tables: dict[str, pa.Table]) -> str:
    """A version written by the build's own writer, with the manifest's counts and digests."""
    staging = Staging.create(str(root), "v0001")
    summary = []
    for index, table in enumerate(tables.values()):
        table = table.append_column("_index", pa.array([index * 100] * table.num_rows, pa.int64()))
        summary += write_shard(table, staging_url=staging.path).to_pylist()
    staging.publish(
        manifest(
            class_names=[str(i) for i in range(55)],
            counts={s: t.num_rows for s, t in tables.items()},
            data_digests=_data_digests(summary),
        )
    )
    return str(root / "v0001")


def _staging_of(table: pa.Table) -> pa.Table:
    """Rows as a source stage emits them (reject columns empty)."""
    n = table.num_rows
    return table.append_column("reject_reason", pa.nulls(n, pa.string())).append_column(
        "reject_ref", pa.nulls(n, pa.string())
    )


def _rewrite(path: str, change: dict[int, dict]) -> None:
    """Corrupt rows of a stored file in place, as a bad disk or a bad copy would."""
    table = pq.read_table(path)
    for index, columns in change.items():
        table = _replace(table, index, **columns)
    pq.write_table(table.replace_schema_metadata(IMAGE_SCHEMA.metadata), path)


def test_verify_passes_an_intact_version_and_lists_corrupt_rows(tmp_path: Path) -> None:
    from jobs import verify
    from jobs.common import run_main

    url = _publish(tmp_path, {"train": _staging_of(_rows(4)), "val": _staging_of(_rows(2, "val"))})
    version = DatasetVersion.open(url)
    report = verify_version(version)
    assert report.ok and report.rows == 6, report.format()
    before = version.manifest.sha256()

    path = version.files("train")[0]
    stored = pq.read_table(path)
    _rewrite(path, {1: _broken_tiles(stored, 1), 3: {"proxy": b"\0"}})
    report = verify_version(DatasetVersion.open(url))
    ids = stored.column("image_id").to_pylist()
    assert not report.ok
    assert report.problems[:2] == [
        f"split=train/part-00000000.parquet row 1 ({ids[1]}): digest mismatch: its bytes changed",
        f"split=train/part-00000000.parquet row 3 ({ids[3]}): digest mismatch: its bytes changed",
    ]
    assert "split train: its data digest differs" in report.problems[2]
    assert len(report.problems) == 3  # the val split is intact
    # the corrupted copy's manifest is the original's; the data it holds tells them apart
    copy = DatasetVersion.open(url)
    assert copy.manifest.sha256() == before
    observed = SplitDigest()
    observed.add(os.path.basename(path), check_digests(pq.read_table(path)).recomputed)
    seen = copy.manifest.with_digests({"train": observed.hexdigest()})
    assert seen.sha256() != before

    with pytest.raises(SystemExit) as exit_info:
        run_main(verify.main, ["--dataset", url])
    assert exit_info.value.code == 1


def test_verify_counts_rows_and_decodes_on_request(tmp_path: Path) -> None:
    url = _publish(tmp_path, {"train": _staging_of(_rows(4).slice(0, 3))})
    path = DatasetVersion.open(url).files("train")[0]
    stored = pq.read_table(path)
    # bad tiles with a matching digest (written broken): only decoding finds them
    _rewrite(path, {0: {**_broken_tiles(stored, 0)}})
    rewritten = with_digests(pq.read_table(path).drop_columns(["digest"]))
    pq.write_table(rewritten.replace_schema_metadata(IMAGE_SCHEMA.metadata), path)
    version = DatasetVersion.open(url)
    assert not any("row 0" in p for p in verify_version(version).problems)
    decoded = verify_version(version, decode=True).problems
    assert any("row 0" in p and "cannot decode" in p for p in decoded), decoded
    # a manifest that counts rows the version does not hold
    manifest_path = Path(url) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["counts"]["train"] = 5
    manifest_path.write_text(json.dumps(manifest))
    problems = verify_version(DatasetVersion.open(url)).problems
    assert "split train: 3 rows stored, the manifest says 5" in problems


def _read_all(batch) -> int:
    regions = batch.reader.read_regions_numpy(
        np.asarray([[0, 0, h, w] for h, w in batch.reader.image_sizes()])
    )
    return len(regions)


def test_corrupt_rows_are_skipped_and_counted_not_fatal() -> None:
    table = _rows(4)
    ids = table.column("image_id").to_pylist()
    # row 1: bytes changed after the digest (caught before any decode); row 2: tiles that fail
    # to decode when read although the digest matches (caught by the reader)
    table = _replace(table, 1, **_broken_tiles(table, 1))
    table = with_digests(_replace(table, 2, **_broken_tiles(table, 2)))
    table = _replace(table, 1, digest=_rows(4).column("digest")[1].as_py())
    done = run_on_intact_rows(table, _read_all)
    assert done.result == 2 and done.rows == 2
    assert [image_id for image_id, _ in done.skipped] == [ids[1], ids[2]]
    assert done.skipped[0][1] == "digest mismatch: its bytes changed"
    assert done.skipped[1][1].startswith("cannot decode: image 1 of the batch: tile")
    # every row corrupt: no step, every row counted
    all_bad = _replace(_rows(4).slice(0, 1), 0, proxy=b"x")
    nothing = run_on_intact_rows(all_bad, _read_all)
    assert (nothing.result, nothing.rows, len(nothing.skipped)) == (None, 0, 1)


def test_a_training_step_and_an_evaluation_go_on_past_corrupt_rows() -> None:
    torch.manual_seed(0)
    table = _rows(4)
    table = with_digests(_replace(table, 0, **_broken_tiles(table, 0)))  # fails when read
    table = _replace(table, 3, proxy=b"\x89PNG broken")  # digest mismatch
    model = create_model("saccader_test", num_classes=55, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = make_recipe("tiny_cpu", "d", {}).objective
    done = run_on_intact_rows(table, lambda b: train_step(model, b, optimizer, objective))
    assert done.rows == 2 and len(done.skipped) == 2
    assert np.isfinite(done.result["total"])
    result = evaluate_tables(model, [(table, None), (_rows(4).slice(0, 2), None)], 55)
    assert result.images == 4
    assert result.metrics("test")["test/corrupt_rows"] == 2.0
