"""Registry of dataset sources and the generation stage that turns indices into rows.

Two kinds of source:
- **generated** (``SyntheticSource``): a pure generator ``(config, digits, rng) -> Sample`` for the
  MNIST-based sources, or ``(config, rng) -> Sample`` for those that need no digits
  (``uses_digits=False``: street signs, the StarCraft II battle simulator). The stage
  ``generate_rows`` maps a batch of global indices to schema-v2 rows (or rejects) with it.
- **file-based** (``FileSource``): inputs listed from a folder or bucket (photos, replays); their
  stages live beside their readers (``pipelines.dslr``, ``pipelines.sc2.replays``) and
  ``pipelines.build`` composes them.
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
from pipelines.dslr import DslrConfig, plan_photos
from pipelines.sc2.replays import Sc2ReplayConfig, plan_replays
from pipelines.sc2.simulator import Sc2SimConfig, generate_sc2_sim, sim_class_names
from pipelines.schema import CLASS_LABEL, COUNT_LABEL
from pipelines.staging import STAGING_SCHEMA as STAGING_SCHEMA  # re-exported: it lived here
from pipelines.staging import StagingPlan, staging_table
from pipelines.street_signs import (
    StreetSignsConfig,
    generate_street_sign,
    street_sign_class_names,
)
from pipelines.synthetic import (
    ClutteredMnistConfig,
    GenerationError,
    MegapixelMnistConfig,
    Sample,
    cluttered_class_names,
    cluttered_part_classes,
    generate_cluttered,
    generate_megapixel,
    sample_rng,
)
from pipelines.tiling import image_row, reject_row


@dataclass(frozen=True)
class SyntheticSource:
    """How to configure, generate and name the classes of one generated source."""

    name: str
    config_cls: type
    # (config, digits, rng) -> Sample, or (config, rng) -> Sample when uses_digits is False.
    generate: Callable[..., Sample]
    class_names: Callable[[Any], list[str]]
    # Chosen by measurement (BENCHMARKS.md): PNG tiles of upsampled digit canvases are ~10×
    # smaller than raw and decode in well under a millisecond per tile.
    tile_format: str = "png"
    uses_digits: bool = True  # whether generate takes the split's MNIST digit pool
    # Per class, the object classes one glimpse may show (a pair's digits); () when none apply.
    class_parts: Callable[[Any], tuple[tuple[int, ...], ...]] = lambda cfg: ()
    label_kind: str = CLASS_LABEL  # the manifest's ``label_kind`` (see LABEL_KINDS)

    def sample(self, config: Any, digits: DigitSet | None, rng: np.random.Generator) -> Sample:
        """One sample, passing the digit pool only to generators that take one."""
        if self.uses_digits:
            return self.generate(config, digits, rng)
        return self.generate(config, rng)


@dataclass(frozen=True)
class FileSource:
    """A source whose inputs are files listed from ``config.input``. Its `plan` turns them into
    staging rows (its listing, Ray stages and input description); pipelines.build runs it."""

    name: str
    config_cls: type
    tile_format: str
    # (BuildConfig, source config, tile format, say) -> pipelines.staging.StagingPlan
    plan: Callable[..., StagingPlan]
    label_kind: str = CLASS_LABEL  # the manifest's ``label_kind`` (see LABEL_KINDS)


SYNTHETIC_SOURCES: dict[str, SyntheticSource] = {
    "cluttered_mnist": SyntheticSource(
        name="cluttered_mnist",
        config_cls=ClutteredMnistConfig,
        generate=generate_cluttered,
        class_names=lambda cfg: cluttered_class_names(cfg.task),
        class_parts=lambda cfg: cluttered_part_classes(cfg.task),
    ),
    "megapixel_mnist": SyntheticSource(
        name="megapixel_mnist",
        config_cls=MegapixelMnistConfig,
        generate=generate_megapixel,
        class_names=lambda cfg: [str(d) for d in range(10)],
    ),
    # Camera-like scenes: JPEG tiles, as for real photos (BENCHMARKS.md, "DSLR ingest").
    "street_signs": SyntheticSource(
        name="street_signs",
        config_cls=StreetSignsConfig,
        generate=generate_street_sign,
        class_names=lambda cfg: street_sign_class_names(),
        tile_format="jpeg",
        uses_digits=False,
    ),
    # Flat terrain and crisp sprites: PNG tiles are smaller than JPEG q90 and lossless.
    "sc2_sim": SyntheticSource(
        name="sc2_sim",
        config_cls=Sc2SimConfig,
        generate=generate_sc2_sim,
        class_names=lambda cfg: sim_class_names(),
        uses_digits=False,
        label_kind=COUNT_LABEL,
    ),
}

FILE_SOURCES: dict[str, FileSource] = {
    "dslr": FileSource(name="dslr", config_cls=DslrConfig, tile_format="jpeg", plan=plan_photos),
    "sc2_replays": FileSource(
        name="sc2_replays",
        config_cls=Sc2ReplayConfig,
        tile_format="png",
        plan=plan_replays,
        label_kind=COUNT_LABEL,
    ),
}

SOURCES: dict[str, SyntheticSource | FileSource] = {**SYNTHETIC_SOURCES, **FILE_SOURCES}


def get_source(name: str) -> SyntheticSource | FileSource:
    """The registered source ``name``; a ValueError lists the known ones."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; use one of {sorted(SOURCES)}")
    return SOURCES[name]


def make_config(source: SyntheticSource | FileSource, params: Mapping[str, Any]) -> Any:
    """Build the source's config from string or typed overrides, naming unknown or missing keys."""
    fields = {f.name: f for f in dataclasses.fields(source.config_cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for source {source.name!r}; known: {sorted(fields)}"
        )
    missing = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and name not in params
    ]
    if missing:
        flags = ", ".join(f"--{m}" for m in missing)
        raise ValueError(f"source {source.name!r} needs {missing} (on the command line: {flags})")
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
    """Stage: global indices (``batch["id"]``) → staging rows (schema-v2 rows or rejects)."""
    spec = get_source(source)
    assert isinstance(spec, SyntheticSource), f"{source} is not a generated source"
    config = make_config(spec, params)
    names = spec.class_names(config)
    rows = []
    for index in batch["id"].tolist():
        split, local = split_of(int(index), counts)
        image_id = f"{source}-s{seed}-{split}-{local:07d}"
        try:
            sample = spec.sample(config, pools.get(split), sample_rng(seed, split, local))
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
    return staging_table(rows)


def digits_fingerprint(digits: DigitSet) -> str:
    """Content hash of a digit set: part of a dataset's input hash."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(digits.images).tobytes())
    h.update(np.ascontiguousarray(digits.labels).astype(np.int64).tobytes())
    return h.hexdigest()
