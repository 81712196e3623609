"""The DSLR source's stages without Ray, composed as `pipelines.build` composes them on Ray Data:
listing → hash → duplicates → tiles. Shared by the dslr, export and ingest-property tests."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from pipelines.dslr import (
    INPUT_SCHEMA,
    DslrConfig,
    hash_candidates,
    hash_files,
    list_photos,
    mark_duplicates,
    tile_files,
)


def run_stages(
    cfg: DslrConfig, *, tile_size: int = 64, tile_format: str = "jpeg"
) -> tuple[pa.Table, list[str], int]:
    """The staged rows and rejects, the class names, and how many inputs the listing found."""
    items, class_names = list_photos(cfg)
    to_hash, rest = hash_candidates(items)
    hashed = hash_files(pa.Table.from_pylist(to_hash, schema=INPUT_SCHEMA)).to_pylist()
    records = mark_duplicates(rest + hashed)
    staged = tile_files(
        pa.Table.from_pylist(records, schema=INPUT_SCHEMA),
        params=dataclasses.asdict(cfg),
        tile_size=tile_size,
        tile_format=tile_format,
    )
    return staged, class_names, len(items)
