"""A complete `Manifest` for tests that publish versions by hand (the build writes real ones)."""

from __future__ import annotations

from typing import Any

from pipelines.schema import SCHEMA_VERSION, Manifest


def manifest(**fields: Any) -> Manifest:
    """A manifest of a small generated version; `fields` replace the defaults."""
    values: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "version": "v0001",
        "source": "cluttered_mnist",
        "class_names": [str(i) for i in range(10)],
        "counts": {"train": 2, "test": 1},
        "rejects": 0,
        "bytes": 0,
        "tile_size": 256,
        "tile_format": "png",
        "seed": 0,
        "params": {},
        "inputs": {},
        "input_hash": "0" * 64,
        "created_at": "2026-01-01T00:00:00+00:00",
        "build_seconds": 0.0,
    }
    return Manifest(**{**values, **fields})
