"""Tier 1: the schema-v2 contract is enforced and rows produced by the stages follow it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.digits import load_digits, split_digits
from pipelines.region import TiledImage, read_region
from pipelines.schema import (
    IMAGE_SCHEMA,
    SCHEMA_VERSION_KEY,
    SchemaError,
    rows_to_table,
    schema_version,
    validate_schema,
)
from pipelines.sources import STAGING_SCHEMA, generate_rows
from pipelines.tiling import decode_proxy, image_row


def _row() -> dict:
    image = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30, 1)
    return image_row(
        image_id="x-0",
        split="train",
        source="test",
        label=1,
        label_name="one",
        image=image,
        proxy=image[::4, ::4],
        boxes=[(0.1, 0.2, 0.3, 0.4, 1)],
        meta={"k": 1},
        tile_size=16,
        tile_format="png",
    )


def test_image_schema_carries_its_version() -> None:
    assert schema_version(IMAGE_SCHEMA) == 3
    validate_schema(IMAGE_SCHEMA)


def test_missing_version_is_refused() -> None:
    with pytest.raises(SchemaError, match="schema version None is not supported"):
        validate_schema(IMAGE_SCHEMA.remove_metadata())


@pytest.mark.parametrize("old", [b"1", b"2"])
def test_other_version_is_refused(old: bytes) -> None:
    # version 1 had no pooled level, version 2 no row digest: such datasets must be rebuilt,
    # not half read
    with pytest.raises(
        SchemaError, match=rf"schema version {old.decode()} is not supported.*rebuild"
    ):
        validate_schema(IMAGE_SCHEMA.with_metadata({SCHEMA_VERSION_KEY: old}))


def test_missing_column_is_named() -> None:
    schema = IMAGE_SCHEMA.remove(IMAGE_SCHEMA.get_field_index("proxy"))
    with pytest.raises(SchemaError, match="column 'proxy' is missing"):
        validate_schema(schema)


def test_wrong_type_is_named() -> None:
    index = IMAGE_SCHEMA.get_field_index("label")
    schema = IMAGE_SCHEMA.set(index, pa.field("label", pa.string()))
    with pytest.raises(SchemaError, match="column 'label' has type string, expected int32"):
        validate_schema(schema)


def test_row_round_trips_through_a_table() -> None:
    table = rows_to_table([_row()])
    validate_schema(table.schema)
    row = table.to_pylist()[0]
    tiled = TiledImage.from_row(row)
    expected = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30, 1)
    assert np.array_equal(read_region(tiled, (0, 0, 40, 30)), expected)
    assert row["level_factor"] == 8 and tiled.level_image().height == 5  # ceil(40 / 8)
    assert decode_proxy(row["proxy"]).shape == (10, 8, 1)
    assert row["boxes"][0]["cls"] == 1
    assert row["boxes"][0]["x0"] == pytest.approx(0.1)


def test_generate_rows_stage_on_a_literal_batch() -> None:
    pools = split_digits(load_digits(), seed=0)
    counts = {"train": 2, "test": 1}
    table = generate_rows(
        {"id": np.arange(3)},
        source="cluttered_mnist",
        params={"original_size": 128},
        pools=pools,
        seed=0,
        counts=counts,
        tile_size=64,
        tile_format="png",
    )
    assert table.schema.equals(STAGING_SCHEMA)
    assert table.column("split").to_pylist() == ["train", "train", "test"]
    assert table.column("reject_reason").to_pylist() == [None] * 3
    validate_schema(table.select(IMAGE_SCHEMA.names).cast(IMAGE_SCHEMA).schema)
    again = generate_rows(
        {"id": np.arange(3)},
        source="cluttered_mnist",
        params={"original_size": 128},
        pools=pools,
        seed=0,
        counts=counts,
        tile_size=64,
        tile_format="png",
    )
    assert again.equals(table)  # deterministic by (seed, split, index)


def test_impossible_sample_becomes_a_reject_row() -> None:
    """A canvas where the digits cannot be placed is a reject with a reason, not a crash."""
    pools = split_digits(load_digits(), seed=0)
    table = generate_rows(
        {"id": np.arange(2)},
        source="cluttered_mnist",
        params={"canvas_size": 56, "original_size": 56, "max_place_tries": 1, "clutter": 0},
        pools=pools,
        seed=0,
        counts={"train": 2},
        tile_size=64,
        tile_format="png",
    )
    reasons = table.column("reject_reason").to_pylist()
    rejected = [r for r in reasons if r is not None]
    assert rejected, "placing two 28 px digits on a 56 px canvas in one try should fail"
    assert all("no room for digit" in r for r in rejected)
