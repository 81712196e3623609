"""The Parquet contract between pipelines and training: schema version 3.

One row per image; the image is stored as encoded row-major tiles plus an encoded proxy. Version 2
added a pooled level of the original (``level_factor``, ``level_tiles``: the image area-pooled by
a power of two, raw tiles of the same tile size; ``pipelines.pyramid``), from which the model reads
its large glimpses. Version 3 adds ``digest``, the SHA-256 of what the row stores
(``pipelines.integrity``), checked whenever the row is read. Datasets of earlier versions must be
rebuilt. The schema version travels in the Parquet
schema metadata under ``saccade.schema_version`` so that a reader can refuse data it does not
understand before touching a row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 3
SCHEMA_VERSION_KEY = b"saccade.schema_version"
SPLITS = ("train", "val", "test")

BOX_TYPE = pa.struct(
    [
        ("x0", pa.float32()),
        ("y0", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("cls", pa.int32()),
    ]
)

IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("channels", pa.int32()),
        ("tile_size", pa.int32()),
        ("tile_format", pa.string()),
        ("tiles", pa.list_(pa.binary())),
        ("level_factor", pa.int32()),  # the stored level's pooling factor; 0: none stored
        ("level_tiles", pa.list_(pa.binary())),  # its raw tiles, row-major, tile_size each
        ("proxy", pa.binary()),
        ("proxy_height", pa.int32()),
        ("proxy_width", pa.int32()),
        ("boxes", pa.list_(BOX_TYPE)),
        ("meta", pa.string()),
        ("digest", pa.string()),  # hex SHA-256 of the row's stored bytes (pipelines.integrity)
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)

# Records that could not be used: counted, never silently dropped.
REJECT_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("ref", pa.string()),  # source path or generator parameters (JSON)
        ("reason", pa.string()),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


class SchemaError(ValueError):
    """Data does not follow the saccade Parquet contract."""


def schema_version(schema: pa.Schema) -> int | None:
    """The contract version recorded in a schema's metadata, or None when absent."""
    raw = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    return int(raw) if raw is not None else None


def validate_schema(schema: pa.Schema, *, expected: pa.Schema = IMAGE_SCHEMA) -> None:
    """Raise SchemaError naming the first problem: version, missing column or wrong type."""
    version = schema_version(schema)
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"schema version {version} is not supported (this code reads version "
            f"{SCHEMA_VERSION}); rebuild the dataset with this version of the pipelines"
        )
    for field in expected:
        if field.name not in schema.names:
            raise SchemaError(f"column {field.name!r} is missing")
        actual = schema.field(field.name).type
        if actual != field.type:
            raise SchemaError(f"column {field.name!r} has type {actual}, expected {field.type}")


def empty_table(schema: pa.Schema = IMAGE_SCHEMA) -> pa.Table:
    """A zero-row table of ``schema`` (keeps the metadata)."""
    return schema.empty_table()


def rows_to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema = IMAGE_SCHEMA) -> pa.Table:
    """Build a table of ``schema`` from row dicts; ``meta`` dicts are serialised to JSON."""
    columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
    if "meta" in columns:
        columns["meta"] = [
            m if isinstance(m, str) or m is None else json.dumps(m, sort_keys=True)
            for m in columns["meta"]
        ]
    return pa.Table.from_pydict(columns, schema=schema)
