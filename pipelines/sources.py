"""Registry of dataset sources and the generation stage that turns indices into rows.

A synthetic source is a pure generator ``(config, digits, rng) -> Sample``; the stage
``generate_rows`` maps a batch of global indices to schema-v1 rows (or rejects) with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.digits import DigitSet
from pipelines.schema import IMAGE_SCHEMA
from pipelines.synthetic import (
    ClutteredMnistConfig,
    GenerationError,
    MegapixelMnistConfig,
    Sample,
    cluttered_class_names,
    generate_cluttered,
    generate_megapixel,
    sample_rng,
)
from pipelines.tiling import REJECT_REASON, REJECT_REF, image_row, reject_row

# IMAGE_SCHEMA plus what the writer needs: the global index (file names) and reject fields.
STAGING_SCHEMA = (
    IMAGE_SCHEMA.append(pa.field("_index", pa.int64()))
    .append(pa.field(REJECT_REASON, pa.string()))
    .append(pa.field(REJECT_REF, pa.string()))
)


@dataclass(frozen=True)
class SyntheticSource:
    """How to configure, generate and name the classes of one synthetic source."""

    name: str
    config_cls: type
    generate: Callable[[Any, DigitSet, np.random.Generator], Sample]
    class_names: Callable[[Any], list[str]]
    # Chosen by measurement (BENCHMARKS.md): PNG tiles of upsampled digit canvases are ~10×
    # smaller than raw and decode in well under a millisecond per tile.
    tile_format: str = "png"


SYNTHETIC_SOURCES: dict[str, SyntheticSource] = {
    "cluttered_mnist": SyntheticSource(
        name="cluttered_mnist",
        config_cls=ClutteredMnistConfig,
        generate=generate_cluttered,
        class_names=lambda cfg: cluttered_class_names(cfg.task),
    ),
    "megapixel_mnist": SyntheticSource(
        name="megapixel_mnist",
        config_cls=MegapixelMnistConfig,
        generate=generate_megapixel,
        class_names=lambda cfg: [str(d) for d in range(10)],
    ),
}


def get_source(name: str) -> SyntheticSource:
    """The registered source ``name``; a ValueError lists the known ones."""
    if name not in SYNTHETIC_SOURCES:
        raise ValueError(f"unknown source {name!r}; use one of {sorted(SYNTHETIC_SOURCES)}")
    return SYNTHETIC_SOURCES[name]


def make_config(source: SyntheticSource, params: Mapping[str, Any]) -> Any:
    """Build the source's config from string or typed overrides, naming unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(source.config_cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for source {source.name!r}; known: {sorted(fields)}"
        )
    typed = {k: _coerce(v, fields[k].type, k) for k, v in params.items()}
    return source.config_cls(**typed)


def _parse_bool(value: str) -> bool:
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(value)
    return value.lower() in ("1", "true", "yes")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": _parse_bool,
}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Parse a command-line string to the field's declared type."""
    if not isinstance(value, str):
        return value
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    # Optional fields (``int | None``): "none" selects the default behaviour the None stands for.
    base, optional = name.removesuffix(" | None"), name.endswith(" | None")
    if optional and value.lower() in ("none", ""):
        return None
    name = base
    parser = _PARSERS.get(name, str)
    try:
        return parser(value)
    except ValueError:
        raise ValueError(f"parameter {key}={value!r} is not a valid {name}") from None


def split_of(index: int, counts: Mapping[str, int]) -> tuple[str, int]:
    """Map a global index to (split, index within the split); splits in ``counts`` order."""
    for split, count in counts.items():
        if index < count:
            return split, index
        index -= count
    raise IndexError("index past the last split")


def generate_rows(
    batch: dict[str, np.ndarray],
    *,
    source: str,
    params: dict[str, Any],
    pools: dict[str, DigitSet],
    seed: int,
    counts: dict[str, int],
    tile_size: int,
    tile_format: str,
) -> pa.Table:
    """Stage: global indices (``batch["id"]``) → staging rows (schema-v1 rows or rejects)."""
    spec = get_source(source)
    config = make_config(spec, params)
    names = spec.class_names(config)
    rows = []
    for index in batch["id"].tolist():
        split, local = split_of(int(index), counts)
        image_id = f"{source}-s{seed}-{split}-{local:07d}"
        try:
            sample = spec.generate(config, pools[split], sample_rng(seed, split, local))
            row = image_row(
                image_id=image_id,
                split=split,
                source=source,
                label=sample.label,
                label_name=names[sample.label],
                image=sample.image,
                proxy=sample.proxy,
                boxes=sample.boxes,
                meta={**sample.meta, "seed": seed, "index": local},
                tile_size=tile_size,
                tile_format=tile_format,
            )
        except GenerationError as exc:
            ref = json.dumps({"seed": seed, "split": split, "index": local})
            row = reject_row(
                image_id=image_id, split=split, source=source, ref=ref, reason=str(exc)
            )
        rows.append({**row, "_index": int(index)})
    columns = {f.name: [r.get(f.name) for r in rows] for f in STAGING_SCHEMA}
    return pa.Table.from_pydict(columns, schema=STAGING_SCHEMA)


def digits_fingerprint(digits: DigitSet) -> str:
    """Content hash of a digit set: part of a dataset's input hash."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(digits.images).tobytes())
    h.update(np.ascontiguousarray(digits.labels).astype(np.int64).tobytes())
    return h.hexdigest()
