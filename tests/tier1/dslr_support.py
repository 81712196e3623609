"""The DSLR source's stages without Ray: `pipelines.dslr.local_records` (listing, hash,
duplicates), then `tile_files`. Shared by the dslr, export and ingest-property tests."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from pipelines.dslr import INPUT_SCHEMA, DslrConfig, local_records, tile_files


def run_stages(
    cfg: DslrConfig, *, tile_size: int = 64, tile_format: str = "jpeg"
) -> tuple[pa.Table, list[str], int]:
    """The staged rows and rejects, the class names, and how many inputs the listing found."""
    records, class_names, listed = local_records(cfg)
    staged = tile_files(
        pa.Table.from_pylist(records, schema=INPUT_SCHEMA),
        params=dataclasses.asdict(cfg),
        tile_size=tile_size,
        tile_format=tile_format,
    )
    return staged, class_names, listed
